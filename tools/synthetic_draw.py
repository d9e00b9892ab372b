"""Measure installed models on another draw of the synthetic validation: a check of how firm a choice is,
not a selection (the defaults are chosen on seed 0, as `train` and `calibrate` measure).

    .venv/bin/python tools/synthetic_draw.py --seed 1 sadm-dae-t2flair sadm-dae [path/to/model_folder ...]

A model is an installed id or a model folder (card.json and weights, e.g. an earlier version taken from
git). Each is measured on the first 15 validation subjects of its split, prepared from --data into the
training cache, in each of its trained contrasts, and one line per model prints the Dice and the median
healthy flagged volume at its default policy per contrast, with the planted volume (the draw's
fingerprint: equal across models measured on one draw).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from NormativeADLib.core import catalogue, locations
from NormativeADLib.core.card import read_card
from NormativeADLib.models.registry import load_model
from NormativeADLib.training import data, synthetic_validation
from NormativeADLib.training.train import SELECTION_SCANS, model_subjects


def measure_on_draw(model_ref: str, data_dir: Path, seed: int) -> dict:
    folder = Path(model_ref)
    card = read_card(folder) if folder.is_dir() else catalogue.get_card(model_ref)
    scans = data.list_scans(data_dir)
    subjects = model_subjects(card).validation[:SELECTION_SCANS]
    images, brains = data.load_cohort([scans[s] for s in subjects], locations.home() / "prepared",
                                      card.grid, card.percentiles)
    figures = synthetic_validation.measure(load_model(card), images, brains, card.trained_contrasts, seed=seed)
    return {"model": card.id, "version": card.version, "per_contrast": {
        contrast: {"policy": (policy := card.default_for(contrast)),
                   "dice": round(f["dice"].get(policy, float("nan")), 3),
                   "healthy_median_ml": round(f["healthy_median_ml"].get(policy, float("nan")), 2),
                   "planted_ml": round(f["anomaly_ml"], 2)}
        for contrast, f in figures.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="installed model ids or model folders")
    parser.add_argument("--seed", type=int, default=1, help="the draw (0 is the one that chooses)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/healthy/ixi_t1"))
    args = parser.parse_args()
    for model in args.models:
        print(json.dumps(measure_on_draw(model, args.data, args.seed)), flush=True)


if __name__ == "__main__":
    main()
