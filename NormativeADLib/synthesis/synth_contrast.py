"""Synthetic contrasts from healthy T1 scans: train one model for T1, T1c, T2 and FLAIR without
healthy scans of those contrasts (the idea of SynthSeg, Billot et al. 2023, and of UNA, Liu et al. 2025).

Two steps:
1. tissue_labels(image, brain, priors): each brain voxel of a healthy T1 already on the model grid
   becomes CSF, grey matter or white matter. The MNI152 2009a GM/WM probability maps (shipped with
   the template in the nilearn wheel; the model grid is MNI space, so they only need resampling,
   tissue_priors) give the spatial prior, CSF takes what is left of the brain; a three-class Gaussian
   mixture on the scan's own intensities, fitted by EM with those priors (as in SPM's unified
   segmentation), adapts the classes to the scan: the affine registration leaves the atlas a few
   millimetres off, the intensities put each voxel right.
2. synthesise(labels, rng, contrast): a new image of the same anatomy: a random mean per class, a
   random within-class spread, blur (partial volume), thick slices (resolution), a smooth
   multiplicative bias field and noise, normalised like a real scan on the model grid (percentiles
   (1, 99) of the brain to [0, 1], clipped, zero outside the brain).
   from_intensities(image, labels, rng, contrast): the same, but each voxel's value mapped from the T1's own
   intensity: the middle of each class to its drawn mean, the tails between classes (partial volume: sulci,
   the cortex's rim) between their means, as the scan shows them; hard labels fill the sulci of a 2 mm grid
   with grey matter. The synthetic validation draws its contrasts so (SYNTHETIC_VALIDATION_VERSION 7; 8: the
   PURE_TISSUE band chosen on healthy scans); training draws either (synthetic.from_intensities in a config:
   the share drawn so; synthetic.pure_tissue: the band, UNSTATED_BAND when not stated, training_band).

Class means per contrast (ascending, from darkest to brightest; CONTRAST_ORDER, tested):
    T1, T1c : CSF < GM < WM      (T1c: the same tissue order; enhancement is pathology, not healthy tissue)
    T2      : WM < GM < CSF      (CSF brightest)
    FLAIR   : CSF < WM < GM      (CSF suppressed, darkest)
    None    : each class mean drawn uniformly in [0, 1] independently: any order (SynthSeg's
              contrast-agnostic draw, which makes the model rely on shape rather than on one contrast)
With a contrast, the brightest class's mean is drawn in BRIGHTEST_RANGE, the middle class's as a share
of it and the darkest's as a share of the middle's (CONTRAST_RATIOS): wide ranges around the relative
signal of healthy tissue at 1.5-3 T (T1: grey matter 60-85 % of white; T2: grey matter 30-60 % of CSF,
white 70-90 % of grey; FLAIR: white matter 72-92 % of grey, CSF 10-50 % of white). Earlier versions drew
each rank in fixed bands (0.02-0.3, 0.4-0.6, 0.7-1.0), which made grey and white matter as far apart on
FLAIR and T2 as on T1: a FLAIR lesion then hid among grey matter, and a model or threshold chosen there
learned nothing about real FLAIR (options.SYNTHETIC_VALIDATION_VERSION 2).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.grid import ModelGrid

BACKGROUND, CSF, GM, WM = 0, 1, 2, 3
CLASS_NAMES = {BACKGROUND: "background", CSF: "CSF", GM: "GM", WM: "WM"}
CONTRAST_ORDER = {"T1": (CSF, GM, WM), "T1C": (CSF, GM, WM), "T2": (WM, GM, CSF), "FLAIR": (CSF, WM, GM)}
CONTRASTS = tuple(CONTRAST_ORDER)
BRIGHTEST_RANGE = (0.7, 1.0)  # mean of the brightest class, before normalisation
# per contrast: (middle class / brightest class, darkest class / middle class), each drawn uniformly
CONTRAST_RATIOS = {"T1": ((0.6, 0.85), (0.15, 0.5)), "T1C": ((0.6, 0.85), (0.15, 0.5)),
                   "T2": ((0.3, 0.6), (0.7, 0.9)), "FLAIR": ((0.72, 0.92), (0.1, 0.5))}
# from_intensities: the percentiles of a class's T1 intensities within which a voxel is that tissue alone; the
# tails, where the classes meet, are partial volume. Chosen on healthy scans (tools/choose_pure_tissue.py: 10 IXI
# training subjects, 5 draws per contrast, the band whose draws keep every contrast's class order inside the eroded
# classes most often): 25-75 keeps it in 93 % of draws (FLAIR 80 %; T1c and T2 always), 15-85 in 87 % (FLAIR 60 %),
# 35-65 in 92 %. Synthetic validation version 8; version 7 used 15-85, chosen on the sample case's T1 (an MS
# patient's image, no label read). A training config states its band (synthetic.pure_tissue, training_band).
PURE_TISSUE = (25.0, 75.0)
# the band of a training config that draws from intensities without stating one: such configs were written
# before the band could be stated, and drew version 7's, so their recorded commands draw it again
UNSTATED_BAND = (15.0, 85.0)
BIAS_MAX = 0.3  # the log of the bias field lies within +-BIAS_MAX (a factor 0.74 to 1.35)
_PRIOR_FILES = {GM: "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
                WM: "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}


@dataclass(frozen=True)
class SynthSettings:
    """Ranges the random appearance is drawn from (uniformly), in model intensities and voxels."""

    class_std: tuple[float, float] = (0.01, 0.06)  # within-class spread, before blur
    blur_sigma: tuple[float, float] = (0.0, 1.0)  # voxels: partial volume, scanner resolution
    bias_max: float = BIAS_MAX  # the log bias field's largest magnitude is drawn in [0, bias_max]
    noise_std: tuple[float, float] = (0.0, 0.04)  # additive Gaussian noise, after the bias
    thick_slices: tuple[int, ...] = (1, 1, 1, 2, 3)  # slice thickness in voxels, one drawn (1: none)


# --- tissue classes ---------------------------------------------------------------------------

def prior_paths() -> dict[int, Path]:
    """The MNI152 2009a GM and WM probability maps, beside the T1 template (io.template.template_path)."""
    from ..io.template import template_path

    folder = template_path().parent
    return {tissue: folder / name for tissue, name in _PRIOR_FILES.items()}


@functools.lru_cache(maxsize=2)
def tissue_priors(grid: ModelGrid = ModelGrid()) -> np.ndarray | None:
    """(4, z, y, x) float32 prior probabilities of background, CSF, GM and WM on the model grid, or
    None when the GM/WM maps are not installed. CSF is the template's brain less GM and WM."""
    import SimpleITK as sitk

    from ..io.template import grid_image, template_on_grid

    files = prior_paths()
    if not all(p.is_file() for p in files.values()):
        return None
    reference = grid_image(grid)
    maps = {}
    for tissue, path in files.items():
        image = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
        moved = sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0))
        top = float(sitk.GetArrayViewFromImage(image).max())
        maps[tissue] = np.clip(moved / (255.0 if top > 1.0 else 1.0), 0.0, 1.0)  # nilearn stores them as uint8
    _, template_brain = template_on_grid(grid)
    brain = ndimage.gaussian_filter(sitk.GetArrayFromImage(template_brain).astype(np.float32), 1.0)
    csf = np.clip(brain - maps[GM] - maps[WM], 0.0, 1.0)
    background = np.clip(1.0 - maps[GM] - maps[WM] - csf, 0.0, 1.0)
    return np.stack([background, csf, maps[GM], maps[WM]]).astype(np.float32)


