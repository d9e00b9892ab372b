"""A one-page PNG report: input, restoration, heatmap and segmentation on the most anomalous slices."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import anomaly  # noqa: E402
from .preprocess import to_model  # noqa: E402

N_SLICES = 4


def most_anomalous_slices(score: np.ndarray, segmentation: np.ndarray, n: int = N_SLICES) -> list[int]:
    """Axial slices with the most segmented score (or the highest scores when nothing is segmented)."""
    weight = (score * segmentation).reshape(score.shape[0], -1).sum(1)
    if not weight.any():
        weight = score.reshape(score.shape[0], -1).max(1)
    return sorted(np.argsort(weight)[::-1][:n].tolist())


def write_report(result, path: Path) -> None:
    threshold = result.metrics["threshold"]["value"]
    grid = result.prepared.grid
    seg = anomaly.segment(result.score, threshold, [grid.spacing_mm] * 3, result.card.postprocess.min_component_ml)
    ref = to_model(result.reference, result.prepared) if result.reference is not None else None
    slices = most_anomalous_slices(result.score, seg)
    vmax = max(float(np.percentile(result.score[result.prepared.brain], 99.9)), threshold * 1.5, 1e-6)
    rows = ("input", "pseudo-healthy", "anomaly score", "segmentation")
    fig, axes = plt.subplots(len(rows), len(slices), figsize=(2.6 * len(slices) + 1, 2.8 * len(rows)),
                             squeeze=False, layout="constrained")
    for j, z in enumerate(slices):
        image = result.prepared.image[z]
        panels = (image, result.restored[z], image, image)
        for i, (name, panel) in enumerate(zip(rows, panels)):
            ax = axes[i, j]
            ax.imshow(panel, cmap="gray", vmin=0, vmax=1)
            if name == "anomaly score":
                shown = np.ma.masked_less_equal(result.score[z], threshold * 0.5)
                im = ax.imshow(shown, cmap="inferno", vmin=0, vmax=vmax, alpha=0.8)
            if name == "segmentation":
                ax.contour(seg[z], levels=[0.5], colors="red", linewidths=0.8)
                if ref is not None and ref[z].any():
                    ax.contour(ref[z], levels=[0.5], colors="lime", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name)
            if i == 0:
                ax.set_title(f"axial {z} (MNI z={grid.origin_lps[2] + z * grid.spacing_mm:.0f} mm)", fontsize=8)
    fig.colorbar(im, ax=axes[2, -1], shrink=0.9, label="score")
    m = result.metrics
    ref_text = ""
    if m["reference"]:
        r = m["reference"]
        ref_text = f" | Dice {r['dice']:.3f}, AUPRC {r['auprc'] or 0:.3f}, AUROC {r['auroc'] or 0:.3f} (green: reference)"
    fig.suptitle(
        f"{m['case']}: model {m['model']['id']}, threshold {m['threshold']['source']}={threshold:.4f}, "
        f"anomaly {m['per_case']['anomaly_volume_ml']:.1f} mL{ref_text}\n"
        "model space (MNI152, 2 mm); image left = patient right", fontsize=9)
    fig.savefig(path, dpi=90)
    plt.close(fig)
