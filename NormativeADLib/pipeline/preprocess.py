"""From a native scan to the model's grid and back.

Steps: blur to the model's resolution, brain mask (given, the foreground of a skull-stripped scan, or a crude extraction of a
whole-head scan), affine registration of the brain onto the MNI152 template, for models trained that way
N4 bias-field correction inside the brain, percentile intensity scaling inside the brain, resampling onto
the model grid. The transform is kept so that every
output returns to the scan's own grid.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.grid import ModelGrid
from ..io.template import grid_image, template_on_grid

# Volumes of a brain: a skull-stripped scan's foreground is below this, a whole head above.
_MAX_BRAIN_ML = 2500.0
_MIN_BRAIN_ML = 300.0
_MAX_HEAD_SHARE = 0.85  # of the field of view: a head leaves air in the corners (a sphere fills 52 % of its box)


@dataclass
class Prepared:
    """A scan in model space, with what is needed to go back."""

    image: np.ndarray  # (z, y, x) float32 in [0, 1], zero outside the brain
    brain: np.ndarray  # (z, y, x) bool, brain mask in model space
    native: sitk.Image  # the scan as read (geometry reference for outputs)
    native_brain: sitk.Image  # uint8 brain mask on the native grid
    transform: sitk.Transform  # maps model-space points to native points
    grid: ModelGrid
    intensity_range: tuple[float, float]  # native values mapped to 0 and 1
    mask_source: str  # "given", "skull-stripped foreground" or "template"


def _voxel_ml(image: sitk.Image) -> float:
    return float(np.prod(image.GetSpacing())) / 1000.0


def _largest_component(mask: sitk.Image) -> sitk.Image:
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    return sitk.Cast(labels == 1, sitk.sitkUInt8)


def _radius_voxels(image: sitk.Image, mm: float) -> list[int]:
    return [max(1, int(round(mm / s))) for s in image.GetSpacing()]


def skull_stripped_foreground(scan: sitk.Image) -> sitk.Image | None:
    """The brain of a skull-stripped scan (everything not at the constant background), else None."""
    array = sitk.GetArrayViewFromImage(scan)
    values, counts = np.unique(array[:: 4, :: 4, :: 4], return_counts=True)
    background = values[counts.argmax()]
    if counts.max() / counts.sum() < 0.4:
        return None
    foreground = sitk.Cast(scan != float(background), sitk.sitkUInt8)
    foreground = sitk.BinaryFillhole(_largest_component(foreground))
    volume = float(sitk.GetArrayViewFromImage(foreground).sum()) * _voxel_ml(scan)
    return foreground if _MIN_BRAIN_ML < volume < _MAX_BRAIN_ML else None


def head_mask(scan: sitk.Image) -> sitk.Image:
    """The head (everything but air), holes filled slice by slice: Otsu on log intensities.

    A plain Otsu splits a whole-head T1 with bright fat inside the grey matter (clinical T1,
    tcga-fg-6692); on log intensities the split is air against tissue in every contrast.
    """
    shifted = sitk.Cast(scan, sitk.sitkFloat32) - float(np.min(sitk.GetArrayViewFromImage(scan)))
    tissue = sitk.OtsuThreshold(sitk.Log(shifted + 1.0), 0, 1)
    tissue = _largest_component(sitk.BinaryMorphologicalClosing(tissue, _radius_voxels(scan, 3.0)))
    return sitk.BinaryFillhole(_fill_slices(tissue))


def _fill_slices(mask: sitk.Image) -> sitk.Image:
    """Fill holes in each axial slice (3D filling leaves holes open to the neck or the slab's edge)."""
    array = sitk.GetArrayFromImage(mask)
    for z in range(array.shape[0]):
        array[z] = sitk.GetArrayViewFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(array[z])))
    filled = sitk.GetImageFromArray(array)
    filled.CopyInformation(mask)
    return filled


