"""`normativead evaluate`: a model over labelled cases, at every threshold source, per case and pooled.

Cases come from a manifest (JSON list of {name, scan, reference, mask?, contrast?, with?}, paths
relative to --root or to the manifest; `with` lists the study's other volumes, [{scan, contrast?}], for a
study model). Each case is analysed once; its heatmap is then segmented at each
healthy-calibrated threshold (fpr1/5/10) and at the threshold that maximises pooled Dice over
these same cases. That last one is optimistic by construction (it is searched on the data it
is scored on) and is labelled so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from sklearn.metrics import average_precision_score, roc_auc_score

from ..measures import anomaly, metrics
from ..core import jsontext, writes
from ..core.card import ModelCard, write_card
from ..core.errors import InputError
from ..core.options import DEVICE
from ..pipeline.analysis import CaseResult, analyse
from ..core.catalogue import get_card
from ..models.registry import LoadedModel, load_model


def read_manifest(path: Path, root: Path | None = None) -> list[dict]:
    """Cases of a manifest JSON, or of the cases.json inside a folder."""
    if path.is_dir():
        path = path / "cases.json"
    if not path.is_file():
        raise InputError(f"no case manifest at {path}: give a JSON list of {{name, scan, reference, mask?}} "
                         "(see Resources/Cases/shared_dev.json) or a folder holding cases.json.")
    cases = json.loads(path.read_text())
    for i, case in enumerate(cases):
        missing = [k for k in ("name", "scan", "reference") if not case.get(k)]
        if missing:
            raise InputError(f"case {case.get('name', i + 1)} of {path} has no {', '.join(missing)}: every case "
                             "needs a name, a scan and a reference lesion mask.")
    base = root or path.parent
    for case in cases:
        for key in ("scan", "reference", "mask"):
            if case.get(key):
                case[key] = str(base / case[key])
        case["with"] = [{**other, "scan": str(base / other["scan"])} for other in case.get("with") or ()]
    return cases


def uncertainty_auroc(result, segmentation: np.ndarray, reference: np.ndarray, brain: np.ndarray) -> float | None:
    """AUROC of the uncertainty map for the segmentation's wrong voxels (missed or false) in the brain: above
    0.5 where the map is higher on the voxels the segmentation gets wrong; None without a map or an error."""
    if result.uncertainty is None:
        return None
    wrong = (segmentation > 0) != reference
    if not wrong[brain].any() or wrong[brain].all():
        return None
    return float(roc_auc_score(wrong[brain], sitk.GetArrayViewFromImage(result.uncertainty)[brain]))


def _scores(result) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(heatmap, reference, brain) voxel arrays of one analysed case on its native grid."""
    heat = sitk.GetArrayFromImage(result.heatmap)
    ref = sitk.GetArrayFromImage(result.reference) > 0
    brain = sitk.GetArrayFromImage(result.prepared.native_brain) > 0
    return heat, ref, brain


def analyse_cases(model: LoadedModel, cases: list[dict], device: str = DEVICE.default,
                  log: Callable[[str], None] = print, transforms: dict | None = None) -> list[CaseResult]:
    """Each case analysed once at the card's default threshold; transforms (case name -> registration)
    skip re-registering."""
    results = []
    for case in cases:
        result = analyse(case["scan"], model, case.get("mask"), case["reference"], None, device,
                         transform_path=(transforms or {}).get(case["name"]), contrast=case.get("contrast"),
                         others=[(o["scan"], o.get("contrast")) for o in case.get("with") or ()])
        results.append(result)
        log(f"{model.card.id} {case['name']}: AUROC {result.metrics['reference']['auroc']:.3f} "
            f"({result.metrics['seconds']} s)")
    return results


def evaluate(model_id: str, cases: list[dict], device: str = DEVICE.default,
             log: Callable[[str], None] = print) -> dict:
    model = load_model(model_id)
    return summarise(model.card, cases, analyse_cases(model, cases, device, log))


