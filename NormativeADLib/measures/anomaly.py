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

from ..core.card import PostProcess
from ..core.options import ADAPTIVE, FPR_TARGETS

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
    residual = np.abs(image - restored)
    if post.normalise == "robust_sd":
        residual = residual / robust_sd(image[brain])
    return postprocess_score(residual, brain, post)


def postprocess_score(score: np.ndarray, brain: np.ndarray, post: PostProcess) -> np.ndarray:
    """A raw voxel score (a residual, or a segmenter's probability) zeroed outside the eroded brain and
    3D median filtered."""
    score = score * eroded_brain(brain, post.erode_iterations)
    if post.median_size > 1:
        score = ndimage.median_filter(score, size=post.median_size)
    return score.astype(np.float32)


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


def components_above_floor(score: np.ndarray, threshold: float, spacing_mm: Sequence[float],
                           min_component_ml: float) -> int:
    """How many components of score > threshold are larger than the size floor (those segment() keeps)."""
    return int((component_volumes_ml(score > threshold, spacing_mm) > min_component_ml).sum())


def clean_threshold(score: np.ndarray, spacing_mm: Sequence[float], min_component_ml: float) -> float:
    """The smallest threshold at which a scan shows no component above the size floor.

    Raising the threshold only shrinks or splits components, so "any component left" falls
    monotonically with it and a bisection finds the edge.
    """
    lo, hi = 0.0, float(score.max())
    if components_above_floor(score, lo, spacing_mm, min_component_ml) == 0:
        return 0.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if components_above_floor(score, mid, spacing_mm, min_component_ml) else (lo, mid)
    return hi


def calibrate_components(scores: Sequence[np.ndarray], spacing_mm: Sequence[float], min_component_ml: float,
                         max_flagged_fraction: float = 0.10) -> tuple[float, dict]:
    """Component-level calibration: the smallest threshold at which at most max_flagged_fraction of
    the healthy scans show any flagged component (above the size floor); with the figures reached."""
    cleans = np.sort([clean_threshold(s, spacing_mm, min_component_ml) for s in scores])
    allowed = int(np.floor(max_flagged_fraction * len(cleans)))
    threshold = float(cleans[len(cleans) - 1 - allowed])
    counts = [components_above_floor(s, threshold, spacing_mm, min_component_ml) for s in scores]
    return threshold, {"max_flagged_scan_fraction": max_flagged_fraction,
                       "healthy_scans_flagged": float(np.mean(np.asarray(counts) > 0)),
                       "false_components_per_healthy_scan": float(np.mean(counts))}


def score_statistics(scores: Sequence[np.ndarray], brains: Sequence[np.ndarray], post: PostProcess) -> dict:
    """Median and robust SD of the scores inside the eroded brain (where scores live), pooled over
    healthy scans; empty when the SD is 0 (a model that scores most voxels exactly 0: AutoDDPM)."""
    pooled = np.concatenate([s[eroded_brain(b, post.erode_iterations)] for s, b in zip(scores, brains)])
    median = float(np.median(pooled))
    mad = float(np.median(np.abs(pooled - median)))
    return {"healthy_median": median, "healthy_robust_sd": 1.4826 * mad} if mad > 0 else {}


def adaptive_threshold(score: np.ndarray, brain: np.ndarray, base: float, healthy_median: float,
                       healthy_robust_sd: float) -> float:
    """The case-adaptive threshold: the calibrated base, moved with the case's own score distribution.

    A site, scanner or contrast shift moves the residuals of a whole brain, not only of its lesions.
    The base threshold sits (base - healthy median) / healthy SD robust standard deviations above the
    healthy scans' typical score; the case gets the threshold as many of its own robust standard
    deviations above its own median (both robust, so lesions barely move them). It never goes below
    the base: a case that looks cleaner than the healthy scans keeps the calibrated threshold.
    """
    values = score[brain]
    if values.size == 0 or healthy_robust_sd <= 0:
        return float(base)
    level = (base - healthy_median) / healthy_robust_sd
    return float(max(base, np.median(values) + level * robust_sd(values)))


def case_thresholds(card, score: np.ndarray, brain: np.ndarray) -> dict[str, float]:
    """The card's calibrated thresholds and, when calibrated, this case's adaptive one (model space)."""
    thresholds = {name: float(value) for name, value in card.thresholds.items()}
    if card.adaptive:
        a = card.adaptive
        region = eroded_brain(brain, card.postprocess.erode_iterations)
        thresholds[ADAPTIVE] = adaptive_threshold(score, region, card.thresholds[a["base"]], a["healthy_median"],
                                                  a["healthy_robust_sd"])
    return thresholds


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks of one shape (0 when both are empty)."""
    return float(2 * np.sum(prediction & truth) / max(1, prediction.sum() + truth.sum()))


def best_dice_threshold(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                        brains: Sequence[np.ndarray], n_candidates: int = 200) -> tuple[float, float]:
    """(threshold, Dice) maximising Dice on the pooled brain voxels of labelled cases [cDDPM]."""
    s = np.concatenate([x[b] for x, b in zip(scores, brains)])
    y = np.concatenate([x[b] for x, b in zip(labels, brains)]).astype(bool)
    candidates = np.unique(np.quantile(s, np.linspace(0.5, 0.9999, n_candidates)))
    best = (float(candidates[0]), -1.0)
    for t in candidates:
        overlap = dice(s > t, y)
        if overlap > best[1]:
            best = (float(t), overlap)
    return best