def tissue_labels(image: np.ndarray, brain: np.ndarray, priors: np.ndarray | None = None,
                  iterations: int = 20) -> np.ndarray:
    """uint8 labels (BACKGROUND, CSF, GM, WM) of a healthy T1 in model space (any shape).

    EM of a three-Gaussian mixture over the brain's intensities; with priors ((4, *shape), from
    tissue_priors, for a volume on the model grid or the same slice of it) each voxel's class
    probability is prior x likelihood, without them intensity alone decides (initialised dark CSF,
    middle GM, bright WM, as on T1). Voxels outside the brain are BACKGROUND.
    """
    values = image[brain].astype(np.float64)
    labels = np.zeros(image.shape, np.uint8)
    if values.size < 3:
        return labels
    if priors is None:
        spatial = np.full((values.size, 3), 1.0 / 3.0)
    else:
        spatial = priors[1:, brain].T.astype(np.float64) + 1e-3  # inside the mask, every class is possible
        spatial /= spatial.sum(1, keepdims=True)
    means = np.percentile(values, [10, 45, 80])
    stds = np.full(3, values.std() / 3 + 1e-3)
    weights = np.full(3, 1.0 / 3.0)
    for _ in range(iterations):
        likelihood = np.exp(-0.5 * ((values[:, None] - means) / stds) ** 2) / stds
        # With priors the atlas gives each voxel its class proportions; global mixing weights on top count
        # them twice, and a class that starts small shrinks every round: CSF fell to under 1 % of an IXI
        # brain, the ventricles labelled grey matter (SYNTHETIC_VALIDATION_VERSION 5).
        posterior = (weights if priors is None else 1.0) * spatial * likelihood + 1e-12
        posterior /= posterior.sum(1, keepdims=True)
        mass = posterior.sum(0) + 1e-9
        means = (posterior * values[:, None]).sum(0) / mass
        stds = np.sqrt((posterior * (values[:, None] - means) ** 2).sum(0) / mass) + 1e-3
        weights = mass / mass.sum()
    labels[brain] = posterior.argmax(1).astype(np.uint8) + CSF
    return labels


