"""Registration benchmark (not a test): what a reproducible registration costs.

ITK's Mattes mutual information sums its samples over threads in no fixed order, so a registration on
more than one thread ends a little differently each run, even at a fixed sampling seed, and the brain
mask with it. On one thread (preprocess.reproducible_registration, which the training cache uses) it
ends the same way every run. For each
case, `preprocess.prepare` runs `--repeats` times with the registration on one thread and on all
threads, in turns; printed per case and setting: the median preparation time, and whether the runs'
transforms were identical.

    python Testing/bench/registration_threads.py [--repeats 3]

The shipped sample scans are always measured; two healthy IXI scans too when ../shared/data is there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
SAMPLE = REPO / "Resources" / "SampleData"
DATA = REPO.parent / "shared" / "data" / "healthy" / "ixi_t1"
CASES = [SAMPLE / "mslub_patient26_t1.nii.gz", SAMPLE / "mslub_patient26_flair.nii.gz",
         DATA / "IXI013-HH-1212_T1.nii.gz", DATA / "IXI014-HH-1236_T1.nii.gz"]


def prepared_once(scan: sitk.Image, threads: int) -> tuple[float, tuple]:
    """(seconds, transform parameters) of one preparation, the registration on one thread (1) or every core (0)."""
    from NormativeADLib.core.grid import ModelGrid
    from NormativeADLib.pipeline import preprocess

    with preprocess.reproducible_registration() if threads == 1 else contextlib.nullcontext():
        started = time.perf_counter()
        prepared = preprocess.prepare(scan, ModelGrid())
        return time.perf_counter() - started, tuple(prepared.transform.GetParameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from NormativeADLib import io

    settings = {"one thread": 1, f"all threads ({os.cpu_count()})": 0}
    rows = []
    for path in [c for c in CASES if c.is_file()]:
        scan = io.read_scan(path)
        runs = {name: [] for name in settings}
        for _ in range(args.repeats):  # in turns: a change of the machine's load falls on both
            for name, threads in settings.items():
                runs[name].append(prepared_once(scan, threads))
        for name, done in runs.items():
            rows.append({"case": path.name, "registration": name,
                         "seconds": [round(s, 2) for s, _ in done],
                         "median_s": round(statistics.median(s for s, _ in done), 2),
                         "same_transform_every_run": len({p for _, p in done}) == 1})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"load_average": [round(v, 1) for v in os.getloadavg()], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
