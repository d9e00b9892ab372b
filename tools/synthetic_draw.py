"""Measure models on another draw of the synthetic validation: a check of how firm a choice is, not a
selection (the defaults are chosen on seed 0, as `train` and `calibrate` measure).

    .venv/bin/python tools/synthetic_draw.py --seed 1 sadm-dae-t2flair sadm-dae --folder OLD_VERSION_FOLDER

Installed models are named by id; --folder adds a model folder that is not installed (card.json and
weights, e.g. an earlier version taken from git; read, never written). Each is measured on the healthy
validation scans its default policy is chosen on (train.selection_scans, prepared from --data into the
training cache) in each of its trained contrasts; one line per model prints the Dice and the median
healthy flagged volume at its default policy per contrast, with the planted volume (the draw's
fingerprint: equal across models measured on one draw).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from NormativeADLib.core import catalogue
from NormativeADLib.core.card import ModelCard, read_card
from NormativeADLib.models.registry import load_model
from NormativeADLib.training import synthetic_validation
from NormativeADLib.training.train import selection_scans


def measure_on_draw(card: ModelCard, data_dir: Path, seed: int) -> dict:
    images, brains = selection_scans(card, data_dir, log=lambda _: None)
    figures = synthetic_validation.measure(load_model(card), images, brains, card.trained_contrasts, seed=seed)
    return {"model": card.id, "version": card.version, "per_contrast": {
        contrast: {"policy": (policy := card.default_for(contrast)),
                   "dice": round(f["dice"].get(policy, float("nan")), 3),
                   "healthy_median_ml": round(f["healthy_median_ml"].get(policy, float("nan")), 2),
                   "planted_ml": round(f["anomaly_ml"], 2)}
        for contrast, f in figures.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="installed model ids")
    parser.add_argument("--folder", type=Path, action="append", default=[],
                        help="a model folder that is not installed (repeatable)")
    parser.add_argument("--seed", type=int, default=1, help="the draw (0 is the one that chooses)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/healthy/ixi_t1"))
    args = parser.parse_args()
    cards = [catalogue.get_card(m) for m in args.models] + [read_card(f) for f in args.folder]
    for card in cards:
        print(json.dumps(measure_on_draw(card, args.data, args.seed)), flush=True)


if __name__ == "__main__":
    main()