def labels_for_volume(image: np.ndarray, brain: np.ndarray, grid: ModelGrid = ModelGrid()) -> np.ndarray:
    """tissue_labels of a whole model-space volume (z, y, x) with the MNI priors where installed."""
    priors = tissue_priors(grid)
    if priors is not None and priors.shape[1:] != image.shape:
        priors = None
    return tissue_labels(image, brain, priors)


# --- synthesis --------------------------------------------------------------------------------

def class_means(rng: np.random.Generator, contrast: str | None = None) -> np.ndarray:
    """Mean intensity of each class (indexed by label; background 0): ordered as CONTRAST_ORDER says
    for a contrast, independent uniform draws for None."""
    means = np.zeros(4)
    if contrast is None:
        means[[CSF, GM, WM]] = rng.uniform(0.0, 1.0, 3)
        return means
    order = CONTRAST_ORDER.get(contrast.upper())
    if order is None:
        raise ValueError(f"unknown contrast {contrast!r}; one of {', '.join(CONTRASTS)} or None")
    darkest, middle, brightest = order
    (middle_lo, middle_hi), (dark_lo, dark_hi) = CONTRAST_RATIOS[contrast.upper()]
    means[brightest] = rng.uniform(*BRIGHTEST_RANGE)
    means[middle] = means[brightest] * rng.uniform(middle_lo, middle_hi)
    means[darkest] = means[middle] * rng.uniform(dark_lo, dark_hi)
    return means


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, log_max: float) -> np.ndarray:
    """A smooth multiplicative field in [exp(-log_max), exp(log_max)]: a 4-per-axis random lattice
    upsampled with cubic splines, scaled so that its log's largest magnitude is log_max."""
    coarse = rng.normal(size=(4,) * len(shape))
    field = ndimage.zoom(coarse, [n / 4 for n in shape], order=3, mode="nearest")[tuple(slice(0, n) for n in shape)]
    field = field / (np.abs(field).max() + 1e-9) * log_max
    return np.exp(field).astype(np.float32)


def thick_slices(image: np.ndarray, thickness: int, axis: int) -> np.ndarray:
    """The image as if acquired with slices `thickness` voxels thick along axis: block averages,
    interpolated back linearly."""
    if thickness <= 1:
        return image
    n = image.shape[axis]
    blocks = -(-n // thickness)
    padded = np.concatenate([image, np.take(image, [-1] * (blocks * thickness - n), axis=axis)], axis=axis)
    shape = image.shape[:axis] + (blocks, thickness) + image.shape[axis + 1:]
    coarse = padded.reshape(shape).mean(axis=axis + 1)
    centres = (np.arange(blocks) + 0.5) * thickness - 0.5
    position = np.clip(np.interp(np.arange(n), centres, np.arange(blocks)), 0, blocks - 1)
    lo = np.floor(position).astype(int)
    hi = np.minimum(lo + 1, blocks - 1)
    w = (position - lo).reshape([-1 if a == axis else 1 for a in range(image.ndim)])
    return (np.take(coarse, lo, axis=axis) * (1 - w) + np.take(coarse, hi, axis=axis) * w).astype(np.float32)


def normalise(image: np.ndarray, brain: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0),
              reference: np.ndarray | None = None) -> np.ndarray:
    """As preprocess scales a scan: the brain's percentiles (of `reference`, by default of the image itself)
    to 0 and 1, clipped, zero outside the brain. A scan carrying unclipped synthetic anomalies
    (synthetic.generate's clip=False) is scaled so with its anomalies in it, as a real scan is with its
    lesion; with that scan as reference, its healthy counterpart comes out scaled alike."""
    values = (image if reference is None else reference)[brain]
    if values.size == 0:
        return np.zeros_like(image, dtype=np.float32)
    lo, hi = np.percentile(values, percentiles)
    scaled = np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return np.where(brain, scaled, 0.0).astype(np.float32)


