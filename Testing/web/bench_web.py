"""Measurements of `normativead web` (not a test: run it by hand, it prints JSON; docs/web.md quotes it).

1. Time from page load to the first heatmap on the shipped sample case (FLAIR, with the model the page
   takes for it: the installed FLAIR default), in a real headless Chromium against a freshly started
   server once its session started ahead answers (as a visitor finds a running server); against the
   command line's wall time on the same case and model, with its figures (as a user runs it) and
   without them (--no-figures: what the page does). Page and command line take turns (page, CLI, CLI
   without figures, page...), so that all meet the same load of a shared machine; medians and their
   ratios. The load average is recorded before and after.
2. Memory (resident set) of the visitor's session process after the page is open and after each run.

    .venv/bin/python Testing/web/bench_web.py [--repeats 3] [--runs 10]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from web_page import Page  # noqa: E402
from web_server import REPO, Server, browser_reason, new_browser  # noqa: E402

SAMPLE_FLAIR = REPO / "Resources" / "SampleData" / "mslub_patient26_flair.nii.gz"


def page_model() -> str:
    """The model the page takes for the sample FLAIR (the installed FLAIR default); the command line runs
    the same one."""
    sys.path.insert(0, str(REPO))
    from NormativeADLib.core.catalogue import default_model

    return default_model("FLAIR")


def page_to_first_heatmap(tmp: Path, model: str) -> float:
    server = Server(tmp)
    driver = new_browser(tmp)
    try:
        server.wait_for_a_ready_session()  # a running server, as a visitor finds it:
        wait_until_idle(server)  # its session's analysis worker has finished its imports too
        page = Page(driver, server.url)
        started = time.monotonic()
        page.open()
        page.choose("na-scan-source", "FLAIR")
        page.wait(lambda: "opened" in page.text("na-status"), 60)
        status = page.run_and_wait()
        assert status.startswith("finished"), status
        seconds = time.monotonic() - started
        assert model in str(page.table()), f"the page ran another model than {model}: {page.table()}"
        return seconds
    finally:
        driver.quit()
        server.stop()


def server_cpu_seconds(server: Server) -> float:
    """CPU time used so far by the server's processes (its process group: launcher, sessions, workers)."""
    group, total = server.process.pid, 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # pgrp; utime and stime follow at 11 and 12
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_until_idle(server: Server, timeout: float = 180.0) -> None:
    """Until the server's processes use under 0.2 s of CPU in 2 s (the session ahead and its worker ready)."""
    deadline = time.monotonic() + timeout
    before = server_cpu_seconds(server)
    while time.monotonic() < deadline:
        time.sleep(2)
        now = server_cpu_seconds(server)
        if now - before < 0.2:
            return
        before = now
    raise RuntimeError("the server did not settle")


def cli_seconds(tmp: Path, model: str, figures: bool = True) -> float:
    """Wall time of `normativead restore` on the case; figures=False skips report.png and registration.png,
    which the page does not draw (its views show the results)."""
    env = dict(os.environ, NORMATIVEAD_HOME=str(tmp / "home"), OMP_NUM_THREADS="2", PYTHONPATH=str(REPO))
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "NormativeADLib.cli", "restore", str(SAMPLE_FLAIR), "--model", model,
                    "--out", str(tmp / "out"), "--overwrite", "--progress", "none",
                    *([] if figures else ["--no-figures"])], env=env, check=True, capture_output=True)
    return time.monotonic() - started


def memory_after_runs(tmp: Path, runs: int) -> dict:
    server = Server(tmp)
    driver = new_browser(tmp)
    try:
        page = Page(driver, server.url)
        page.open()
        page.choose("na-scan-source", "FLAIR")
        page.wait(lambda: "opened" in page.text("na-status"), 60)
        session = driver.current_url  # the visitor's own session process (the launcher redirected there)
        rss = {"page open": round(server.rss_mb(session)), "after each run": []}
        for run in range(1, runs + 1):
            status = page.run_and_wait()
            assert status.startswith("finished"), f"run {run}: {status} / {page.error()}"
            rss["after each run"].append(log(f"rss after run {run}", round(server.rss_mb(session))))
        return rss
    finally:
        driver.quit()
        server.stop()


def log(what: str, value):
    """Each figure on stderr as it comes, so a late failure keeps the earlier ones."""
    print(what, value, file=sys.stderr, flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    reason = browser_reason()
    if reason:
        sys.exit(reason)
    load_before = os.getloadavg()
    page, cli, bare, model = [], [], [], page_model()
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        tmp = Path(tmp)
        for _ in range(args.repeats):  # in turns: a change of the machine's load falls on both
            page.append(log("page", page_to_first_heatmap(Path(tempfile.mkdtemp(dir=tmp)), model)))
            cli.append(log("cli", cli_seconds(Path(tempfile.mkdtemp(dir=tmp)), model)))
            bare.append(log("cli --no-figures", cli_seconds(Path(tempfile.mkdtemp(dir=tmp)), model, figures=False)))
        memory = log("memory", memory_after_runs(Path(tempfile.mkdtemp(dir=tmp)), args.runs)) if args.runs else None
    print(json.dumps({
        "case": SAMPLE_FLAIR.name, "model": model, "cpus": os.cpu_count(),
        "load_average_before_after": [round(v, 1) for v in (*load_before, *os.getloadavg())],
        "page_load_to_first_heatmap_s": [round(t, 1) for t in page], "page_median_s": round(statistics.median(page), 1),
        "cli_wall_s": [round(t, 1) for t in cli], "cli_median_s": round(statistics.median(cli), 1),
        "page_over_cli": round(statistics.median(page) / statistics.median(cli), 3),
        "cli_no_figures_wall_s": [round(t, 1) for t in bare], "cli_no_figures_median_s": round(statistics.median(bare), 1),
        "page_over_cli_no_figures": round(statistics.median(page) / statistics.median(bare), 3),
        "session_rss_mb": memory,
    }, indent=2))


if __name__ == "__main__":
    main()