def crude_brain_mask(scan: sitk.Image) -> sitk.Image:
    """Rough brain of a whole-head scan, the start of registration.

    First: Otsu tissue, eroded 6 mm to cut it from the scalp, largest part, dilated back, filled
    (tight on IXI's T1). When fat pulls Otsu into the grey matter that core falls apart (265 mL on
    a clinical T1): then the head's interior deeper than 10 mm, which holds the brain and a little
    skull whatever the contrast.
    """
    head = sitk.OtsuThreshold(scan, 0, 1)
    core = _largest_component(sitk.BinaryErode(head, _radius_voxels(scan, 6.0)))
    core = sitk.BinaryFillhole(sitk.BinaryDilate(core, _radius_voxels(scan, 6.0)))
    if float(sitk.GetArrayViewFromImage(core).sum()) * _voxel_ml(scan) >= _MIN_BRAIN_ML:
        return core
    head = head_mask(scan)
    if sitk.GetArrayViewFromImage(head).mean() > _MAX_HEAD_SHARE:  # no air around it: noise, not a head
        return core
    depth = sitk.SignedMaurerDistanceMap(head, insideIsPositive=True, squaredDistance=False, useImageSpacing=True)
    return _largest_component(sitk.Cast(depth > 10.0, sitk.sitkUInt8))


def register_to_template(brain: sitk.Image, grid: ModelGrid) -> sitk.Transform:
    """Affine transform mapping template (model-space) points to points of the skull-stripped scan."""
    fixed, _ = template_on_grid(grid)
    moving = at_most_resolution(sitk.Cast(brain, sitk.sitkFloat32), grid.spacing_mm)
    similarity = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Similarity3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    similarity = sitk.Similarity3DTransform(similarity)
    _run_registration(fixed, moving, similarity, SIMILARITY_SHRINK)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(similarity.GetCenter())
    affine.SetMatrix(similarity.GetMatrix())
    affine.SetTranslation(similarity.GetTranslation())
    _run_registration(fixed, moving, affine, AFFINE_SHRINK)
    return affine


