"""Normative-learning indices [B25]: does a model restore healthy anatomy, or copy its input?

Definitions implemented (Bercea et al., Nat. Commun. 16, 2025; formulas as in its reference code,
see docs/normative_metrics.md), all on model-space axial slices in [0, 1] that hold brain:

    RQI  = 1 - mean D(x, x^) / mean D(x, 0)          healthy unseen scans x, restorations x^
    AHI  = max(0, (F(P) - F(RP)) / (F(P) - F(UN)))   F(S) = Frechet distance of set S to healthy reference N
    CACI = mean over cases of hmean(SSIM_healthy, 1 - SSIM_anomaly)
    overall = mean(hmean(RQI, CACI), AHI)

P: slices of pathological scans that hold reference lesion; RP: their restorations; UN: slices of
unseen healthy scans; N: slices of other healthy scans. The standard indices use LPIPS (AlexNet)
for D and Inception pool3 features for F (FID). Where those weights are absent the variants RQI-SSIM
(D = 1 - SSIM) and AHI-HIST (Frechet distance of intensity and gradient histograms) are computed
under their own names; nothing is silently swapped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics.fid import get_fid_score
from skimage.metrics import structural_similarity

from ..measures.metrics import hmean
from ..pipeline.restore import MIN_BRAIN_VOXELS_PER_SLICE

# D(a, b) for batches of slices (n, h, w) in [0, 1] -> (n,) distances
Distance = Callable[[np.ndarray, np.ndarray], np.ndarray]
# slices (n, h, w) in [0, 1] -> (n, features)
Features = Callable[[np.ndarray], np.ndarray]
HIST_BINS = 32


def brain_slices(volume: np.ndarray, brain: np.ndarray, region: np.ndarray | None = None,
                 min_region_voxels: int = 1) -> np.ndarray:
    """Axial slices (n, h, w) that hold brain (and at least min_region_voxels of region, if given)."""
    keep = brain.reshape(brain.shape[0], -1).sum(1) >= MIN_BRAIN_VOXELS_PER_SLICE
    if region is not None:
        keep &= region.reshape(region.shape[0], -1).sum(1) >= min_region_voxels
    return volume[keep]


# ------------------------------------------------------------------------------------------------
# Distances and features


def ssim_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - SSIM per slice (the RQI-SSIM variant's D)."""
    return np.array([1.0 - structural_similarity(x, y, data_range=1.0) for x, y in zip(a, b)])