def summarise(card: ModelCard, cases: list[dict], results: list[CaseResult]) -> dict:
    """Per-case rows at every threshold source, per-volume means and voxel-pooled figures."""
    analysed = [(case, result, *_scores(result)) for case, result in zip(cases, results)]
    heats = [a[2] for a in analysed]
    refs = [a[3] for a in analysed]
    brains = [a[4] for a in analysed]
    searched, _ = anomaly.best_dice_threshold(heats, refs, brains)
    rows = []
    for (case, result, heat, ref, brain) in analysed:
        spacing = result.heatmap.GetSpacing()
        # every policy of the card (the adaptive one has its own value per case), then the searched one
        thresholds = {**result.metrics["thresholds"], SEARCHED: searched}
        for source, value in thresholds.items():
            seg = anomaly.segment(heat, value, spacing, card.postprocess.min_component_ml)
            m = metrics.detection_metrics(heat, seg, ref, brain, spacing)
            contrasts = (result.metrics.get("study") or {}).get("contrasts") or [case.get("contrast", "")]
            rows.append({"case": case["name"], "contrast": "+".join(c for c in contrasts if c), "model": card.id,
                         "threshold_source": source, "threshold": value,
                         "flagged_ml": float(seg.sum()) * float(np.prod(spacing)) / 1000.0, **m,
                         "caci": result.metrics["reference"]["caci_reference"],
                         "lesion_ml": float(ref.sum()) * float(np.prod(spacing)) / 1000.0,
                         "uncertainty_auroc_error": uncertainty_auroc(result, seg, ref, brain)})
    pooled_y = np.concatenate([r[b] for r, b in zip(refs, brains)])
    pooled_s = np.concatenate([h[b] for h, b in zip(heats, brains)])
    summary = {}
    for source in dict.fromkeys(r["threshold_source"] for r in rows):
        subset = [r for r in rows if r["threshold_source"] == source]
        values = [r["threshold"] for r in subset]
        summary[source] = {
            "threshold": values[0] if len(set(values)) == 1 else "per case",
            "per_volume_mean": {k: float(np.mean([r[k] for r in subset if r[k] is not None]))
                                for k in ("dice", "auprc", "auroc", "lesion_detection_rate", "flagged_ml")},
            "pooled_dice": _pooled_dice(heats, refs, brains, values),
        }
    return {
        "model": {"id": card.id, "family": card.family, "version": card.version, "contrast": card.contrast,
                  "default_threshold": card.default_threshold, "contrast_thresholds": dict(card.contrast_thresholds)},
        "n_cases": len(cases),
        "pooled": {"auprc": float(average_precision_score(pooled_y, pooled_s)),
                   "auroc": float(roc_auc_score(pooled_y, pooled_s))},
        "summary": summary,
        "cases": rows,
        "healthy_validation": card.figures.get("healthy_validation"),
        "note": "dice_searched_on_these_cases is optimistic: the threshold is chosen on the cases it is scored on.",
    }


def _pooled_dice(heats, refs, brains, thresholds) -> float:
    """Dice over the pooled voxels of all cases, each case at its own threshold value."""
    tp = sum(int(((h > t) & r & b).sum()) for h, r, b, t in zip(heats, refs, brains, thresholds))
    total = sum(int(((h > t) & b).sum() + (r & b).sum()) for h, r, b, t in zip(heats, refs, brains, thresholds))
    return 2 * tp / max(1, total)


CASE_FIGURES = ("dice", "auprc", "auroc", "flagged_ml", "lesion_ml", "lesion_detection_rate", "false_positive_components",
                "caci", "uncertainty_auroc_error")
SEARCHED = "dice_searched_on_these_cases"


def default_cases(report: dict, *labels: str) -> list[dict]:
    """The per-case rows at the model's default threshold: the given label columns, then CASE_FIGURES."""
    default = report["model"]["default_threshold"]
    return [{k: r.get(k) for k in (*labels, *CASE_FIGURES)} for r in report["cases"] if r["threshold_source"] == default]


def record_in_card(report: dict, command: str) -> Path:
    """Write an evaluation into the evaluated model's card: the figures at its default policy. The
    evaluated cases measure; they never choose (the default policy is chosen on healthy scans with
    synthetic anomalies, synthetic_validation.choose_policy, when the model is trained or selected)."""
    card = get_card(report["model"]["id"])
    default = card.default_threshold if card.default_threshold in report["summary"] else report["model"]["default_threshold"]
    report = {**report, "model": {**report["model"], "default_threshold": default}}
    figures = {
        "command": command, "threshold": default,
        "threshold_choice": card.figures.get("synthetic_validation", {}).get("choice",
                                                                              "the card's default (not chosen here)"),
        "cases": default_cases(report, "case", "contrast"),
        "per_volume_mean": report["summary"][default]["per_volume_mean"],
        "pooled": report["pooled"],
        "note": "development cases, native grid, inside the brain mask; not a benchmark and not used to choose",
    }
    write_card(card.replace(figures={**card.figures, "evaluation": figures}), card.folder)
    return card.folder / "card.json"


def write_evaluation(report: dict, out_dir: Path, overwrite: bool = False) -> None:
    """evaluation.json, evaluation.csv and a bar chart of Dice / AUPRC / AUROC per case."""
    names = ["evaluation.json", "evaluation.csv", "evaluation.png"]
    with writes.atomic_output_dir(out_dir, names, overwrite) as staging:
        (staging / "evaluation.json").write_text(jsontext.dumps(report, indent=2) + "\n")
        writes.write_csv(report["cases"], staging / "evaluation.csv")
        _plot(report, staging / "evaluation.png")


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = default_cases(report, "case", "contrast")
    keys = ("dice", "auprc", "auroc")
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(rows), 3.5), layout="constrained")
    for i, key in enumerate(keys):
        ax.bar(x + (i - 1) * 0.27, [r[key] or 0 for r in rows], width=0.27, label=key)
    ax.set_xticks(x, [f"{r['case']}\n{r['contrast']}" for r in rows], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(f"{report['model']['id']}: Dice at {report['model']['default_threshold']}, AUPRC, AUROC per case",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=90)
    plt.close(fig)
