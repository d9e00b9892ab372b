"""Batch throughput benchmark (not a test): cases per minute of `normativead batch` on 1 and on 2 local
Dask workers against a plain sequential loop over `normativead restore`, in the same run.

Each configuration restores the same scans from scratch into its own output folder (so none reuses
another's registrations). Peak memory: per batch worker, the largest peak RSS a worker reported; for
the loop, the largest peak RSS of its restore processes (wait4).

    python Testing/bench/batch_throughput.py                       # 20 held-in IXI T1 scans, intensity-t1
    python Testing/bench/batch_throughput.py --scans 6 --model ae-ixi-t1

Writes the figures as JSON (--json) and prints a Markdown table for docs/batch.md.
Not collected by pytest (the name does not start with test_).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("NORMATIVEAD_SHARED_DATA", REPO.parent / "shared" / "data")) / "healthy" / "ixi_t1"


def held_in_scans(folder: Path, n: int) -> list[Path]:
    """The first n subjects of the shipped split's training set (held in: seen in training)."""
    from NormativeADLib.training.data import list_scans, load_split

    split = load_split(REPO / "Resources" / "Splits" / "ixi_t1.json")
    scans = list_scans(folder)
    chosen = [scans[s] for s in sorted(split.train) if s in scans][:n]
    if len(chosen) < n:
        raise SystemExit(f"only {len(chosen)} held-in scans found in {folder}")
    return chosen


def normativead(*args) -> list[str]:
    return [sys.executable, "-m", "NormativeADLib.cli", *map(str, args)]


def sequential(scans: list[Path], model: str, out: Path) -> dict:
    """A shell loop's work: one `normativead restore` process per scan, one after the other."""
    peak_kb, seconds = 0, []
    started = time.perf_counter()
    for scan in scans:
        t = time.perf_counter()
        process = subprocess.Popen(normativead("restore", scan, "--model", model, "--out", out / scan.name,
                                               "--progress", "none"), stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        if status != 0:
            raise SystemExit(f"restore failed on {scan}")
        peak_kb = max(peak_kb, usage.ru_maxrss)
        seconds.append(time.perf_counter() - t)
    wall = time.perf_counter() - started
    return {"config": "sequential restore loop", "wall_s": round(wall, 1), "cases": len(scans),
            "cases_per_min": round(60 * len(scans) / wall, 2), "median_case_s": round(statistics.median(seconds), 1),
            "peak_mb_per_process": round(peak_kb / 1024)}


def batch(scans: list[Path], model: str, out: Path, workers: int) -> dict:
    started = time.perf_counter()
    run = subprocess.run(normativead("batch", *scans, "--out", out, "--model", model, "--workers", workers,
                                     "--progress", "json"), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"batch with {workers} workers failed:\n{run.stderr}")
    cases = [json.loads(line) for line in run.stdout.splitlines() if '"event": "case"' in line]
    peaks: dict[str, float] = {}
    for event in cases:
        peaks[event["worker"]] = max(peaks.get(event["worker"], 0), event["worker_peak_mb"])
    return {"config": f"batch, {workers} worker{'s' * (workers > 1)}", "wall_s": round(wall, 1), "cases": len(cases),
            "cases_per_min": round(60 * len(cases) / wall, 2),
            "median_case_s": round(statistics.median(e["seconds"] for e in cases), 1),
            "peak_mb_per_process": round(max(peaks.values())), "workers_used": len(peaks)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--scans", type=int, default=20)
    parser.add_argument("--model", default="intensity-t1")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"IXI scans not found at {args.data} (set NORMATIVEAD_SHARED_DATA)")
    scans = held_in_scans(args.data, args.scans)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="normativead-batch-bench-") as tmp:
        tmp = Path(tmp)
        results = [sequential(scans, args.model, tmp / "loop")]
        for workers in (1, 2):
            results.append(batch(scans, args.model, tmp / f"w{workers}", workers))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    base = results[0]["cases_per_min"]
    for r in results:
        r["speedup_vs_loop"] = round(r["cases_per_min"] / base, 2)
    record = {"model": args.model, "scans": len(scans), "cores": os.cpu_count(),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "results": results}
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{len(scans)} held-in IXI T1 scans, model {args.model}, {os.cpu_count()} cores "
          f"(load average before {record['load_average_before'][0]}, after {record['load_average_after'][0]})\n")
    print("| configuration | wall (s) | cases/min | vs loop | median s/case | peak MB per worker/process |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['config']} | {r['wall_s']} | {r['cases_per_min']} | {r['speedup_vs_loop']}x | "
              f"{r['median_case_s']} | {r['peak_mb_per_process']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