def synthesise(labels: np.ndarray, rng: np.random.Generator, contrast: str | None = None,
               settings: SynthSettings = SynthSettings()) -> np.ndarray:
    """A synthetic scan (float32 in [0, 1], zero outside the brain) of the anatomy `labels` (2D slice
    or 3D volume of BACKGROUND/CSF/GM/WM) in `contrast` (T1, T1C, T2, FLAIR; None: random order)."""
    brain = labels > BACKGROUND
    means = class_means(rng, contrast)
    stds = np.zeros(4)
    stds[[CSF, GM, WM]] = rng.uniform(*settings.class_std, 3)
    image = (means[labels] + stds[labels] * rng.normal(size=labels.shape)).astype(np.float32)
    return _acquired(image, brain, rng, settings)


def from_intensities(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, contrast: str | None = None,
                     settings: SynthSettings = SynthSettings(),
                     pure_tissue: tuple[float, float] = PURE_TISSUE) -> np.ndarray:
    """A synthetic scan of `contrast` drawn from a healthy T1's own intensities rather than from its hard labels.
    The middle of each class's intensities in the T1 (its pure_tissue percentiles) is that tissue and goes to
    the class's drawn mean (class_means); the tails, where classes meet, are partial volume: an intensity between
    two classes' middles goes linearly between their means; beyond the darkest or brightest, that class's mean.
    Then a within-class spread, resolution, bias field and noise as synthesise. A voxel partly CSF and partly grey
    matter keeps that share, so the sulci, the ventricles' rim and the cortex's partial volume look as they do
    in a scan at this resolution, where hard labels give every voxel one class (sulci became grey matter, the
    cortex a smooth band). Labels as tissue_labels gives them for the image (any shape); falls back to
    synthesise where a class holds no voxel."""
    brain = labels > BACKGROUND
    classes = (CSF, GM, WM)
    if any(not (labels == c).any() for c in classes):
        return synthesise(labels, rng, contrast, settings)
    means = class_means(rng, contrast)
    stds = np.zeros(4)
    stds[[CSF, GM, WM]] = rng.uniform(*settings.class_std, 3)
    ranges = sorted((tuple(np.percentile(image[labels == c], pure_tissue)), c) for c in classes)
    edges, values = [], []
    for (lo, hi), c in ranges:
        lo = max(lo, edges[-1]) if edges else lo  # classes that overlap in the T1 meet at the earlier one's end
        edges += [lo, max(hi, lo)]
        values += [means[c]] * 2
    mapped = np.interp(image, edges, values) + stds[labels] * rng.normal(size=labels.shape)
    return _acquired(np.where(brain, mapped, 0.0).astype(np.float32), brain, rng, settings)


def training_band(options: dict) -> tuple[float, float]:
    """The pure-tissue band a training config's `synthetic` options draw from_intensities with: its stated
    `pure_tissue` (two percentiles, 0 <= low <= high <= 100), else UNSTATED_BAND (what such configs drew)."""
    band = options.get("pure_tissue", UNSTATED_BAND)
    try:
        low, high = (float(v) for v in band)
    except (TypeError, ValueError):
        raise ValueError(f"synthetic.pure_tissue must be two percentiles [low, high], not {band!r}") from None
    if not 0.0 <= low <= high <= 100.0:
        raise ValueError(f"synthetic.pure_tissue {band!r}: need 0 <= low <= high <= 100 (version 8 draws [25, 75])")
    return low, high


def _acquired(image: np.ndarray, brain: np.ndarray, rng: np.random.Generator, settings: SynthSettings) -> np.ndarray:
    """A synthetic image as a scanner gives it: thick slices, blur, bias field, noise, then normalised."""
    image = thick_slices(image, int(rng.choice(settings.thick_slices)), int(rng.integers(image.ndim)))
    sigma = rng.uniform(*settings.blur_sigma)
    if sigma > 0.05:
        image = ndimage.gaussian_filter(image, sigma)
    image = image * bias_field(image.shape, rng, rng.uniform(0.0, settings.bias_max))
    image = image + rng.uniform(*settings.noise_std) * rng.normal(size=image.shape).astype(np.float32)
    return normalise(image, brain)
