"""`normativead report`: which model has learned what healthy looks like, over a cohort.

For each model: restore unseen healthy scans (RQI), the labelled pathological cases (evaluation
figures, CACI, AHI), then compare the models in one table, a chart and example slices, written as
report.json and report.html with PNG images. See normative.py for the indices.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..training import data
from ..core import jsontext, writes
from . import normative
from ..core.catalogue import get_card
from ..training.data import cached_scan, list_scans
from ..core.errors import InputError, ModelError
from ..core.options import DEVICE
from .evaluate import CASE_FIGURES, analyse_cases, default_cases, summarise
from ..core.locations import prepared_cache
from ..pipeline.preprocess import to_model
from ..models.registry import load_model
from ..pipeline.restore import restore_volume, select_device

Log = Callable[[str], None]
MIN_LESION_VOXELS_PER_SLICE = 20  # a slice counts as pathological (AHI's P) from this much lesion


def healthy_subjects(scans: dict[str, Path], cards, max_unseen: int, max_reference: int):
    """(unseen, reference) scan paths: subjects no model trained or calibrated on are restored (UN);
    the others (or half of the unseen ones if there are none) are the healthy reference N."""
    seen = set()
    for card in cards:
        split = data.card_subjects(card)
        seen |= set(split.train) | set(split.calibration)
    unseen = [s for s in sorted(scans) if s not in seen]
    reference = [s for s in sorted(scans) if s in seen]
    if len(unseen) < 2:
        raise InputError(f"{len(unseen)} of the {len(scans)} healthy scans are unseen by every model "
                         "(not in a card's training or calibration split); RQI needs at least 2 unseen scans.")
    if len(reference) < 2:
        half = len(unseen) // 2
        unseen, reference = unseen[:half], unseen[half:]
    return [scans[s] for s in unseen[:max_unseen]], [scans[s] for s in reference[:max_reference]]


def standard_networks(weights_dir: str | None, log: Log):
    """(LPIPS distance or None, Inception features or None, {network: note}) from local weights only."""
    from ..measures import perceptual

    notes = {}

    def attempt(key: str, index: str, build, loaded: str):
        try:
            value = build()
        except ModelError as err:
            notes[key] = str(err)
            log(f"{index} not computed: {err}")
            return None
        notes[key] = loaded
        return value

    distance = attempt("lpips", "RQI", lambda: normative.lpips_distance_fn(
        perceptual.load_lpips(**_explicit(weights_dir, "lpips"))), "LPIPS v0.1 AlexNet, standard weights")
    features = attempt("inception", "AHI", lambda: normative.inception_features_fn(
        perceptual.load_inception(**_explicit(weights_dir, "inception"))), "FID Inception v3 pool3, pytorch-fid weights")
    return distance, features, notes


def _explicit(weights_dir: str | None, network: str) -> dict:
    """Keyword arguments naming the files inside a --weights folder (None: the default search)."""
    from ..measures.perceptual import FILES

    if weights_dir is None:
        return {}
    folder = Path(weights_dir)
    if network == "lpips":
        return {"backbone": folder / FILES["alexnet"].filename, "heads": folder / FILES["lpips_heads"].filename}
    return {"path": folder / FILES["inception"].filename}


def model_report(model_id: str, unseen: list[Path], reference: list[Path], cases: list[dict],
                 device: str, transforms: dict, networks, log: Log) -> tuple[dict, list[dict]]:
    """One model's row of the report and its example slices."""
    model = load_model(model_id)
    card = model.card
    choice = select_device(device)
    healthy, healthy_restored, reference_slices = _healthy_slices(model, unseen, reference, choice.device, log)
    results = analyse_cases(model, cases, device, log, transforms)
    for case, result in zip(cases, results):
        transforms.setdefault(case["name"], result.prepared.transform)
    pathological, pathological_restored, examples = _lesion_slices(cases, results)
    sets = normative.SliceSets(healthy, healthy_restored, reference_slices, pathological, pathological_restored)
    distance, features, _ = networks
    caci = [r.metrics["reference"]["caci_reference"] for r in results]
    row = {"model": {"id": card.id, "family": card.family, "version": card.version, "contrast": card.contrast},
           "device": choice.note,
           "n_slices": {"unseen_healthy": len(sets.healthy), "reference": len(sets.reference),
                        "pathological": len(sets.pathological)},
           "indices": normative.indices(sets, caci, distance, features),
           "evaluation": summarise(card, cases, results)}
    return row, examples