def at_most_resolution(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """The image resampled to spacing_mm along axes finer than that (same origin, direction, extent).

    Registration onto the 2 mm template gains nothing from finer voxels of a scan already blurred to
    2 mm (match_resolution) and is 2.6x faster without them on a 1 mm scan; 2 mm scans pass unchanged.
    """
    spacing = np.asarray(image.GetSpacing())
    if (spacing >= spacing_mm).all():
        return image
    coarse = np.maximum(spacing, spacing_mm)
    size = np.ceil(np.asarray(image.GetSize()) * spacing / coarse).astype(int)
    return sitk.Resample(image, [int(n) for n in size], sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                         coarse.tolist(), image.GetDirection(), 0.0, image.GetPixelID())


# Both stages run a 4-2-1 pyramid with 25 % of the voxels sampled. Measured faster settings
# (Testing/bench/registration_settings.py, docs/preprocessing.md): stopping the similarity stage at 2x
# shrink (20-25 % faster) or sampling 10 % (30 % faster) keep every other dev case within what a change
# of sampling seed moves it, but at one seed each moves the clinical T1c (5.5 mm slices) 2.3 mm with a
# worse full-sample MI, which the current settings reach at neither seed. Kept as they are.
SIMILARITY_SHRINK = (4, 2, 1)
AFFINE_SHRINK = (4, 2, 1)
REGISTRATION_SAMPLING = 0.25  # share of the template's voxels the metric samples
REGISTRATION_SEED = 7  # the samples are drawn the same way every run
# Threads of the registration (0: ITK's default, every core). ITK's Mattes MI sums its samples over threads
# in no fixed order, so on several threads a scan registers a little differently each run, seed or not; on
# one thread the same way every run, for 1.5-2 times the preparation time on this 2-core CPU
# (Testing/bench/registration_threads.py, docs/preprocessing.md). A case's result barely moves (the sample
# FLAIR's flagged volume and Dice were the same to the last digit over three runs), so a run takes every
# core; the training cache, whose brain masks place every synthetic anomaly, is prepared on one thread
# (reproducible_registration), so that a cache prepared again holds the same scans.
REGISTRATION_THREADS = 0
_SMOOTHING_MM = {4: 2, 2: 1, 1: 0}  # Gaussian sigma (mm, as ITK takes it) per shrink factor


@contextlib.contextmanager
def reproducible_registration():
    """Within it, a scan registers on one thread: the same way every run (REGISTRATION_THREADS)."""
    global REGISTRATION_THREADS
    kept, REGISTRATION_THREADS = REGISTRATION_THREADS, 1
    try:
        yield
    finally:
        REGISTRATION_THREADS = kept


def _run_registration(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform,
                      shrink: tuple[int, ...]) -> None:
    """Optimise transform in place with Mattes MI over a pyramid of the given shrink factors."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(REGISTRATION_SAMPLING, seed=REGISTRATION_SEED)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=150, relaxationFactor=0.6
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel([_SMOOTHING_MM[f] for f in shrink])
    reg.SetInitialTransform(transform, inPlace=True)
    with _itk_threads(REGISTRATION_THREADS):
        reg.Execute(fixed, moving)


@contextlib.contextmanager
def _itk_threads(threads: int):
    """ITK filters started within it run on `threads` threads (0: as they are). The registration's metric
    and optimiser take ITK's global default, not the method's SetNumberOfThreads."""
    if not threads:
        yield
        return
    kept = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(kept)


def scale_intensity(scan: sitk.Image, brain: sitk.Image, percentiles: tuple[float, float]) -> tuple[float, float]:
    """Native values that map to 0 and 1: the given percentiles of the brain's voxels."""
    values = sitk.GetArrayViewFromImage(scan)[sitk.GetArrayViewFromImage(brain) > 0]
    if values.size == 0:
        raise InputError("no brain found in the scan (the brain mask is empty); is this a brain MRI?")
    lo, hi = np.percentile(values, percentiles)
    if not hi > lo:
        raise InputError("the brain region of the scan has no contrast; check the scan and its mask.")
    return float(lo), float(hi)


def _apply_scaling(scan: sitk.Image, brain: sitk.Image, intensity_range: tuple[float, float]) -> sitk.Image:
    lo, hi = intensity_range
    scaled = sitk.Clamp((sitk.Cast(scan, sitk.sitkFloat32) - lo) / (hi - lo), sitk.sitkFloat32, 0.0, 1.0)
    return sitk.Mask(scaled, brain)


def normalised_brain(scan: sitk.Image, brain: sitk.Image, percentiles: tuple[float, float]) -> sitk.Image:
    """The scan scaled to [0, 1] by brain percentiles and zeroed outside the brain (registration input)."""
    return _apply_scaling(scan, brain, scale_intensity(scan, brain, percentiles))


def brain_mask(scan: sitk.Image, smoothed: sitk.Image, grid: ModelGrid, mask: sitk.Image | None,
               percentiles: tuple[float, float], transform: sitk.Transform | None = None):
    """(native brain mask, transform model->native, source) for a scan and an optional given mask.

    Masks are found on the scan as given (its background is exactly constant only there);
    registration sees the percentile-scaled, resolution-matched brain, so z-scored or negative
    intensities (BraTS) register like any other scan. A given transform (model -> native points,
    e.g. from an earlier run on the same scan) replaces the registration.
    """
    def register(brain: sitk.Image) -> sitk.Transform:
        return transform or register_to_template(normalised_brain(smoothed, brain, percentiles), grid)

    if mask is not None:
        if not sitk.GetArrayViewFromImage(mask).any():
            raise InputError("the given brain mask is empty; give a mask of the brain or none.")
        brain, source = mask, "given"
    else:
        brain, source = skull_stripped_foreground(scan), "skull-stripped foreground"
    if brain is not None:
        return brain, register(brain), source
    rough = crude_brain_mask(scan)
    rough_ml = float(sitk.GetArrayViewFromImage(rough).sum()) * _voxel_ml(scan)
    if rough_ml < _MIN_BRAIN_ML:
        raise InputError(f"no brain found in the scan (its largest head-like region holds {rough_ml:.0f} mL); "
                         "is this a brain MRI? Give a brain mask with --mask if it is.")
    transform = register(rough)
    _, template_brain = template_on_grid(grid)
    warped = sitk.Resample(template_brain, scan, transform.GetInverse(), sitk.sitkNearestNeighbor, 0)
    head = sitk.OtsuThreshold(scan, 0, 1)
    return sitk.Cast(warped * head, sitk.sitkUInt8), transform, "template"


def match_resolution(scan: sitk.Image, spacing_mm: float) -> sitk.Image:
    """Blur axes finer than the model grid to its resolution (Gaussian FWHM = sqrt(target^2 - native^2)).

    Without it a 1 mm scan resampled to 2 mm is sharper than the 2 mm training scans, and the
    whole brain lights up in the residual (MSLUB T1: 32 % of the brain above fpr5 without, 5 % with).
    """
    sigmas = [max(0.0, spacing_mm ** 2 - s ** 2) ** 0.5 / 2.355 for s in scan.GetSpacing()]
    if max(sigmas) == 0:
        return scan
    if min(sigmas) > 0:
        return sitk.SmoothingRecursiveGaussian(sitk.Cast(scan, sitk.sitkFloat32), sigmas)
    # thick slices (5.5 mm clinical scans): blur only the finer axes (ITK refuses a sigma of 0)
    smoothed = sitk.Cast(scan, sitk.sitkFloat32)
    for axis, sigma in enumerate(sigmas):
        if sigma > 0:
            smoothed = sitk.RecursiveGaussian(smoothed, sigma, False, sitk.RecursiveGaussianImageFilter.ZeroOrder, axis)
    return smoothed


# Registration QC (docs/preprocessing.md). Measured share of the template brain on the scan's brain:
# good registrations 0.996-1.000 (IXI, MSLUB, BraTS, tcga-fg-6692 in 4 contrasts); shifted 15 mm 0.86-0.95
# on skull-stripped and clinical slabs, 0.99 on IXI (its face and neck are in view); shifted 25 mm 0.72-0.96.
HEAD_MARGIN_MM = 8.0  # scalp and skull: a whole head eroded this much is where a brain can lie
BRAIN_MARGIN_MM = 2.0  # a skull-stripped or given mask dilated this much
QC_MIN_OVERLAP = 0.93


def registration_qc(prepared: "Prepared") -> float:
    """Share of the registered template brain that lies on the scan's brain (the scan's field of view only).

    The scan's brain is its mask or skull-stripped foreground dilated BRAIN_MARGIN_MM, or, for a
    whole-head scan, its head eroded HEAD_MARGIN_MM (the scalp and skull). A registration that is off by a centimetre or more puts
    the template's brain over air or scalp; a thin clinical slab only counts where it has slices.
    """
    scan = prepared.native
    if prepared.mask_source == "template":
        support = sitk.BinaryErode(head_mask(scan), _radius_voxels(scan, HEAD_MARGIN_MM))
    else:
        support = sitk.BinaryDilate(sitk.Cast(prepared.native_brain, sitk.sitkUInt8), _radius_voxels(scan, BRAIN_MARGIN_MM))
    field = sitk.Image(scan.GetSize(), sitk.sitkUInt8) + 1
    field.CopyInformation(scan)
    ref = grid_image(prepared.grid)

    def in_model(mask: sitk.Image) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.Resample(mask, ref, prepared.transform, sitk.sitkNearestNeighbor, 0)) > 0

    _, template_brain = template_on_grid(prepared.grid)
    brain = sitk.GetArrayViewFromImage(template_brain) > 0
    seen = brain & in_model(field)
    if seen.sum() == 0:
        return 0.0
    return float((seen & in_model(support)).sum() / seen.sum())


