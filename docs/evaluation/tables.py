"""The README's result tables, made from the evaluation outputs kept here and the models' cards.

    .venv/bin/python docs/evaluation/tables.py > /tmp/tables.md

Each folder docs/evaluation/<name>/ holds one `normativead evaluate` output (evaluation.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from NormativeADLib import catalogue  # noqa: E402

SEARCHED = "dice_searched_on_these_cases"
POLICIES = ("fpr1", "fpr5", "fpr10", "comp10", "adaptive", "p50")  # the columns of the healthy table


def evaluations() -> list[dict]:
    """Evaluations that scored every threshold policy (older ones, fpr thresholds only, are left out)."""
    reports = [json.loads(p.read_text()) for p in sorted(HERE.glob("*/evaluation.json"))]
    return [r for r in reports if "default_threshold" in r["model"]]


def policy_table(reports: list[dict]) -> str:
    lines = ["| model | case (contrast) | lesion mL | policy | flagged mL | Dice | AUPRC | lesions found | false components |",
             "|---|---|---|---|---|---|---|---|---|"]
    for report in reports:
        model = report["model"]["id"]
        default = catalogue.get_card(model).default_threshold
        for row in report["cases"]:
            if row["threshold_source"] == SEARCHED:
                continue
            policy = row["threshold_source"] + (" (default)" if row["threshold_source"] == default else "")
            found = round(row["lesion_detection_rate"] * row["n_reference_lesions"])
            lines.append(f"| `{model}` | {row['case']} ({row['contrast']}) | {row['reference_volume_ml']:.1f} | {policy} | "
                         f"{row['flagged_ml']:.1f} | {row['dice']:.3f} | {row['auprc']:.3f} | "
                         f"{found} of {row['n_reference_lesions']} | {row['false_positive_components']} |")
    return "\n".join(lines)


def healthy_table(models: list[str]) -> str:
    lines = ["| model | " + " | ".join(POLICIES) + " |", "|---|" + "---|" * len(POLICIES)]
    for model in models:
        flagged = (catalogue.get_card(model).figures.get("healthy_validation") or {}).get("flagged_ml") or {}
        cells = [f"{flagged[p]['median_ml']:.1f}" if p in flagged else "" for p in POLICIES]
        lines.append(f"| `{model}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    reports = evaluations()
    print(policy_table(reports))
    print()
    models = sorted({r["model"]["id"] for r in reports if catalogue.get_card(r["model"]["id"]).family != "intensity"})
    print(healthy_table(models))


if __name__ == "__main__":
    main()