def _healthy_slices(model, unseen: list[Path], reference: list[Path], device, log: Log):
    """(UN inputs, their restorations, N inputs): brain slices in the model's space (prepared once, cached)."""
    card = model.card
    cache = prepared_cache()
    settings = (card.grid, card.percentiles, card.bias_correction)
    inputs, restored = [], []
    for i, path in enumerate(unseen):
        image, brain = cached_scan(path, cache, *settings)
        inputs.append(normative.brain_slices(image, brain))
        restored.append(normative.brain_slices(restore_volume(model, image, brain, device), brain))
        log(f"{card.id}: healthy {i + 1}/{len(unseen)} restored")
    others = [normative.brain_slices(*cached_scan(p, cache, *settings)) for p in reference]
    return np.concatenate(inputs), np.concatenate(restored), np.concatenate(others)


def _lesion_slices(cases: list[dict], results) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(P inputs, their restorations, one example per case): slices holding reference lesion."""
    inputs, restored, examples = [], [], []
    for case, result in zip(cases, results):
        prepared = result.prepared
        lesion = to_model(result.reference, prepared) & prepared.brain
        inputs.append(normative.brain_slices(prepared.image, prepared.brain, lesion, MIN_LESION_VOXELS_PER_SLICE))
        restored.append(normative.brain_slices(result.restored, prepared.brain, lesion, MIN_LESION_VOXELS_PER_SLICE))
        examples.append(_example(case["name"], result, lesion))
    inputs, restored = np.concatenate(inputs), np.concatenate(restored)
    if len(inputs) < 2:
        raise InputError(f"the reference masks of the {len(cases)} cases hold fewer than 2 axial slices with "
                         f"{MIN_LESION_VOXELS_PER_SLICE} or more lesion voxels in model space; AHI needs more "
                         "lesion: add cases or larger lesions.")
    return inputs, restored, examples


def _example(name: str, result, lesion: np.ndarray) -> dict:
    """The axial slice with the most lesion: input, restoration and anomaly score (model space)."""
    z = int(np.argmax(lesion.reshape(lesion.shape[0], -1).sum(1)))
    return {"case": name, "slice": z, "input": result.prepared.image[z], "restored": result.restored[z],
            "score": result.score[z], "lesion": lesion[z]}


def cohort_report(model_ids: list[str], healthy_dir: str | Path, cases: list[dict], device: str = DEVICE.default,
                  max_unseen: int = 10, max_reference: int = 20, weights_dir: str | None = None,
                  log: Log = print) -> tuple[dict, dict]:
    """(report, examples per model) for several models on one healthy folder and one set of cases."""
    if len(set(model_ids)) != len(model_ids):
        raise InputError("a model is named twice in --models; name each once.")
    if not cases:
        raise InputError("no pathological cases given.")
    cards = [get_card(m) for m in model_ids]  # weights are loaded one model at a time, later
    unseen, reference = healthy_subjects(list_scans(healthy_dir), cards, max_unseen, max_reference)
    log(f"healthy: {len(unseen)} unseen scans restored, {len(reference)} reference scans")
    networks = standard_networks(weights_dir, log)
    transforms: dict = {}  # the first model's registrations, reused so every model sees the same alignment
    rows, examples = [], {}
    for model_id in model_ids:
        row, examples[model_id] = model_report(model_id, unseen, reference, cases, device, transforms,
                                               networks, log)
        rows.append(row)
    report = {
        "models": rows,
        "healthy": {"folder": str(healthy_dir), "unseen": [p.name for p in unseen],
                    "reference": [p.name for p in reference]},
        "cases": [c["name"] for c in cases],
        "networks": networks[2],
        "definitions": normative.__doc__,
    }
    return report, examples


# ------------------------------------------------------------------------------------------------
# Writing


TABLE = [  # (header, getter) of the per-model table
    ("RQI", lambda r: r["indices"]["RQI"]),
    ("AHI", lambda r: r["indices"]["AHI"]),
    ("CACI", lambda r: r["indices"]["CACI"]),
    ("Overall", lambda r: r["indices"]["overall"]),
    ("RQI-SSIM", lambda r: r["indices"]["RQI-SSIM"]),
    ("AHI-HIST", lambda r: r["indices"]["AHI-HIST"]),
    ("Overall (variants)", lambda r: r["indices"]["overall-variants"]),
    ("Dice (default threshold)", lambda r: _at_default(r["evaluation"])["dice"]),
    ("AUPRC", lambda r: _at_default(r["evaluation"])["auprc"]),
    ("AUROC pooled", lambda r: r["evaluation"]["pooled"]["auroc"]),
]


def table_rows(report: dict) -> list[dict]:
    return [{"model": r["model"]["id"], **{h: get(r) for h, get in TABLE}} for r in report["models"]]


def write_cohort_report(report: dict, examples: dict, out_dir: str | Path, overwrite: bool = False) -> Path:
    """report.json, report.html, report.csv, indices.png and one examples_<model>.png per model."""
    example_names = [f"examples_{m}.png" for m in examples]
    names = ["report.json", "report.csv", "report.html", "indices.png", *example_names]

    with writes.atomic_output_dir(out_dir, names, overwrite) as staging:
        (staging / "report.json").write_text(jsontext.dumps(report, indent=2, default=_jsonable) + "\n")
        writes.write_csv(table_rows(report), staging / "report.csv")
        _plot_indices(report, staging / "indices.png")
        for model_id, name in zip(examples, example_names):
            _plot_examples(model_id, examples[model_id], staging / name)
        (staging / "report.html").write_text(_html(report, example_names))
    return Path(out_dir)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


CASE_LABELS = ("case", "model")
CASE_COLUMNS = (*CASE_LABELS, *CASE_FIGURES)


def case_rows(report: dict) -> list[dict]:
    """Per case and model, at each model's default threshold."""
    return [row for m in report["models"] for row in default_cases(m["evaluation"], *CASE_LABELS)]


