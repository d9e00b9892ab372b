"""`normativead batch` end to end on a real local Dask cluster: variants of the shipped sample case, a
failing case, Ctrl-C and resume, and a BIDS dataset made here. The weightless intensity models keep
each case a few seconds (the scans are 2 mm copies of the sample)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from NormativeADLib import options, paths

pytest.importorskip("distributed", reason="normativead batch needs the batch extra: pip install -e '.[batch]'")
pytest.importorskip("bids", reason="normativead batch needs the batch extra: pip install -e '.[batch]'")
pytest.importorskip("pyarrow", reason="normativead batch needs the batch extra: pip install -e '.[batch]'")

MODEL = "intensity-t1"
NAMES = sorted(options.output_names("nifti"))


def batch(*args, **popen):
    command = [sys.executable, "-m", "NormativeADLib.cli", "batch", *map(str, args)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if popen:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def two_mm(contrast: str) -> sitk.Image:
    """The shipped sample case on a 2 mm grid (its constant background kept: read as skull-stripped)."""
    scan = sitk.ReadImage(str(paths.sample_case(contrast)[0]))
    grid = sitk.Image([91, 109, 91], scan.GetPixelID())
    grid.SetSpacing([2.0] * 3)
    grid.SetOrigin(scan.GetOrigin())
    grid.SetDirection(scan.GetDirection())
    return sitk.Resample(scan, grid, sitk.Transform(), sitk.sitkLinear, 0.0)


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict[str, Path]:
    """Three scans from the sample: a 2 mm copy, its mirror image and a brighter NRRD copy."""
    folder = tmp_path_factory.mktemp("variants")
    base = two_mm("T1")
    files = {"case_a": folder / "case_a.nii.gz", "case_b": folder / "case_b.nii.gz", "case_c": folder / "case_c.nrrd"}
    sitk.WriteImage(base, str(files["case_a"]))
    sitk.WriteImage(sitk.Flip(base, [True, False, False]), str(files["case_b"]))
    sitk.WriteImage(base * 1.7, str(files["case_c"]))
    return files


def events(run_stdout: str) -> list[dict]:
    return [json.loads(line) for line in run_stdout.splitlines() if line.startswith("{")]


def read_cohort(out: Path) -> dict[str, dict]:
    with (out / "cohort.csv").open() as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


# ----------------------------------------------------------------------------------------------
# A batch with a failing case, on two workers


@pytest.fixture(scope="module")
def failing_batch(variants, tmp_path_factory):
    folder = tmp_path_factory.mktemp("with_broken")
    for name in ("case_a", "case_b"):
        (folder / variants[name].name).symlink_to(variants[name])
    (folder / "broken.nii.gz").write_bytes(b"not an image " * 20)
    out = tmp_path_factory.mktemp("batch") / "out"
    started = time.perf_counter()
    run = batch(folder, "--out", out, "--model", MODEL, "--workers", 2, "--progress", "json")
    return run, out, time.perf_counter() - started


def test_failing_case_is_recorded_while_the_others_finish(failing_batch):
    run, out, _ = failing_batch
    assert run.returncode == 1, run.stderr  # some case failed: said once, with what to do
    assert "1 case run failed" in run.stderr and "rerun the same command" in run.stderr
    rows = read_cohort(out)
    assert set(rows) == {"case_a", "case_b", "broken"}
    assert rows["broken"]["status"] == "failed" and "could not be read" in rows["broken"]["error"]
    assert "\n" not in rows["broken"]["error"]
    for case in ("case_a", "case_b"):
        assert rows[case]["status"] == "done" and rows[case]["error"] == ""
        assert sorted(p.name for p in (out / MODEL / case).iterdir()) == NAMES
    assert not (out / MODEL / "broken").exists()
    assert not (out / ".normativead-staging").exists() and not (out / paths.LOCK_FILE).exists()


def test_cohort_table_holds_the_case_metrics(failing_batch):
    import pyarrow.parquet as pq

    _, out, _ = failing_batch
    rows = read_cohort(out)
    for case in ("case_a", "case_b"):
        metrics = json.loads((out / MODEL / case / "metrics.json").read_text())
        assert float(rows[case]["case_score"]) == pytest.approx(metrics["per_case"]["case_score"])
        assert float(rows[case]["anomaly_volume_ml"]) == pytest.approx(metrics["per_case"]["anomaly_volume_ml"])
        assert "healthy_percentile" in rows[case] and rows[case]["model"] == MODEL
    table = pq.read_table(out / "cohort.parquet").to_pylist()
    assert {r["case"]: r["status"] for r in table} == {c: r["status"] for c, r in rows.items()}
    assert all(isinstance(r["case_score"], float) for r in table if r["status"] == "done")
    page = (out / "summary.html").read_text()
    done = sorted((r for r in rows.values() if r["status"] == "done"), key=lambda r: -float(r["case_score"]))
    assert page.index(done[0]["report"]) < page.index(done[1]["report"])  # most anomalous first, with thumbnails
    assert "broken" in page and (out / "summary_distributions.png").stat().st_size > 1000


def test_each_worker_loads_the_model_once_and_uses_the_single_case_pipeline(failing_batch, variants):
    from NormativeADLib import pipeline

    run, out, _ = failing_batch
    cases = [e for e in events(run.stdout) if e["event"] == "case"]
    assert len(cases) == 3 and all(e["model_loads"] == 1 for e in cases if e["status"] == "done")
    # the batch's heatmap is the one pipeline.analyse makes (the same registration given)
    result = pipeline.analyse(variants["case_a"], MODEL, transform_path=out / MODEL / "case_a" / "transform.tfm")
    batch_heatmap = sitk.GetArrayFromImage(sitk.ReadImage(str(out / MODEL / "case_a" / "heatmap.nii.gz")))
    np.testing.assert_allclose(batch_heatmap, sitk.GetArrayFromImage(result.heatmap), atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Ctrl-C, then the same command again


def test_interrupted_batch_resumes_where_it_stopped(variants, tmp_path):
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("scan,subject,site\n" + "".join(f"{p},{name},here\n" for name, p in variants.items()))
    out = tmp_path / "out"
    args = (manifest, "--out", out, "--model", MODEL, "--workers", 1, "--progress", "json")
    # a new session: the signal reaches the whole process group, workers included, as Ctrl-C at a terminal does
    first = batch(*args, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list((out / MODEL).glob("*/metrics.json")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGINT)
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    notes = [e["message"] for e in events(stdout) if e["event"] == "note"]
    assert any("rerun the same command to continue" in n for n in notes) and "Traceback" not in stderr
    finished = sorted(p.name for p in (out / MODEL).iterdir())
    assert 1 <= len(finished) < 3
    for case in finished:  # each finished case is whole; nothing of the others
        assert sorted(p.name for p in (out / MODEL / case).iterdir()) == NAMES
    assert not (out / ".normativead-staging").exists() and not (out / paths.LOCK_FILE).exists()
    before = {p: p.stat().st_mtime_ns for case in finished for p in (out / MODEL / case).iterdir()}

    again = batch(*args)
    assert again.returncode == 0, again.stderr
    ran = {e["case"] for e in events(again.stdout) if e["event"] == "case"}
    assert ran == set(variants) - set(finished)  # the finished cases were skipped ...
    assert {p: p.stat().st_mtime_ns for p in before} == before  # ... and left untouched
    rows = read_cohort(out)
    assert {c: r["status"] for c, r in rows.items()} == {c: "done" for c in variants}
    assert {r["site"] for r in rows.values()} == {"here"}  # manifest columns travel into the table


def test_a_rerun_with_other_settings_is_refused(variants, tmp_path):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "batch.json").write_text(json.dumps({"threshold": "z3", "seed": 0, "format": "nifti", "layout": "cases"}))
    run = batch(variants["case_a"], "--out", out, "--model", MODEL, "--progress", "none")
    assert run.returncode == 4 and "threshold 'z3'" in run.stderr and "--overwrite" in run.stderr


# ----------------------------------------------------------------------------------------------
# BIDS in, BIDS derivatives out


def test_bids_dataset_is_read_and_written_as_derivatives(tmp_path):
    from bids import BIDSLayout

    root = tmp_path / "bids"
    (root / "sub-01" / "ses-1" / "anat").mkdir(parents=True)
    (root / "sub-02" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.9.0"}))
    sitk.WriteImage(two_mm("T1"), str(root / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_T1w.nii.gz"))
    sitk.WriteImage(two_mm("FLAIR"), str(root / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz"))
    (root / "sub-02" / "anat" / "sub-02_FLAIR.json").write_text("{}")  # a sidecar is no scan
    out = root / "derivatives" / "normativead"  # inside the dataset, where BIDS puts derivatives

    run = batch(root, "--out", out, "--model", MODEL, "intensity-flair", "--workers", 1, "--progress", "none")
    assert run.returncode == 0, run.stderr
    rows = read_cohort(out)  # each scan with the model of its contrast only
    assert {(c, r["model"], r["subject"], r["session"]) for c, r in rows.items()} == {
        ("sub-01_ses-1_T1w", MODEL, "01", "1"), ("sub-02_FLAIR", "intensity-flair", "02", "")}
    anat = out / MODEL / "sub-01" / "ses-1" / "anat"
    written = sorted(p.name for p in anat.iterdir())
    assert len(written) == len(NAMES)  # every output of restore, under its BIDS name
    assert {"sub-01_ses-1_desc-pseudohealthy_T1w.nii.gz", "sub-01_ses-1_desc-heatmap_T1w.nii.gz",
            "sub-01_ses-1_desc-anomaly_mask.nii.gz", "sub-01_ses-1_desc-brain_mask.nii.gz",
            "sub-01_ses-1_desc-metrics_T1w.json", "sub-01_ses-1_desc-metrics_T1w.csv",
            "sub-01_ses-1_desc-report_T1w.png",
            "sub-01_ses-1_from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.tfm"} <= set(written)
    description = json.loads((out / MODEL / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "NormativeAD"

    derivatives = BIDSLayout(str(out / "intensity-flair"), validate=False, is_derivative=True)
    heatmap = derivatives.get(subject="02", desc="heatmap", suffix="FLAIR", extension=".nii.gz")
    assert len(heatmap) == 1
    scan = sitk.ReadImage(str(root / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz"))
    assert sitk.ReadImage(heatmap[0].path).GetSize() == scan.GetSize()

    again = batch(root, "--out", out, "--model", MODEL, "intensity-flair", "--progress", "none")
    assert again.returncode == 0 and "2 already complete, 0 to run" in again.stderr  # its own outputs are no input


# ----------------------------------------------------------------------------------------------
# Inputs and plans, without a cluster


def test_inputs_from_folder_glob_and_manifest(variants, tmp_path):
    from NormativeADLib.batch_inputs import read_inputs, scan_case
    from NormativeADLib.errors import InputError

    folder = variants["case_a"].parent
    assert [c.id for c in read_inputs([str(folder)]).cases] == ["case_a", "case_b", "case_c"]
    assert [c.id for c in read_inputs([str(folder / "*.nii.gz")]).cases] == ["case_a", "case_b"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("scan,reference,contrast,subject\ncase_a.nii.gz,,t1w,s1\n/nowhere/x.nii.gz,,FLAIR,s2\n")
    (tmp_path / "bad.csv").write_text("scan,contrast\na.nii,PD\n")
    with pytest.raises(InputError, match="unknown contrast 'PD'"):
        read_inputs([str(tmp_path / "bad.csv")])
    cases = read_inputs([str(manifest)]).cases
    assert [(c.id, c.contrast, c.subject) for c in cases] == [("case_a", "T1", "s1"), ("x", "FLAIR", "s2")]
    assert cases[0].scan == tmp_path / "case_a.nii.gz"  # relative to the manifest
    (tmp_path / "nohead.csv").write_text("file\na.nii.gz\n")
    with pytest.raises(InputError, match="no 'scan' column"):
        read_inputs([str(tmp_path / "nohead.csv")])
    with pytest.raises(InputError, match="input not found"):
        read_inputs([str(tmp_path / "missing")])
    # a scan's contrast is read from its name as restore reads it, else unknown (then every model runs)
    assert [scan_case(Path(n)).contrast for n in ("sub-1_T1w.nii.gz", "p_flair.nrrd", "case_a.nii.gz")] == \
        ["T1", "FLAIR", None]


def test_plan_pairs_contrasts_and_fails_missing_files_up_front(tmp_path, variants):
    from NormativeADLib.batch import make_plan
    from NormativeADLib.batch_inputs import Case
    from NormativeADLib.batch_outputs import Layout
    from NormativeADLib.catalogue import get_card

    cards = {m: get_card(m) for m in (MODEL, "intensity-flair")}
    cases = [Case("t1", variants["case_a"], contrast="T1"), Case("unknown", variants["case_b"]),
             Case("gone", tmp_path / "gone.nii.gz", contrast="FLAIR"), Case("t2", variants["case_c"], contrast="T2")]
    plan = make_plan(cases, cards, Layout(tmp_path / "out"))
    assert [(c.id, m) for c, m in plan.pairs] == [("t1", MODEL), ("unknown", MODEL), ("unknown", "intensity-flair"),
                                                  ("gone", "intensity-flair")]
    assert plan.todo == {"t1": [MODEL], "unknown": [MODEL, "intensity-flair"]}
    assert "not found" in plan.failed[("gone", "intensity-flair")] and plan.unmatched == {"T2": 1}

    # a complete case is skipped only if it was made with this run's threshold and seed
    layout = Layout(tmp_path / "out")
    for name, target in layout.targets(cases[0], MODEL).items():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"threshold": {"source": "z3", "value": 3.0}, "seed": 0}))
    assert make_plan(cases[:1], cards, layout, threshold="z3").skipped == [(cases[0], MODEL)]
    assert make_plan(cases[:1], cards, layout).todo == {"t1": [MODEL]}  # the card's default is z2
    assert make_plan(cases[:1], cards, layout, threshold="z3", seed=1).todo == {"t1": [MODEL]}


def test_bids_names_keep_the_source_entities():
    from NormativeADLib.batch_inputs import Case
    from NormativeADLib.batch_outputs import bids_name

    case = Case("x", Path("x"), bids_entities="sub-01_acq-mp2rage_desc-preproc_run-2", bids_suffix="T1w")
    assert bids_name("heatmap.nii.gz", case, "nifti") == "sub-01_acq-mp2rage_run-2_desc-preprocHeatmap_T1w.nii.gz"
    assert bids_name("segmentation.nii.gz", case, "nifti") == "sub-01_acq-mp2rage_run-2_desc-preprocAnomaly_mask.nii.gz"
