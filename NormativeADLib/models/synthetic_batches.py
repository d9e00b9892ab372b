"""Training slices with synthetic contrasts and anomalies, shared by the families that learn from them.

A training slice is (image, brain, tissue labels), stacked as channels (training_volumes). A batch
draw redraws a slice in a synthetic contrast (synth_contrast.py) and then gives it synthetic
anomalies (synthetic.py): SADM learns to segment them, the denoising autoencoder to remove them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..synthesis import synth_contrast, synthetic
from ..core.errors import ModelError

# channels of a training slice (training_volumes): the image, its brain mask, its tissue labels
IMAGE, BRAIN, LABELS = 0, 1, 2
SYNTH_CONTRASTS = ("T1", "T1C", "T2", "FLAIR", None)  # None: SynthSeg's random tissue order
RANDOM_ORDER = "random"  # how a config names None in `synthetic.contrasts`


def synthetic_contrasts(options: dict) -> tuple[str | None, ...]:
    """The contrasts a training slice may be redrawn in: the config's `synthetic.contrasts` (names of
    SYNTH_CONTRASTS, "random" for a random tissue order), all of them by default."""
    names = options.get("contrasts")
    if not names:
        return SYNTH_CONTRASTS
    known = {c: c for c in SYNTH_CONTRASTS if c} | {RANDOM_ORDER.upper(): None}
    unknown = [n for n in names if str(n).upper() not in known]
    if unknown:
        raise ModelError(f"synthetic contrasts {unknown}: each must be one of "
                         f"{', '.join(c for c in SYNTH_CONTRASTS if c)} or {RANDOM_ORDER}.")
    return tuple(known[str(n).upper()] for n in names)


def anomaly_kinds(options: dict) -> dict[str, float]:
    """How often each synthetic anomaly kind is drawn: the config's `synthetic.kinds` weights, or the
    generator module's defaults."""
    try:
        return synthetic.kind_weights(options.get("kinds"))
    except ValueError as error:
        raise ModelError(f"synthetic.kinds: {error}.") from None


def training_volumes(images, brains, options: dict) -> list[np.ndarray]:
    """(image, brain, tissue labels) per scan, (3, z, y, x): what draw() reads. Labels are computed
    only where synthetic contrasts are asked for (they take a second a scan). With a `context` of k
    slices, each of the three holds the 2k + 1 slices round each slice, (3 (2k + 1), z, y, x)."""
    # a bad config fails before hours of training
    synthetic_contrasts(options), anomaly_kinds(options), synth_contrast.training_band(options)
    synth = float(options.get("contrast_prob", 0.0)) > 0
    k = context_of(options)
    return [np.concatenate([neighbours(a, k) for a in (
        img, b.astype(np.float32),
        synth_contrast.labels_for_volume(img, b).astype(np.float32) if synth else np.zeros_like(img))])
        for img, b in zip(images, brains)]


def context_of(options: dict) -> int:
    """The slices each side of a training slice that come with it (options' `context`, from the network)."""
    return int(options.get("context", 0))


def slab_indices(index: np.ndarray, k: int, depth: int) -> np.ndarray:
    """(len(index), 2k + 1): the slices -k..k round each of index, the first or last slice repeated past the
    volume's ends (depth slices). Training (neighbours) and scoring (restore.score_volume) read slabs so."""
    return np.clip(np.asarray(index)[:, None] + np.arange(-k, k + 1), 0, depth - 1)


def neighbours(volume: np.ndarray, k: int) -> np.ndarray:
    """(2k + 1, z, y, x): the volume shifted by -k..k slices, so channel j of slice z is slice z + j - k."""
    depth = volume.shape[0]
    return np.moveaxis(volume[slab_indices(np.arange(depth), k, depth)], 1, 0)


@dataclass(frozen=True)
class Draw:
    """A batch (B, 1, H, W) each, (B, 2k + 1, H, W) with a context of k slices: the healthy slices
    (redrawn), with anomalies, brains, anomaly masks."""

    clean: torch.Tensor
    anomalous: torch.Tensor
    brain: torch.Tensor
    mask: torch.Tensor