def lpips_distance_fn(net, batch_size: int = 64) -> Distance:
    """D = LPIPS (AlexNet, v0.1) with the standard weights; see perceptual.py."""
    from ..measures.perceptual import lpips_distance

    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(a), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(a[start:start + batch_size], np.float32))[:, None]
            y = torch.from_numpy(np.ascontiguousarray(b[start:start + batch_size], np.float32))[:, None]
            with torch.inference_mode():
                out.append(lpips_distance(net, x, y).reshape(-1).double().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    return distance


def histogram_features(slices: np.ndarray) -> np.ndarray:
    """Per slice: histogram of brain intensities and of gradient magnitudes (AHI-HIST features)."""
    features = []
    for s in slices:
        inside = s > 0
        gy, gx = np.gradient(s)
        grad = np.hypot(gx, gy)[inside]
        h_int, _ = np.histogram(s[inside], bins=HIST_BINS, range=(0.0, 1.0))
        h_grad, _ = np.histogram(grad, bins=HIST_BINS, range=(0.0, 0.25))
        n = max(1, int(inside.sum()))
        features.append(np.concatenate([h_int, h_grad]) / n)
    return np.asarray(features, np.float64).reshape(len(slices), 2 * HIST_BINS)


def inception_features_fn(net, batch_size: int = 32) -> Features:
    """F features = Inception pool3 (2048) with pytorch-fid's FID weights; see perceptual.py.

    Remembered by content: a report compares several models on the same healthy, reference and
    pathological slices, whose features need computing once.
    """
    from ..measures.perceptual import inception_features

    known: dict[tuple, np.ndarray] = {}

    def features(slices: np.ndarray) -> np.ndarray:
        slices = np.ascontiguousarray(slices, np.float32)
        key = (slices.shape, hashlib.blake2b(slices.tobytes(), digest_size=16).hexdigest())
        if key not in known:
            known[key] = inception_features(net, torch.from_numpy(slices)[:, None], batch_size)
        return known[key]

    return features


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between two feature sets (n, d) as FID defines it (MONAI's implementation)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("a Frechet distance needs at least two samples per set")
    return float(get_fid_score(torch.from_numpy(a), torch.from_numpy(b)))


# ------------------------------------------------------------------------------------------------
# Indices


def rqi(healthy: np.ndarray, restored: np.ndarray, distance: Distance) -> float:
    """1 - mean D(x, x^) / mean D(x, 0): 1 restores healthy slices exactly, 0 is as far as a blank image."""
    if len(healthy) == 0:
        raise ValueError("RQI needs healthy slices")
    to_restoration = distance(healthy, restored).mean()
    to_blank = distance(healthy, np.zeros_like(healthy)).mean()
    return float(1.0 - to_restoration / to_blank)


def ahi(pathological: np.ndarray, restored: np.ndarray, unseen: np.ndarray, reference: np.ndarray,
        features: Features) -> dict:
    """How far restorations move pathological slices toward healthy, relative to unseen healthy slices."""
    n = features(reference)
    fd = {name: frechet_distance(features(s), n)
          for name, s in (("pathological", pathological), ("restored", restored), ("unseen_healthy", unseen))}
    gap = fd["pathological"] - fd["unseen_healthy"]
    # A pathological set no farther from healthy than unseen healthy scans leaves nothing to measure.
    value = None if gap <= 0 else max(0.0, (fd["pathological"] - fd["restored"]) / gap)
    return {"value": value, "frechet": fd}


def overall(rqi_value: float | None, caci_value: float | None, ahi_value: float | None) -> float | None:
    """[B25]'s single figure: mean(hmean(RQI, CACI), AHI)."""
    combined = hmean(rqi_value, caci_value)
    if combined is None or ahi_value is None:
        return None
    return float((combined + min(max(ahi_value, 0.0), 1.0)) / 2)


@dataclass
class SliceSets:
    """Model-space slices of one model's runs: what the indices are computed from."""

    healthy: np.ndarray  # unseen healthy inputs (UN)
    healthy_restored: np.ndarray
    reference: np.ndarray  # other healthy inputs (N)
    pathological: np.ndarray  # lesion-holding slices of pathological inputs (P)
    pathological_restored: np.ndarray  # their restorations (RP)


def indices(sets: SliceSets, cases_caci: Sequence[float | None], distance: Distance | None,
            features: Features | None) -> dict:
    """Standard indices where their networks are given, the named variants always."""
    caci_values = [c for c in cases_caci if c is not None]
    caci = float(np.mean(caci_values)) if caci_values else None
    out = {"CACI": caci}
    variants = {"RQI-SSIM": rqi(sets.healthy, sets.healthy_restored, ssim_distance),
                "AHI-HIST": ahi(sets.pathological, sets.pathological_restored, sets.healthy, sets.reference,
                                histogram_features)}
    out["RQI-SSIM"] = variants["RQI-SSIM"]
    out["AHI-HIST"] = variants["AHI-HIST"]["value"]
    out["AHI-HIST_frechet"] = variants["AHI-HIST"]["frechet"]
    out["overall-variants"] = overall(out["RQI-SSIM"], caci, out["AHI-HIST"])
    out["RQI"] = rqi(sets.healthy, sets.healthy_restored, distance) if distance else None
    if features:
        standard = ahi(sets.pathological, sets.pathological_restored, sets.healthy, sets.reference, features)
        out["AHI"], out["AHI_frechet"] = standard["value"], standard["frechet"]
    else:
        out["AHI"], out["AHI_frechet"] = None, None
    out["overall"] = overall(out["RQI"], caci, out["AHI"])
    return out
