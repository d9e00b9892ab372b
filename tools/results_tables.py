"""The result tables, made from the evaluation outputs kept in docs/evaluation and the models' cards.

    .venv/bin/python tools/results_tables.py

rewrites, in place, the generated tables of the documentation: in docs/results.md every model on every
development case at its default policy (`summary`) and the mean AUPRC per contrast (`auprc`); in
docs/models.md every model's synthetic-anomaly validation (`synthetic`). Each table lies between two
HTML comments, `<!-- results_tables:NAME -->` and `<!-- /results_tables:NAME -->`; what lies between
them is replaced, the rest of the page is left as written, and a missing or doubled marker stops the
script before any file is written. It also rewrites docs/evaluation/policies.md (every policy of every
case). Each folder docs/evaluation/<name>/ holds one `normativead evaluate` output (evaluation.json).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVALUATIONS = ROOT / "docs" / "evaluation"
sys.path.insert(0, str(ROOT))  # the library of this checkout, also when it is not installed

from NormativeADLib.core import catalogue  # noqa: E402
from NormativeADLib.core.options import CONTRASTS  # noqa: E402

SEARCHED = "dice_searched_on_these_cases"
POLICIES = ("fpr1", "fpr5", "fpr10", "comp10", "adaptive", "p50", "p80", "p95")  # the columns of the healthy table


def evaluations() -> list[dict]:
    """Evaluations that scored every threshold policy (older ones, fpr thresholds only, are left out)."""
    reports = [json.loads(p.read_text()) for p in sorted(EVALUATIONS.glob("*/evaluation.json"))]
    return [r for r in reports if "default_threshold" in r["model"]]


def policy_table(reports: list[dict]) -> str:
    lines = ["| model | case (contrast) | lesion mL | policy | flagged mL | Dice | AUPRC | lesions found | false components |",
             "|---|---|---|---|---|---|---|---|---|"]
    for report in reports:
        model = report["model"]["id"]
        card = catalogue.get_card(model)
        for row in report["cases"]:
            if row["threshold_source"] == SEARCHED:
                continue
            default = card.default_for(row["contrast"])
            policy = row["threshold_source"] + (" (default)" if row["threshold_source"] == default else "")
            found = round(row["lesion_detection_rate"] * row["n_reference_lesions"])
            lines.append(f"| `{model}` | {row['case']} ({row['contrast']}) | {row['reference_volume_ml']:.1f} | {policy} | "
                         f"{row['flagged_ml']:.1f} | {row['dice']:.3f} | {row['auprc']:.3f} | "
                         f"{found} of {row['n_reference_lesions']} | {row['false_positive_components']} |")
    return "\n".join(lines)


def healthy_table(models: list[str]) -> str:
    lines = ["| model | " + " | ".join(POLICIES) + " |", "|---|" + "---|" * len(POLICIES)]
    for model in models:
        card = catalogue.get_card(model)
        flagged = card.healthy_flagged_ml()
        cells = [f"{flagged[p]['median_ml']:.1f}" if p in flagged else "" for p in POLICIES]
        lines.append(f"| `{model}`{_redrawn(card)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def case_rows(reports: list[dict]) -> dict[str, dict[str, dict]]:
    """model -> case -> its rows by policy. A case scored in several runs of one model keeps the run
    that scored the most cases (the all-contrast run, whose searched threshold spans every contrast)."""
    merged: dict[str, dict[str, dict]] = {}
    for report in sorted(reports, key=lambda r: r["n_cases"]):  # larger runs last: they replace
        by_case: dict[str, dict] = {}
        for row in report["cases"]:
            by_case.setdefault(row["case"], {})[row["threshold_source"]] = row
        merged.setdefault(report["model"]["id"], {}).update(by_case)
    return merged


def _redrawn(card) -> str:
    """A mark for a model whose healthy validation scans were redrawn in a synthetic contrast (one not
    trained for T1: train.in_model_contrast)."""
    redrawn = (card.figures.get("healthy_validation") or {}).get("scans")
    return " (synthetic " + "/".join(card.trained_contrasts) + ")" if redrawn else ""


def _healthy_median(model: str, policy: str) -> str:
    card = catalogue.get_card(model)
    flagged = card.healthy_flagged_ml()
    return f"{flagged[policy]['median_ml']:.1f}{_redrawn(card)}" if policy in flagged else "not measured"


def summary_table(reports: list[dict]) -> str:
    """Every shipped model and intensity baseline on every dev case it was run on (docs/results.md)."""
    lines = ["| model | case (contrast) | default policy | flagged / lesion mL | Dice (default) | Dice (best threshold) "
             "| AUPRC | AUROC | healthy IXI median mL (default) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model, cases in sorted(case_rows(reports).items()):
        card = catalogue.get_card(model)
        for case, rows in cases.items():
            default = card.default_for(next(iter(rows.values()))["contrast"])  # the policy a run of this case takes
            row, best = rows.get(default), rows.get(SEARCHED)
            if row is None:
                continue
            best_dice = f"{best['dice']:.3f}" if best else ""
            lines.append(f"| `{model}` | {case} ({row['contrast']}) | {default} | {row['flagged_ml']:.1f} / "
                         f"{row['reference_volume_ml']:.1f} | {row['dice']:.3f} | {best_dice} | {row['auprc']:.3f} | "
                         f"{row['auroc']:.3f} | {_healthy_median(model, default)} |")
    return "\n".join(lines)


def auprc_means(reports: list[dict]) -> str:
    """Mean per-case AUPRC per contrast and over every case-contrast pair a model was run on."""
    lines = ["| model | " + " | ".join(CONTRASTS) + " | all pairs (n) |", "|---|" + "---|" * (len(CONTRASTS) + 1)]
    for model, cases in sorted(case_rows(reports).items()):
        rows = [next(iter(r.values())) for r in cases.values()]
        cells = []
        for contrast in CONTRASTS:
            values = [r["auprc"] for r in rows if r["contrast"] == contrast]
            cells.append(f"{sum(values) / len(values):.3f}" if values else "")
        mean = sum(r["auprc"] for r in rows) / len(rows)
        lines.append(f"| `{model}` | " + " | ".join(cells) + f" | {mean:.3f} ({len(rows)}) |")
    return "\n".join(lines)


def synthetic_table() -> str:
    """Every installed model's synthetic-anomaly validation (the figures its default policy was chosen on):
    per contrast, restoration of healthy scans, removal of planted anomalies, residual contrast, and Dice,
    flagged over planted volume and healthy flagged volume at the default policy."""
    lines = ["| model | contrast | default policy | SSIM (healthy) | MAE (healthy) | anomaly change removed | "
             "residual inside / outside | Dice on synthetic anomalies | flagged / planted (scans with a tumour) | "
             "healthy median mL |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for card in sorted(catalogue.list_models(), key=lambda c: c.id):
        per = (card.figures.get("synthetic_validation") or {}).get("per_contrast") or {}
        for contrast, f in per.items():
            policy = card.default_for(contrast)
            cells = [_fmt(f.get("ssim")), _fmt(f.get("mae")), _fmt(f.get("removal"), "{:.0%}"),
                     _fmt(f.get("residual_contrast"), "{:.2f}"), _fmt(f["dice"].get(policy)),
                     _fmt((f.get("flagged_ratio") or {}).get(policy), "{:.2f}")
                     + _fmt((f.get("tumour_flagged_ratio") or {}).get(policy), " ({:.2f})", ""),
                     _fmt(f["healthy_median_ml"].get(policy), "{:.1f}")]
            lines.append(f"| `{card.id}` | {contrast} | {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value, pattern: str = "{:.3f}", missing: str = "n/a") -> str:
    return missing if value is None else pattern.format(value)


POLICIES_HEADER = """# Every threshold policy on the development cases