def draw(slices: torch.Tensor, rng: np.random.Generator, options: dict) -> Draw:
    """Each slice of (B, 3, H, W) ((B, 3 (2k + 1), H, W) with a context of k) redrawn in a random
    contrast with probability contrast_prob (from the slice's own intensities with probability
    `from_intensities`, synth_contrast.from_intensities with its `pure_tissue` band, else from its hard labels),
    then given synthetic anomalies with probability anomaly_prob (1 to max_anomalies of them, as MS lesions
    come several to a slice; the other slices stay healthy, their mask empty). A foreign patch comes from
    another slice. Contrasts and kinds are drawn as the options' `contrasts` and `kinds` say. With `renormalise`, anomalies are planted unclipped and the slice
    scaled as a scan carrying them would be (scaled_as_scanned), as the synthetic validation does (version 7).
    With a context of k slices (training_volumes), each slab of 2k + 1 slices is redrawn and given
    anomalies as one 3D volume, as the synthetic validation draws them in whole scans, but for where a
    centre may fall: a slab too thin for synthetic.py's 2-voxel inset from the brain's edge (k = 1) takes
    its centres anywhere in the slab's brain, in a neighbouring slice or on the rim too (the shipped 2.5D
    models were trained so)."""
    contrasts, kinds = synthetic_contrasts(options), anomaly_kinds(options)
    rescale = bool(options.get("renormalise", False))
    contrast_prob = float(options.get("contrast_prob", 0.0))
    intensity_prob = float(options.get("from_intensities", 0.0))
    pure_tissue = synth_contrast.training_band(options)
    anomaly_prob = float(options.get("anomaly_prob", 0.7))
    max_anomalies = int(options.get("max_anomalies", 1))
    n = 2 * context_of(options) + 1
    clean, anomalous, brains, masks = [], [], [], []
    arrays = slices.numpy().reshape(len(slices), 3, n, *slices.shape[2:])  # channel groups IMAGE, BRAIN, LABELS
    if n == 1:
        arrays = arrays[:, :, 0]
    for i, s in enumerate(arrays):
        image, brain, labels = s[IMAGE], s[BRAIN] > 0, s[LABELS].astype(np.uint8)
        contrast = "T1"  # the training scans are T1 until redrawn (None after: a random tissue order)
        if rng.random() < contrast_prob:
            contrast = contrasts[rng.integers(len(contrasts))]
            if intensity_prob > 0 and rng.random() < intensity_prob:  # no draw without: older configs reproduce
                image = synth_contrast.from_intensities(image, labels, rng, contrast, pure_tissue=pure_tissue)
            else:
                image = synth_contrast.synthesise(labels, rng, contrast)
        healthy, mask = image, np.zeros(brain.shape, bool)
        if rng.random() < anomaly_prob and brain.sum() >= synthetic.MIN_VOXELS:
            other = arrays[(i + 1) % len(arrays)]
            for _ in range(rng.integers(1, max_anomalies + 1)):
                image, added, _ = synthetic.sample(image, brain, rng, (other[IMAGE], other[BRAIN] > 0), kinds, contrast,
                                                   clip=not rescale)
                mask |= added
            if rescale:
                image, healthy = scaled_as_scanned(image, healthy, brain, options.get("percentiles", (1.0, 99.0)))
        clean.append(healthy)
        anomalous.append(image)
        brains.append(brain)
        masks.append(mask)
    as_tensor = lambda a: torch.from_numpy(np.stack(a).reshape(len(a), n, *a[0].shape[-2:]).astype(np.float32))  # noqa: E731
    return Draw(as_tensor(clean), as_tensor(anomalous), as_tensor(brains), as_tensor(masks))


def scaled_as_scanned(anomalous: np.ndarray, healthy: np.ndarray, brain: np.ndarray,
                      percentiles: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A training slice (or slab) carrying unclipped anomalies, and its healthy twin, scaled as preprocessing
    would scale a scan carrying them: the one map that takes the anomalous slice's brain percentiles to where
    the healthy slice's lie, clipped to [0, 1]. A healthy slice is unchanged; a bright tumour that moves the top
    percentile darkens the healthy tissue round it, as it does in a real scan, and the healthy twin (a
    restorer's target) alike, so that only the anomaly tells them apart. The slice stands for the volume, so
    the shift is that of a scan whose every slice carried the anomaly: larger than a whole scan's for a small
    lesion, which the segmenter then meets more often than it will, rather than never."""
    inside = brain.astype(bool)
    if not inside.any():
        return np.clip(anomalous, 0.0, 1.0), healthy
    lo_h, hi_h = np.percentile(healthy[inside], percentiles)
    lo_a, hi_a = np.percentile(anomalous[inside], percentiles)
    gain = (hi_h - lo_h) / max(hi_a - lo_a, 1e-6)
    scaled = lambda image: np.where(inside, np.clip(lo_h + (image - lo_a) * gain, 0.0, 1.0), 0.0).astype(np.float32)  # noqa: E731
    return scaled(anomalous), scaled(healthy)
