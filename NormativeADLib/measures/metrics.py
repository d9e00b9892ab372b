"""Per-case metrics (always) and detection metrics against a reference mask (when given)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from . import anomaly


def hmean(a: float | None, b: float | None) -> float | None:
    """Harmonic mean of two scores clipped to [0, 1]; 0 when either is 0, None when either is unknown."""
    if a is None or b is None:
        return None
    a, b = min(max(a, 0.0), 1.0), min(max(b, 0.0), 1.0)
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def flat_metrics(m: dict) -> dict:
    """A run's metrics.json as one flat row: identifiers, per-case figures, reference figures (ref_*).

    The one flattener of metrics.csv and the Slicer metrics table.
    """
    row = {"case": m.get("case"), "model": (m.get("model") or {}).get("id"),
           "threshold_source": m["threshold"]["source"], "threshold": m["threshold"]["value"],
           "device": m.get("device"), "seconds": m.get("seconds")}
    row.update(m.get("per_case") or {})
    row.update({f"ref_{k}": v for k, v in (m.get("reference") or {}).items()})
    uncertainty = m.get("uncertainty") or {}
    row["flagged_uncertain_share"] = uncertainty.get("flagged_uncertain_share")
    study = m.get("study") or {}
    row["study_contrasts"] = "+".join(study.get("contrasts") or [])
    return row


def ssim_map(image: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """Local SSIM of the restoration (3D, 7-voxel window, model space [0, 1])."""
    from skimage.metrics import structural_similarity  # lazily: Slicer's process reads flat_metrics only

    return structural_similarity(image, restored, data_range=1.0, full=True)[1]


def restoration_fidelity(image: np.ndarray, restored: np.ndarray, region: np.ndarray,
                         anomaly_region: np.ndarray | None = None,
                         similarity: np.ndarray | None = None) -> dict:
    """How the restoration treats healthy tissue (region) and, if given, an anomaly (model space, [0, 1]).

    SSIM (3D map, 7-voxel window), MAE and PSNR over the region; with an anomaly region also the SSIM
    inside it and [B25]'s CACI = hmean(SSIM outside, 1 - SSIM inside): high only for a model that
    keeps healthy tissue and changes the anomaly. similarity: ssim_map(image, restored) when the caller
    already has it (it is the costly part).
    """
    out = {"ssim": None, "mae": None, "psnr_db": None, "ssim_inside": None, "caci": None}
    if not region.any():
        return out
    similarity = ssim_map(image, restored) if similarity is None else similarity
    error = image[region] - restored[region]
    mse = float(np.mean(error ** 2))
    out.update(ssim=float(similarity[region].mean()), mae=float(np.abs(error).mean()),
               psnr_db=float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf"))
    if anomaly_region is not None and anomaly_region.any():
        out["ssim_inside"] = float(similarity[anomaly_region].mean())
        out["caci"] = hmean(out["ssim"], 1.0 - out["ssim_inside"])
    return out


def lpips_in_region(net, image: np.ndarray, restored: np.ndarray, region: np.ndarray) -> float | None:
    """Mean of the LPIPS map (spatial, standard AlexNet weights) of the restoration over a region."""
    import torch

    from .perceptual import lpips_distance

    zs = np.flatnonzero(region.reshape(region.shape[0], -1).any(1))
    if not len(zs):
        return None
    with torch.inference_mode():
        maps = lpips_distance(net, torch.from_numpy(image[zs][:, None]), torch.from_numpy(restored[zs][:, None]),
                              spatial=True)[:, 0].cpu().numpy()
    return float(maps[region[zs]].mean())


def segmentation_figures(segmentation: np.ndarray, spacing_mm: Sequence[float]) -> dict:
    """How much a segmentation flags: its volume, its components and the largest one (mL). The one
    computation of a run's figures and of the Slicer table's row at a moved threshold."""
    volumes = anomaly.component_volumes_ml(segmentation, spacing_mm)
    return {"anomaly_volume_ml": float(volumes.sum()), "n_components": int(len(volumes)),
            "largest_component_ml": float(volumes[0]) if len(volumes) else 0.0}


def case_metrics(segmentation: np.ndarray, spacing_mm: Sequence[float], score_native: np.ndarray,
                 brain_native: np.ndarray, fidelity: dict, case_score: float,
                 healthy_scores: Sequence[float]) -> dict:
    """What every run reports, on the native grid: volumes, components, residual statistics."""
    inside = score_native[brain_native]
    return {
        **segmentation_figures(segmentation, spacing_mm),
        "brain_volume_ml": float(brain_native.sum() * np.prod(spacing_mm) / 1000.0),
        "residual_mean": float(inside.mean()) if inside.size else 0.0,
        "residual_p99": float(np.percentile(inside, 99)) if inside.size else 0.0,
        "case_score": case_score,
        "healthy_percentile": anomaly.healthy_percentile(case_score, healthy_scores),
        "ssim_outside_anomaly": fidelity["ssim"],
        "mae_outside_anomaly": fidelity["mae"],
        "psnr_outside_anomaly_db": fidelity["psnr_db"],
        "lpips_outside_anomaly": fidelity.get("lpips"),
        "ssim_inside_anomaly": fidelity["ssim_inside"],
        "caci": fidelity["caci"],
    }


def component_table(segmentation: np.ndarray, score: np.ndarray, index_to_ras, spacing_mm: Sequence[float],
                    limit: int = 50) -> list[dict]:
    """The segmentation's connected components, largest first: volume, centre (RAS mm), peak score.

    index_to_ras maps a continuous (x, y, z) voxel index to a RAS point in mm.
    """
    labels, n = anomaly.label_components(segmentation)
    if n == 0:
        return []
    ids = np.arange(1, n + 1)
    # Statistics over the labelled voxels only: scipy's over the whole volume sort all of it (1.9 s of a
    # 7 M-voxel 1 mm case, where the rest of the anomaly stage takes 1.5 s).
    inside = labels > 0
    component = labels[inside]
    sizes = np.bincount(component, minlength=n + 1)[1:]
    centres = np.stack([ndimage.mean(axis, component, ids) for axis in np.nonzero(inside)], axis=1)
    peaks = ndimage.maximum(score[inside], component, ids)
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    order = np.argsort(sizes)[::-1][:limit]
    return [{"volume_ml": float(sizes[i] * voxel_ml),
             "center_ras_mm": [round(float(c), 1) for c in index_to_ras(centres[i][::-1])],
             "peak_score": float(peaks[i])} for i in order]


def detection_metrics(score: np.ndarray, segmentation: np.ndarray, reference: np.ndarray,
                      region: np.ndarray, spacing_mm: Sequence[float]) -> dict:
    """Dice, AUPRC, AUROC over region voxels; lesion-wise detection and false-positive components."""
    from sklearn.metrics import average_precision_score, roc_auc_score  # 2 s of import, only with a reference

    y = reference[region].astype(bool)
    s = score[region]
    both_classes = 0 < y.sum() < y.size
    return {
        **segmentation_against_reference(segmentation, reference, region),
        "auprc": float(average_precision_score(y, s)) if both_classes else None,
        "auroc": float(roc_auc_score(y, s)) if both_classes else None,
        "reference_volume_ml": float(reference.sum() * np.prod(spacing_mm) / 1000.0),
    }


def segmentation_against_reference(segmentation: np.ndarray, reference: np.ndarray, region: np.ndarray) -> dict:
    """The figures that move with the threshold: Dice, the share of reference lesions touched, flagged
    components touching no lesion, and the number of lesions (all inside region). No scikit-learn: the
    Slicer module and the web viewer recompute them at every threshold in their own process."""
    segmentation, reference = segmentation.astype(bool), reference.astype(bool)
    ref_labels, n_ref = anomaly.label_components(reference & region)
    pred_labels, n_pred = anomaly.label_components(segmentation & region)
    detected = np.unique(ref_labels[(ref_labels > 0) & segmentation])
    hit_preds = np.unique(pred_labels[(pred_labels > 0) & reference])
    return {
        "dice": anomaly.dice(segmentation[region], reference[region]),
        "n_reference_lesions": int(n_ref),
        "lesion_detection_rate": float(len(detected) / n_ref) if n_ref else None,
        "false_positive_components": int(n_pred - len(hit_preds)),
    }