def check_registration(prepared: "Prepared") -> float:
    """registration_qc(), or an InputError saying what to try when the registration missed the brain."""
    overlap = registration_qc(prepared)
    if overlap < QC_MIN_OVERLAP:
        raise InputError(
            f"registration to the MNI152 template failed its check: only {overlap:.0%} of the template's brain lies on "
            f"the scan's brain (at least {QC_MIN_OVERLAP:.0%} expected). Give a brain mask with --mask "
            "(e.g. from HD-BET or SynthStrip), or a transform.tfm that fits this scan with --transform; "
            "check that the file is a brain MRI of one subject.")
    return overlap


# N4 (Tustison et al. 2010, SimpleITK) fits the field on a copy at this spacing and divides the scan by it
# at full resolution: 1.4-1.9 s more a preparation of an IXI T1 here, 24-30 s unshrunk, for the same
# flattening (docs/preprocessing.md).
N4_SPACING_MM = 4.0
N4_ITERATIONS = (50, 50, 50, 50)  # per fitting level, ITK's default


def correct_bias_field(scan: sitk.Image, brain: sitk.Image) -> sitk.Image:
    """The scan divided by the smooth multiplicative field N4 fits inside the brain.

    N4 models positive intensities; a scan with values at or below zero in its brain was already
    normalised (BraTS z-scores, which are bias-corrected before) and is returned unchanged."""
    image = sitk.Cast(scan, sitk.sitkFloat32)
    inside = sitk.GetArrayViewFromImage(image)[sitk.GetArrayViewFromImage(brain) > 0]
    if inside.size == 0 or inside.min() <= 0:
        return image
    shrink = [max(1, int(round(N4_SPACING_MM / s))) for s in image.GetSpacing()]
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(N4_ITERATIONS))
    corrector.Execute(sitk.Shrink(image, shrink), sitk.Shrink(sitk.Cast(brain, sitk.sitkUInt8), shrink))
    return image / sitk.Exp(corrector.GetLogBiasFieldAsImage(image))


