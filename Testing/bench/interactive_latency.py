"""Interactive latency benchmark (not a test): how long an Apply takes with the warm analysis worker
against a fresh command-line process, on the shipped sample T1, in the same run.

Measured, each the median of --runs repetitions:
- cli: `normativead restore` in a fresh process (what every Apply cost before the worker);
- whole_case: `normativead bench`'s figure (analyse() alone in a warm process, nothing written);
- first_model_new_scan: a job on a warm, idle worker for a scan it has not seen (a fresh copy of the
  file, so nothing is reused but the imports), outputs written up to the "done" event (with --figures
  the worker then draws the figures, and the next job waits for them);
- second_model_same_scan: then another model on that same scan (registration and brain mask reused);
- same_model_again: the first model again on that scan (model and registration reused).
Jobs go through NormativeADSlicerLib.process.ProcessRunner, the runner the Slicer module and the web
viewer use.

    python Testing/bench/interactive_latency.py                      # default and dae-synth-weighted
    python Testing/bench/interactive_latency.py --runs 5 --second ae-ixi-t1

Prints a Markdown table for docs/reliability.md. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "NormativeAD")]
SCAN = REPO / "Resources" / "SampleData" / "mslub_patient26_t1.nii.gz"


def cli_seconds(model: str, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "NormativeADLib.cli", "restore", str(SCAN), "--model", model,
                    "--device", "cpu", "--out", str(out)], check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - started


def job_seconds(scan: Path, model: str, out: Path, figures: bool) -> float:
    from NormativeADLib.core.options import RestoreOptions
    from NormativeADSlicerLib.process import ProcessRunner

    runner = ProcessRunner(RestoreOptions(input_path=scan, out_dir=out, model=model, device="cpu", figures=figures))
    started = time.perf_counter()
    runner.start()
    outcome = runner.wait(timeout=600)
    if not outcome.ok:
        raise SystemExit(f"{model}: {outcome.message}")
    return time.perf_counter() - started


def main() -> int:
    from NormativeADLib.evaluation import bench
    from NormativeADLib.core import catalogue
    from NormativeADLib.models import registry
    from NormativeADSlicerLib import process

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=catalogue.default_model("T1"))
    parser.add_argument("--second", default="dae-synth-weighted")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--figures", action="store_true",
                        help="jobs draw report.png and registration.png (the module's 'keep files'; by default "
                             "it keeps none and asks for no figures)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="normativead-latency-"))
    times = {k: [] for k in ("cli", "first_model_new_scan", "second_model_same_scan", "same_model_again")}
    try:
        process.prewarm()
        time.sleep(15)  # the worker imports while the user chooses
        for run in range(args.runs):
            times["cli"].append(cli_seconds(args.model, work / f"cli{run}"))
            scan = work / f"scan{run}.nii.gz"
            shutil.copyfile(SCAN, scan)
            times["first_model_new_scan"].append(job_seconds(scan, args.model, work / f"a{run}", args.figures))
            times["second_model_same_scan"].append(job_seconds(scan, args.second, work / f"b{run}", args.figures))
            times["same_model_again"].append(job_seconds(scan, args.model, work / f"c{run}", args.figures))
        whole = bench.run(SCAN, registry.load_model(args.model), "cpu", args.runs)["whole_case_s_median"]
    finally:
        process.close_idle_workers()
        shutil.rmtree(work, ignore_errors=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"| step ({args.model}; second model {args.second}) | median s ({args.runs} runs) | x whole case |")
    print("|---|---|---|")
    print(f"| bench whole case (analyse() only) | {whole:.2f} | 1.00 |")
    for key, value in median.items():
        print(f"| {key.replace('_', ' ')} | {value:.2f} | {value / whole:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
