"""The analysis worker (NormativeADLib.cli.worker) and what it keeps between runs (NormativeADLib.core.warm):
real restores of the shipped sample scan with shipped models."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import SimpleITK as sitk

from testsupport import REPO, SAMPLE
from NormativeADLib.pipeline import analysis
from NormativeADLib.core import warm
from NormativeADLib.core.options import analysis_names

SCAN = SAMPLE / "mslub_patient26_t1.nii.gz"
pytestmark = pytest.mark.slow


@pytest.fixture
def kept():
    warm.keep(models=2, scans=1)
    yield
    warm.forget()


@pytest.fixture
def counted(monkeypatch):
    """How often the pipeline loads a model and brings a scan into model space (the real functions run)."""
    calls = {"prepare": 0, "load_model": 0}

    def counting(name, real):
        def run(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(analysis, name, run)

    counting("prepare", analysis.prepare)
    counting("load_model", analysis.load_model)
    return calls


def test_a_second_model_on_the_same_scan_reuses_its_registration(kept, counted, tmp_path):
    first = analysis.analyse(SCAN, "dae-synth", device="cpu")
    second = analysis.analyse(SCAN, "ae-ixi-t1", device="cpu")  # another model, the same grid
    assert counted == {"prepare": 1, "load_model": 2}
    assert second.prepared is first.prepared and not first.prepared.image.flags.writeable
    analysis.analyse(SCAN, "dae-synth", device="cpu")  # loaded already
    assert counted == {"prepare": 1, "load_model": 2}
    # the same file content under another name (the Slicer module exports the volume for every Apply)
    copy = tmp_path / "input.nii.gz"
    copy.write_bytes(SCAN.read_bytes())
    analysis.analyse(copy, "ae-ixi-t1", device="cpu")
    assert counted["prepare"] == 1
    os.utime(copy, ns=(0, 0))  # touched, not changed: still the same scan
    analysis.analyse(copy, "ae-ixi-t1", device="cpu")
    assert counted["prepare"] == 1
    sitk.WriteImage(sitk.ReadImage(str(SCAN)) * 1.5, str(copy))  # new content: prepared again, never stale
    analysis.analyse(copy, "ae-ixi-t1", device="cpu")
    assert counted["prepare"] == 2


def test_a_one_shot_run_keeps_nothing(counted):
    analysis.analyse(SCAN, "dae-synth", device="cpu")
    analysis.analyse(SCAN, "dae-synth", device="cpu")
    assert counted == {"prepare": 2, "load_model": 2}


def test_the_worker_runs_jobs_one_after_another_and_survives_their_errors(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "NormativeADLib.cli.worker"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def job(line: str) -> tuple[int, list[dict], list[str]]:
        worker.stdin.write(line + "\n")
        worker.stdin.flush()
        events, text = [], []
        for out in worker.stdout:
            event = json.loads(out) if out.startswith("{") else None
            if event and event["event"] == "job-end":
                return event["exit_code"], events, text
            (events if event else text).append(event or out)
        raise AssertionError(f"the worker ended: {text}")

    try:
        assert json.loads(worker.stdout.readline()) == {"event": "ready"}
        code, _, text = job("restore this")
        assert code == 2 and "argv" in "".join(text)
        code, events, _ = job(json.dumps({"argv": ["restore", str(tmp_path / "missing.nii.gz"), "--progress", "json"]}))
        assert code == 2 and events[-1]["event"] == "error" and "missing.nii.gz" in events[-1]["message"]
        out = tmp_path / "out"
        code, events, text = job(json.dumps({"argv": ["restore", str(SCAN), "--model", "dae-synth", "--device", "cpu",
                                                      "--out", str(out), "--progress", "json"]}))
        assert code == 0, text
        names = [e["event"] for e in events]
        # the outputs are announced before the figures are drawn (a front end shows the overlay then)
        assert names.index("done") < names.index("figures") == len(names) - 1
        assert (out / "heatmap.nii.gz").is_file() and (out / "report.png").is_file()
        code, events, _ = job(json.dumps({"argv": ["restore", str(SCAN), "--out", str(out), "--progress", "json"]}))
        assert code == 4 and "already exists" in events[-1]["message"]  # as the one-shot command answers
        bare = tmp_path / "bare"  # what the Slicer module and the web viewer ask for: no figures
        code, events, text = job(json.dumps({"argv": ["restore", str(SCAN), "--model", "dae-synth", "--device", "cpu",
                                                      "--out", str(bare), "--progress", "json", "--no-figures"]}))
        assert code == 0, text
        assert [e["event"] for e in events if e["event"] != "progress"] == ["done"]
        assert sorted(p.name for p in bare.iterdir()) == sorted(analysis_names("nifti"))
        worker.stdin.close()
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()


def test_a_run_imports_only_what_its_model_needs():
    """An intensity baseline without a reference needs neither MONAI nor scikit-learn (2 s of imports)."""
    code = ("import sys\nfrom NormativeADLib.pipeline import analysis\n"
            f"analysis.analyse({str(SCAN)!r}, 'intensity-t1', device='cpu')\n"
            "print(sorted(m for m in ('monai', 'sklearn') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"