def prepare(scan: sitk.Image, grid: ModelGrid, mask: sitk.Image | None = None,
            percentiles: tuple[float, float] = (1.0, 99.0), transform: sitk.Transform | None = None,
            bias_correction: bool = False) -> Prepared:
    """Bring a scan into model space (see the module docstring); `native` keeps the scan as given.
    bias_correction: N4 inside the brain before scaling (the card says whether its model was trained so)."""
    smoothed = match_resolution(scan, grid.spacing_mm)
    native_brain, transform, source = brain_mask(scan, smoothed, grid, mask, percentiles, transform)
    volume = float(sitk.GetArrayViewFromImage(native_brain).sum()) * _voxel_ml(scan)
    if volume < _MIN_BRAIN_ML:
        raise InputError(f"brain mask holds only {volume:.0f} mL; is this a brain MRI (or the right mask)?")
    if bias_correction:  # after registration, so the brain mask and transform are those of the scan as given
        smoothed = correct_bias_field(smoothed, native_brain)
    # Percentiles over the template's brain region, as for the training scans (whose masks are
    # template masks): a skull-stripped scan's own mask holds a different share of CSF and rim,
    # which shifts its scaling (MSLUB T1: 20 % of the brain above fpr5 that way, 5 % this way).
    _, template_brain = template_on_grid(grid)
    template_native = sitk.Resample(template_brain, scan, transform.GetInverse(), sitk.sitkNearestNeighbor, 0)
    scaling_region = sitk.And(native_brain, sitk.Cast(template_native, native_brain.GetPixelID()))
    if not sitk.GetArrayViewFromImage(scaling_region).any():
        scaling_region = native_brain
    intensity_range = scale_intensity(smoothed, scaling_region, percentiles)
    scaled = _apply_scaling(smoothed, native_brain, intensity_range)
    ref = grid_image(grid)
    image = sitk.GetArrayFromImage(sitk.Resample(scaled, ref, transform, sitk.sitkLinear, 0.0))
    brain = sitk.GetArrayFromImage(sitk.Resample(native_brain, ref, transform, sitk.sitkNearestNeighbor, 0)) > 0
    image = np.where(brain, image, 0.0).astype(np.float32)
    return Prepared(image, brain, scan, native_brain, transform, grid, intensity_range, source)


def to_native(array: np.ndarray, prepared: Prepared, interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """Resample a model-space array (z, y, x) onto the scan's own grid with the kept transform."""
    model_image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    model_image.CopyInformation(grid_image(prepared.grid))
    inverse = prepared.transform.GetInverse()
    return sitk.Resample(model_image, prepared.native, inverse, interpolator, 0.0, sitk.sitkFloat32)


def to_model(mask: sitk.Image, prepared: Prepared) -> np.ndarray:
    """A native-grid mask (reference lesion) in model space (z, y, x) bool, nearest neighbour."""
    moved = sitk.Resample(mask, grid_image(prepared.grid), prepared.transform, sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(moved) > 0
