"""Whole-study speed benchmark (not a test): a study of one, two and three contrasts against a single
contrast, with and without the uncertainty map, in one warm process, the same run.

Each figure is the median of --runs calls of pipeline.analyse (nothing written) after one warm-up run:
- the first volume alone (the single-contrast case, the baseline of every ratio), without uncertainty;
- the same with the uncertainty map (a second, mirrored pass);
- the study of two and three contrasts (the others registered rigidly onto the first), with uncertainty.
The scans: MSLUB patient 26 FLAIR with its T1 and T2 from ../shared/data (the shipped sample has T1 and
FLAIR only: two contrasts).

    python Testing/bench/study_speed.py --model study-dae --runs 3

Prints a Markdown table for docs/study.md. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO)]
CASE = REPO.parent / "shared" / "data" / "pathology" / "mslub" / "patient26"


def seconds(analyse, model, first: Path, others: list, uncertainty: bool, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        analyse(first, model, device="cpu", others=[(p, None) for p in others], uncertainty=uncertainty)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="study-dae")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not CASE.is_dir():
        raise SystemExit(f"{CASE} is missing: this benchmark needs ../shared/data")
    import torch

    from NormativeADLib.models import registry
    from NormativeADLib.pipeline.analysis import analyse

    torch.set_num_threads(2)
    model = registry.load_model(args.model)
    flair, t1, t2 = (CASE / f"{c}.nii.gz" for c in ("flair", "t1", "t2"))
    analyse(flair, model, device="cpu", others=[(t1, None)])  # warm-up: imports, template, caches
    rows = [("FLAIR alone, no uncertainty", seconds(analyse, model, flair, [], False, args.runs)),
            ("FLAIR alone, with uncertainty", seconds(analyse, model, flair, [], True, args.runs)),
            ("FLAIR + T1, with uncertainty", seconds(analyse, model, flair, [t1], True, args.runs)),
            ("FLAIR + T1 + T2, with uncertainty", seconds(analyse, model, flair, [t1, t2], True, args.runs)),
            ("FLAIR + T1 + T2, no uncertainty", seconds(analyse, model, flair, [t1, t2], False, args.runs))]
    base = rows[0][1]
    print(f"| {args.model}, median of {args.runs} | s | x FLAIR alone |\n|---|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.2f} | {value / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
