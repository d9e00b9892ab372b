"""Soak benchmark (not a test): many consecutive restores, watching memory, open files and leftovers.

Two loops over the same scan:

* in one process: analysis.analyse + analysis.write_outputs, N times, sampling this process's resident
  memory (RSS), open file descriptors and threads after each case (after a garbage collection, so what
  is sampled is what the process keeps);
* through the command line: `normativead restore` N times as child processes, each child's peak RSS
  (wait4) and most open descriptors (sampled while it runs), the driver's own RSS and descriptors,
  and what the runs leave behind (staging folders, claim files, temporary files).

Growth per case is the least-squares slope over cases 2..N (case 1 warms caches: the template, the
LPIPS network, allocator pools). psutil is used when installed, else /proc/self (Linux).

    nice -n 10 python Testing/bench/soak.py --cases 50            # both loops, the 1 mm sample, ~15-20 min
    python Testing/bench/soak.py --cases 5 --mode process          # a quick look

Not collected by pytest (the name does not start with test_).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

try:
    import psutil
except ImportError:
    psutil = None


# ----------------------------------------------------------------------------------------------
# Sampling a process


def rss_mb(pid: int | None = None) -> float:
    if psutil is not None:
        return psutil.Process(pid).memory_info().rss / 2**20
    for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int | None = None) -> int:
    if psutil is not None:
        process = psutil.Process(pid)
        return process.num_fds() if hasattr(process, "num_fds") else process.num_handles()
    return len(os.listdir(f"/proc/{pid or 'self'}/fd"))


def threads(pid: int | None = None) -> int:
    if psutil is not None:
        return psutil.Process(pid).num_threads()
    for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return threading.active_count()


def slope(values: list[float]) -> float:
    """Least-squares growth per case over cases 2..N (case 1 is the warm-up)."""
    ys = values[1:]
    if len(ys) < 2:
        return float("nan")
    xs = list(range(len(ys)))
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def leftovers(*folders: Path) -> list[str]:
    """Staging folders, claim files and probes a run should never leave behind."""
    found = []
    for folder in folders:
        if folder.is_dir():
            found += [str(p) for p in folder.rglob(".normativead*")]
    return found


def temp_entries() -> set[str]:
    """NormativeAD's entries in the temporary folder (other programs' come and go on a shared machine)."""
    return {p.name for p in Path(tempfile.gettempdir()).iterdir()
            if "normativead" in p.name.lower() and not p.name.startswith("normativead-soak-")}


# ----------------------------------------------------------------------------------------------
# The loops


def soak_in_process(scan: Path, model: str, cases: int, work: Path, fmt: str) -> dict:
    from NormativeADLib.pipeline import analysis

    samples = []
    before = (rss_mb(), open_fds(), threads())
    print(f"in-process: before the first case RSS {before[0]:.0f} MB, {before[1]} fds, {before[2]} threads",
          flush=True)
    temp_before = temp_entries()
    for i in range(cases):
        out = work / f"case{i:03d}"
        started = time.perf_counter()
        result = analysis.analyse(scan, model, device="cpu")
        analysis.write_outputs(result, out, fmt)
        seconds = time.perf_counter() - started
        del result
        gc.collect()
        samples.append({"rss": rss_mb(), "fds": open_fds(), "threads": threads(), "seconds": seconds})
        shutil.rmtree(out)  # the disk stays bounded; the files were complete (write_outputs is atomic)
        if i < 3 or (i + 1) % 10 == 0 or i + 1 == cases:
            s = samples[-1]
            print(f"  case {i + 1:3d}: {s['seconds']:5.1f} s  RSS {s['rss']:7.1f} MB  fds {s['fds']:3d}  "
                  f"threads {s['threads']:3d}", flush=True)
    return summarise("in-process", samples, leftovers(work), sorted(temp_entries() - temp_before))


def soak_cli(scan: Path, model: str, cases: int, work: Path, fmt: str) -> dict:
    samples = []
    temp_before = temp_entries()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    for i in range(cases):
        out = work / f"case{i:03d}"
        command = [sys.executable, "-m", "NormativeADLib.cli", "restore", str(scan), "--out", str(out),
                   "--model", model, "--device", "cpu", "--format", fmt, "--progress", "none"]
        started = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        most_fds, stderr = 0, b""
        while True:  # os.wait4 reaps the child with its own rusage: its peak RSS
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            try:
                most_fds = max(most_fds, open_fds(child.pid))
            except Exception:  # it ended between the two calls
                pass
            time.sleep(0.25)
        seconds = time.perf_counter() - started
        child.returncode = code = os.waitstatus_to_exitcode(status)
        peak = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux
        stderr = child.stderr.read().decode(errors="replace")
        child.stderr.close()
        if code != 0:
            raise SystemExit(f"run {i + 1} failed (exit {code}): {stderr.strip()[-500:]}")
        samples.append({"peak_rss": peak, "child_fds": most_fds, "rss": rss_mb(), "fds": open_fds(),
                        "threads": threads(), "seconds": seconds})
        shutil.rmtree(out)
        if i < 3 or (i + 1) % 10 == 0 or i + 1 == cases:
            s = samples[-1]
            print(f"  run  {i + 1:3d}: {s['seconds']:5.1f} s  child peak RSS {s['peak_rss'] or float('nan'):7.1f} MB"
                  f"  child fds <= {s['child_fds']:3d}  driver RSS {s['rss']:6.1f} MB, fds {s['fds']}", flush=True)
    return summarise("command line", samples, leftovers(work), sorted(temp_entries() - temp_before))


def summarise(name: str, samples: list[dict], left: list[str], temp: list[str]) -> dict:
    summary = {"loop": name, "cases": len(samples),
               "seconds_median": statistics.median(s["seconds"] for s in samples)}
    for key in ("rss", "fds", "threads", "peak_rss", "child_fds"):
        values = [s[key] for s in samples if s.get(key) is not None]
        if values:
            summary[key] = {"first": values[0], "last": values[-1], "max": max(values),
                            "per_case": slope(values)}
    summary["left_in_outputs"] = left
    summary["new_temp_entries"] = temp
    return summary


def report(summary: dict) -> None:
    labels = {"rss": ("RSS", "MB"), "fds": ("open fds", ""), "threads": ("threads", ""),
              "peak_rss": ("child peak RSS", "MB"), "child_fds": ("child open fds (most)", "")}
    print(f"\n{summary['loop']}: {summary['cases']} cases, median {summary['seconds_median']:.1f} s per case")
    for key, (label, unit) in labels.items():
        if key in summary:
            v = summary[key]
            print(f"  {label:<24} case 1 {v['first']:8.1f} {unit:<2}  case {summary['cases']} {v['last']:8.1f} {unit:<2}"
                  f"  max {v['max']:8.1f}  growth per case {v['per_case']:+.3f} {unit}")
    print(f"  left in the output folders: {summary['left_in_outputs'] or 'nothing'}")
    print(f"  new entries in {tempfile.gettempdir()}: {summary['new_temp_entries'] or 'none'}")


def main() -> int:
    from NormativeADLib.core.catalogue import DEFAULT_MODEL
    from NormativeADLib.core.locations import sample_case

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=50)
    p.add_argument("--scan", type=Path, default=None, help="default: the shipped 1 mm T1 sample case")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--mode", choices=["both", "process", "cli"], default="both")
    p.add_argument("--format", default="nifti", choices=["nifti", "nrrd"])
    args = p.parse_args()
    scan = args.scan or sample_case("T1")[0]
    print(f"soak: {args.cases} cases of {scan.name}, model {args.model}, psutil "
          f"{'yes' if psutil else 'no (/proc/self)'}, {os.cpu_count()} CPUs, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    summaries = []
    with tempfile.TemporaryDirectory(prefix="normativead-soak-") as work:
        work = Path(work)
        if args.mode in ("both", "process"):
            summaries.append(soak_in_process(scan, args.model, args.cases, work / "process", args.format))
        if args.mode in ("both", "cli"):
            print("command line:", flush=True)
            summaries.append(soak_cli(scan, args.model, args.cases, work / "cli", args.format))
    for summary in summaries:
        report(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
