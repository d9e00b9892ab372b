"""How much a model's healthy false positives move when a scan's bias field changes: a check, not a selection.

    .venv/bin/python tools/bias_field_check.py sadm-dae --folder CANDIDATE_FOLDER

IXI's T1 scans are brighter at the bottom of the head than at the top (white matter 0.72 of the scale in
the lowest fifth of the brain, 0.53-0.56 in the highest); scans of other sites are often flat. Each of the
healthy validation scans a model's default is chosen on (the card's validation subjects, never trained on)
is run three ways, on one registration: as scanned; multiplied by a ramp along the head's axis from x0.75
at the bottom of the brain to x1 at the top (roughly undoing IXI's field, as a flat scanner would give);
and from x1 to x0.75 (a field twice IXI's). One line per model prints the median flagged volume (mL) on
T1 at its default policy, each way. --folder adds a model folder that is not installed (read, never
written; its weights are checked against its card by load_model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from NormativeADLib import io
from NormativeADLib.core.card import read_card
from NormativeADLib.models.registry import load_model
from NormativeADLib.pipeline.preprocess import prepare
from NormativeADLib.pipeline.restore import restore_volume, score_volume
from NormativeADLib.synthesis.bias_field import superior_ramp
from NormativeADLib.training import data
from NormativeADLib.training.train import SELECTION_SCANS, flagged_on_healthy, model_subjects

RAMPS = {"as scanned": None, "flattened": (0.75, 1.0), "doubled": (1.0, 0.75)}  # (bottom, top) of the brain


def score(model, prepared) -> np.ndarray:
    cpu = torch.device("cpu")
    restored = restore_volume(model, prepared.image, prepared.brain, cpu)
    return score_volume(model, prepared.image, restored, prepared.brain, cpu, contrast="T1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="installed model ids")
    parser.add_argument("--folder", type=Path, action="append", default=[], help="a model folder (repeatable)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/healthy/ixi_t1"))
    args = parser.parse_args()
    models = [load_model(m) for m in args.models] + [load_model(read_card(f)) for f in args.folder]
    subjects = model_subjects(models[0].card).validation[:SELECTION_SCANS]
    if any(model_subjects(m.card).validation[:SELECTION_SCANS] != subjects for m in models):
        raise SystemExit("the models were validated on different subjects; compare them one at a time")
    scans = data.list_scans(args.data)
    scores = {(i, way): [] for i in range(len(models)) for way in RAMPS}
    brains = []
    for subject in subjects:
        scan = io.read_scan(scans[subject])
        first = prepare(scan, models[0].card.grid)
        for way, ramp in RAMPS.items():
            moved = scan if ramp is None else superior_ramp(scan, *ramp, region=first.native_brain)
            for i, model in enumerate(models):
                card = model.card
                prepared = prepare(moved, card.grid, first.native_brain, card.percentiles, first.transform,
                                   card.bias_correction)
                scores[i, way].append(score(model, prepared))
        brains.append(first.brain)  # the same registration and mask every way
        print(f"{subject} done", flush=True)
    for i, model in enumerate(models):
        policy = model.card.default_for("T1")
        medians = {way: flagged_on_healthy(model.card, scores[i, way], brains)[policy]["median_ml"] for way in RAMPS}
        print(json.dumps({"model": f"{model.card.id} {model.card.version}", "policy": policy,
                          "median_healthy_ml": medians, "n_scans": len(subjects)}), flush=True)


if __name__ == "__main__":
    main()
