"""From a restoration to an anomaly score map, thresholds and a segmentation.

score = median3D(|x - x^| inside the eroded brain)  (cDDPM post-processing, model space)
segmentation = score > threshold, minus connected components smaller than a volume in mL.

Thresholds come from one of three sources, and every result says which:
healthy calibration (voxel FPR on healthy scans, stored in the card), a Dice search on labelled
validation cases, or a manual value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .card import PostProcess
from .options import FPR_TARGETS

# Top fraction of brain voxels whose mean score is a case's single anomaly score.
CASE_SCORE_TOP_FRACTION = 0.01


def eroded_brain(brain: np.ndarray, iterations: int) -> np.ndarray:
    """Brain mask eroded in-plane with a cross (2D per slice), as the papers do at 96 px."""
    if iterations <= 0:
        return brain.astype(bool)
    cross = np.zeros((3, 3, 3), bool)
    cross[1] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_erosion(brain, structure=cross, iterations=iterations)


def score_map(image: np.ndarray, restored: np.ndarray, brain: np.ndarray, post: PostProcess) -> np.ndarray:
    """Post-processed residual (z, y, x): zero outside the eroded brain, 3D median filtered."""
    residual = np.abs(image - restored) * eroded_brain(brain, post.erode_iterations)
    if post.normalise == "robust_sd":
        residual = residual / robust_sd(image[brain])
    if post.median_size > 1:
        residual = ndimage.median_filter(residual, size=post.median_size)
    return residual.astype(np.float32)


def robust_sd(values: np.ndarray) -> float:
    """1.4826 x the median absolute deviation: the standard deviation of a normal core, blind to outliers."""
    if values.size == 0:
        return 1.0
    mad = float(np.median(np.abs(values - np.median(values))))
    return 1.4826 * mad if mad > 0 else 1.0


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """3D connected components with full (26-) connectivity."""
    return ndimage.label(mask, structure=np.ones((3, 3, 3), bool))


def segment(score: np.ndarray, threshold: float, spacing_mm: Sequence[float],
            min_component_ml: float) -> np.ndarray:
    """Binary segmentation: score above threshold, components of at most min_component_ml dropped.

    Works on any grid (spacing_mm in x, y, z order, as SimpleITK and Slicer give it).
    """
    mask = score > threshold
    if min_component_ml <= 0 or not mask.any():
        return mask
    labels, n = label_components(mask)
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    sizes_ml = np.bincount(labels.ravel(), minlength=n + 1) * voxel_ml
    keep = sizes_ml > min_component_ml
    keep[0] = False
    return keep[labels]


def component_volumes_ml(mask: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """Volumes of the mask's connected components, largest first."""
    labels, n = label_components(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:] * float(np.prod(spacing_mm)) / 1000.0
    return np.sort(sizes)[::-1]


def case_score(score: np.ndarray, brain: np.ndarray) -> float:
    """One number per case: mean of the top 1 % of scores inside the brain."""
    values = np.sort(score[brain])
    k = max(1, int(len(values) * CASE_SCORE_TOP_FRACTION))
    return float(values[-k:].mean())


def healthy_percentile(value: float, healthy_scores: Sequence[float]) -> float | None:
    """Percentage of healthy calibration cases whose case score is at most value."""
    if not len(healthy_scores):
        return None
    return float(100.0 * np.mean(np.asarray(healthy_scores) <= value))


def mean_fpr(threshold: float, scores: Sequence[np.ndarray], brains: Sequence[np.ndarray]) -> float:
    """Mean over healthy scans of the fraction of brain voxels above threshold."""
    return float(np.mean([(s[b] > threshold).mean() for s, b in zip(scores, brains)]))


def calibrate_fpr(scores: Sequence[np.ndarray], brains: Sequence[np.ndarray],
                  targets: dict[str, float] = FPR_TARGETS) -> dict[str, float]:
    """Smallest threshold whose mean healthy-voxel FPR is at most each target ([B25] protocol).

    Mean FPR falls monotonically with the threshold, so a bisection over the score range finds it.
    Where healthy voxels above 0 are already fewer than the target (AutoDDPM scores only inside its
    inpainting mask), the threshold is 0: every nonzero score is flagged, and the FPR reached is lower.
    """
    top = float(max(s[b].max() for s, b in zip(scores, brains)))
    at_zero = mean_fpr(0.0, scores, brains)
    thresholds = {}
    for name, target in targets.items():
        if at_zero <= target:
            thresholds[name] = 0.0
            continue
        lo, hi = 0.0, top
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if mean_fpr(mid, scores, brains) > target else (lo, mid)
        thresholds[name] = hi
    return thresholds


def best_dice_threshold(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                        brains: Sequence[np.ndarray], n_candidates: int = 200) -> tuple[float, float]:
    """(threshold, Dice) maximising Dice on the pooled brain voxels of labelled cases [cDDPM]."""
    s = np.concatenate([x[b] for x, b in zip(scores, brains)])
    y = np.concatenate([x[b] for x, b in zip(labels, brains)]).astype(bool)
    candidates = np.unique(np.quantile(s, np.linspace(0.5, 0.9999, n_candidates)))
    best = (float(candidates[0]), -1.0)
    for t in candidates:
        pred = s > t
        dice = 2 * np.sum(pred & y) / max(1, pred.sum() + y.sum())
        if dice > best[1]:
            best = (float(t), float(dice))
    return best