def _at_default(evaluation: dict) -> dict:
    return evaluation["summary"][evaluation["model"]["default_threshold"]]["per_volume_mean"]


def _html_table(rows: list[dict], headers: list[str]) -> str:
    def cell(value) -> str:
        return html.escape(value if isinstance(value, str) else str(value) if isinstance(value, int) else _fmt(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(row[h])}</td>" for h in headers) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(report: dict, example_names: list[str]) -> str:
    models = _html_table(table_rows(report), ["model", *[h for h, _ in TABLE]])
    cases = _html_table(sorted(case_rows(report), key=lambda r: r["case"]), list(CASE_COLUMNS))
    notes = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in report["networks"].items())
    images = "".join(f'<h3>{html.escape(n[9:-4])}</h3><img src="{n}">' for n in example_names)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>NormativeAD cohort report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:right}} td:first-child{{text-align:left}}
pre{{background:#f4f4f4;padding:1em;white-space:pre-wrap}}</style></head><body>
<h1>NormativeAD cohort report</h1>
<p>Healthy: {len(report['healthy']['unseen'])} unseen scans restored, {len(report['healthy']['reference'])}
reference scans, from {html.escape(report['healthy']['folder'])}. Pathological cases:
{html.escape(', '.join(report['cases']))}.</p>
{models}
<p>n/a: the standard network's weights were not found (see below); the variants are computed instead
under their own names. Dice and AUPRC are per-volume means at each model's default threshold.</p>
<h2>Cases (default thresholds; CACI with the reference lesion)</h2>{cases}
<h2>Networks</h2><ul>{notes}</ul>
<h2>Indices</h2><img src="indices.png">
<h2>Example slices (input, restoration, anomaly score; lesion outlined)</h2>{images}
<h2>Definitions</h2><pre>{html.escape(report['definitions'])}</pre>
</body></html>
"""


def _plot_indices(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table_rows(report)
    keys = [h for h, _ in TABLE if any(r[h] is not None for r in rows)]
    x = np.arange(len(keys))
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(2 + 1.1 * len(keys), 3.8), layout="constrained")
    for i, row in enumerate(rows):
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, [row[k] or 0 for k in keys], width, label=row["model"])
    ax.set_xticks(x, keys, fontsize=8, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_title("Normative-learning indices and detection per model (higher is better)", fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_examples(model_id: str, examples: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(examples), 3, figsize=(7, 2.4 * len(examples)), squeeze=False,
                             layout="constrained")
    for row, ex in zip(axes, examples):
        for ax, key, title in zip(row, ("input", "restored", "score"), ("input", "restoration", "anomaly score")):
            ax.imshow(ex[key][::-1], cmap="gray" if key != "score" else "inferno",
                      vmin=0, vmax=1 if key != "score" else max(1e-6, float(ex["score"].max())))
            ax.contour(ex["lesion"][::-1], levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_title(f"{ex['case']} z={ex['slice']}: {title}", fontsize=7)
            ax.axis("off")
    fig.suptitle(model_id, fontsize=9)
    fig.savefig(path, dpi=80)
    plt.close(fig)