Made by `.venv/bin/python tools/results_tables.py` from the evaluations in this folder (development \
cases; more are held back). Flagged and lesion volumes on the native grid inside the brain mask; the \
model's default policy is marked. The second table: median flagged mL on the 15 healthy IXI validation \
subjects (model space) per policy; for a model not trained for T1, those scans redrawn as synthetic scans \
of its contrasts from their tissue labels (marked). A probability level offered after the model was \
calibrated (`calibrate --select-only`) shows the median the synthetic validation measured on the same \
healthy scans (`ModelCard.healthy_flagged_ml`).
"""


class MarkerError(RuntimeError):
    """A generated table's markers are missing from its page, or appear more than once."""


def replace_between_markers(text: str, name: str, table: str, page: str) -> str:
    """text with what lies between the markers of table `name` replaced by `table` (one blank line
    either side, so that Markdown reads it as a table); MarkerError unless each marker is there once,
    start before end."""
    start, end = f"<!-- results_tables:{name} -->", f"<!-- /results_tables:{name} -->"
    counts = (text.count(start), text.count(end))
    if counts != (1, 1) or text.index(start) > text.index(end):
        raise MarkerError(f"{page}: expected one '{start}' followed by one '{end}' around the generated "
                          f"table (found {counts[0]} and {counts[1]}); put them back around the table")
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    return pattern.sub(lambda _: f"{start}\n\n{table}\n\n{end}", text, count=1)


def main() -> None:
    reports = evaluations()
    generated = {  # page -> (marker name, table), in the order they appear
        "docs/results.md": [("summary", summary_table(reports)), ("auprc", auprc_means(reports))],
        "docs/models.md": [("synthetic", synthetic_table())],
    }
    pages = {}
    for page, tables in generated.items():  # every page checked before any is written
        text = (ROOT / page).read_text()
        for name, table in tables:
            text = replace_between_markers(text, name, table, page)
        pages[page] = text
    models = sorted({r["model"]["id"] for r in reports if catalogue.get_card(r["model"]["id"]).family != "intensity"})
    pages["docs/evaluation/policies.md"] = f"{POLICIES_HEADER}\n{policy_table(reports)}\n\n{healthy_table(models)}\n"
    for page, text in pages.items():
        path = ROOT / page
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"rewrote {page}")
        else:
            print(f"unchanged {page}")


if __name__ == "__main__":
    try:
        main()
    except MarkerError as error:
        sys.exit(f"results_tables: {error}")
