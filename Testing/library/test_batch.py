"""`normativead batch` end to end on a real local Dask cluster: variants of the shipped sample case, a
failing case, Ctrl-C and resume, and a BIDS dataset made here. The weightless intensity models keep
each case a few seconds (the scans are 2 mm copies of the sample)."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from NormativeADLib.core import options, locations, writes

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
    scan = sitk.ReadImage(str(locations.sample_case(contrast)[0]))
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
    assert not (out / ".normativead-staging").exists() and not (out / writes.LOCK_FILE).exists()


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
    from NormativeADLib.pipeline import analysis

    run, out, _ = failing_batch
    cases = [e for e in events(run.stdout) if e["event"] == "case"]
    assert len(cases) == 3 and all(e["model_loads"] == 1 for e in cases if e["status"] == "done")
    # the batch's heatmap is the one analysis.analyse makes (the same registration given)
    result = analysis.analyse(variants["case_a"], MODEL, transform_path=out / MODEL / "case_a" / "transform.tfm")
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
    assert not (out / ".normativead-staging").exists() and not (out / writes.LOCK_FILE).exists()
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


# The BIDS entities in their specification's order (those a derivative of an anatomical scan may carry)
ENTITY_ORDER = ("sub", "ses", "acq", "ce", "rec", "run", "part", "space", "res", "den", "label", "desc")
ANAT_NAME = re.compile(r"^(sub-[A-Za-z0-9+]+(?:_[a-z]+-[A-Za-z0-9+]+)*)_(T1w|T2w|FLAIR|mask)\.(nii\.gz|json)$")


def check_bids_anat(folder: Path, root: Path) -> list[str]:
    """What is not a BIDS-valid derivative NIfTI or its JSON sidecar in an anat/ folder: each name its
    entities in BIDS order, its sub-/ses- those of its folders, each JSON beside its image."""
    wrong = []
    parts = folder.relative_to(root).parts  # sub-01/ses-1/anat or sub-02/anat
    for path in sorted(folder.iterdir()):
        match = ANAT_NAME.match(path.name)
        if not path.is_file() or not match:
            wrong.append(f"{path.name}: not a NIfTI or JSON with a BIDS name")
            continue
        keys = [e.split("-", 1)[0] for e in match.group(1).split("_")]
        if any(k not in ENTITY_ORDER for k in keys) or keys != sorted(keys, key=ENTITY_ORDER.index) \
                or len(set(keys)) != len(keys):
            wrong.append(f"{path.name}: entities {keys} out of BIDS order")
        folders = [p for p in parts if p.startswith(("sub-", "ses-"))]
        if match.group(1).split("_")[: len(folders)] != folders:
            wrong.append(f"{path.name}: sub-/ses- differ from its folder {'/'.join(parts)}")
        if match.group(3) == "json" and not (folder / f"{match.group(1)}_{match.group(2)}.nii.gz").is_file():
            wrong.append(f"{path.name}: a JSON without its image")
    return wrong


def empty_folders(root: Path) -> list[Path]:
    return [Path(d) for d, subdirs, files in os.walk(root) if not subdirs and not files]


@pytest.fixture(scope="module")
def bids_batch(tmp_path_factory):
    """A BIDS dataset (a T1w scan in a session, a FLAIR scan with a sidecar) through a batch with a T1, a
    FLAIR and a T2 model (the last matches no scan), into derivatives/normativead as BIDS suggests."""
    root = tmp_path_factory.mktemp("bids") / "bids"
    (root / "sub-01" / "ses-1" / "anat").mkdir(parents=True)
    (root / "sub-02" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.9.0"}))
    sitk.WriteImage(two_mm("T1"), str(root / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_T1w.nii.gz"))
    sitk.WriteImage(two_mm("FLAIR"), str(root / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz"))
    (root / "sub-02" / "anat" / "sub-02_FLAIR.json").write_text("{}")  # a sidecar is no scan
    out = root / "derivatives" / "normativead"  # inside the dataset, where BIDS puts derivatives
    run = batch(root, "--out", out, "--model", MODEL, "intensity-flair", "intensity-t2", "--workers", 1,
                "--progress", "none")
    return run, root, out


def test_bids_dataset_is_read_and_written_as_derivatives(bids_batch):
    run, root, out = bids_batch
    assert run.returncode == 0, run.stderr
    rows = read_cohort(out)  # each scan with the model of its contrast only
    assert {(c, r["model"], r["subject"], r["session"]) for c, r in rows.items()} == {
        ("sub-01_ses-1_T1w", MODEL, "01", "1"), ("sub-02_FLAIR", "intensity-flair", "02", "")}
    anat = out / "sub-01" / "ses-1" / "anat"
    assert sorted(p.name for p in anat.iterdir()) == sorted(
        f"sub-01_ses-1_desc-{kind}IntensityT1_{suffix}.{ext}" for kind, suffix in
        (("pseudohealthy", "T1w"), ("heatmap", "T1w"), ("uncertainty", "T1w"), ("anomaly", "mask"), ("brain", "mask")) for ext in ("nii.gz", "json"))
    # what BIDS has no name for lies beside anat/, at the subject's level (as fMRIPrep's figures/)
    assert sorted(p.relative_to(out / "sub-01").as_posix() for p in (out / "sub-01").rglob("*")
                  if p.is_file() and p.parent.name != "anat") == [
        "figures/sub-01_ses-1_desc-registrationIntensityT1_T1w.png", "figures/sub-01_ses-1_desc-reportIntensityT1_T1w.png",
        "metrics/sub-01_ses-1_desc-metricsIntensityT1_T1w.csv", "metrics/sub-01_ses-1_desc-metricsIntensityT1_T1w.json",
        "xfm/sub-01_ses-1_desc-intensityT1_from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.tfm"]
    assert rows["sub-01_ses-1_T1w"]["outputs"] == "sub-01/ses-1/anat"
    assert rows["sub-01_ses-1_T1w"]["report"] == "sub-01/figures/sub-01_ses-1_desc-reportIntensityT1_T1w.png"

    again = batch(root, "--out", out, "--model", MODEL, "intensity-flair", "--progress", "none")
    assert again.returncode == 0 and "2 already complete, 0 to run" in again.stderr  # its own outputs are no input


def test_bids_derivatives_are_found_by_pybids_from_the_source_dataset(bids_batch):
    from bids import BIDSLayout

    run, root, out = bids_batch
    assert run.returncode == 0, run.stderr
    layout = BIDSLayout(str(root), derivatives=True)
    assert [Path(d.root) for d in layout.derivatives.values()] == [out]
    found = {}
    for subject, session, suffix, model in (("01", "1", "T1w", "IntensityT1"), ("02", None, "FLAIR", "IntensityFlair")):
        for kind, file_suffix in (("heatmap", suffix), ("anomaly", "mask"), ("pseudohealthy", suffix), ("brain", "mask")):
            files = layout.get(scope="derivatives", subject=subject, desc=f"{kind}{model}", suffix=file_suffix,
                               extension=".nii.gz")
            assert len(files) == 1, (subject, kind, files)
            entities = files[0].get_entities()
            assert entities["datatype"] == "anat" and entities.get("session") == session
            found[subject, kind] = files[0]
    scan = sitk.ReadImage(str(root / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz"))
    assert sitk.ReadImage(found["02", "heatmap"].path).GetSize() == scan.GetSize()
    segmentation = found["01", "anomaly"].get_metadata()  # the sidecar, as pybids reads it
    assert segmentation["Type"] == "Lesion" and segmentation["Sources"] == ["bids:raw:sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"]
    assert segmentation["NormativeAD"]["Model"] == MODEL and segmentation["NormativeAD"]["ThresholdSource"] == "z2"
    assert found["02", "brain"].get_metadata()["Type"] == "Brain"
    # the source dataset itself is unchanged: only its own two scans
    assert sorted(f.filename for f in layout.get(scope="raw", extension=".nii.gz")) == \
        ["sub-01_ses-1_T1w.nii.gz", "sub-02_FLAIR.nii.gz"]

    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["BIDSVersion"] and description["Name"]
    assert description["DatasetLinks"]["raw"] == root.as_uri()
    generated = description["GeneratedBy"]  # one pipeline run per model that had scans; not intensity-t2
    assert [g["Name"] for g in generated] == ["NormativeAD", "NormativeAD"] and all(g["Version"] for g in generated)
    assert ["intensity-flair" in generated[0]["Description"], MODEL in generated[1]["Description"]] == [True, True]
    assert not any("intensity-t2" in g["Description"] for g in generated)


def test_bids_derivatives_hold_only_bids_files_in_anat_and_no_empty_folder(bids_batch):
    run, root, out = bids_batch
    assert run.returncode == 0, run.stderr
    anats = sorted(p for p in out.rglob("anat") if p.is_dir())
    assert [a.relative_to(out).as_posix() for a in anats] == ["sub-01/ses-1/anat", "sub-02/anat"]
    assert [w for a in anats for w in check_bids_anat(a, out)] == []
    assert empty_folders(out) == []
    assert not any((out / name).exists() for name in (MODEL, "intensity-flair", "intensity-t2"))  # no folder per model
    ignored = (out / ".bidsignore").read_text().split()
    assert {"cohort.csv", "summary.html", "sub-*/figures/", "sub-*/metrics/", "sub-*/xfm/"} <= set(ignored)
    page = (out / "summary.html").read_text()
    assert 'id="statistics"' in page and "intensity-flair" in page


# ----------------------------------------------------------------------------------------------
# Inputs and plans, without a cluster


def test_inputs_from_folder_glob_and_manifest(variants, tmp_path):
    from NormativeADLib.cohort.inputs import read_inputs, scan_case
    from NormativeADLib.core.errors import InputError

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
    from NormativeADLib.cohort.batch import make_plan
    from NormativeADLib.cohort.inputs import Case
    from NormativeADLib.cohort.outputs import Layout
    from NormativeADLib.core.catalogue import get_card

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
    from NormativeADLib.cohort.inputs import Case
    from NormativeADLib.cohort.outputs import bids_name

    case = Case("x", Path("x"), bids_entities="sub-01_acq-mp2rage_desc-preproc_run-2", bids_suffix="T1w")
    assert bids_name("heatmap.nii.gz", case, "nifti", "ae-ixi-t1") == \
        "sub-01_acq-mp2rage_run-2_desc-preprocHeatmapAeIxiT1_T1w.nii.gz"
    assert bids_name("segmentation.nii.gz", case, "nifti", "ae-ixi-t1") == \
        "sub-01_acq-mp2rage_run-2_desc-preprocAnomalyAeIxiT1_mask.nii.gz"


def test_bids_layout_separates_models_and_keeps_non_bids_files_out_of_anat(tmp_path):
    from NormativeADLib.cohort.inputs import Case
    from NormativeADLib.cohort.outputs import Layout
    from NormativeADLib.core.errors import InputError

    layout = Layout(tmp_path / "out", bids_root=tmp_path)
    case = Case("sub-01_T1w", tmp_path / "sub-01_T1w.nii.gz", subject="01", bids_dir="sub-01/anat",
                bids_entities="sub-01", bids_suffix="T1w")
    first, second = layout.targets(case, "ae-ixi-t1"), layout.targets(case, MODEL)
    assert not set(first.values()) & set(second.values())  # two models of one contrast: distinct files
    for targets in (first, second):
        in_anat = {n: p for n, p in targets.items() if p.parent.name == "anat"}
        assert all(p.name.endswith((".nii.gz", ".json")) for p in in_anat.values())
        assert {n for n in targets if n not in in_anat} == {"metrics.json", "metrics.csv", "report.png",
                                                              "registration.png", "transform.tfm"}
    layout.check_models([MODEL, "ae-ixi-t1"])
    with pytest.raises(InputError, match="share the BIDS desc label intensityT1"):
        layout.check_models([MODEL, "intensity_t1"])
    with pytest.raises(InputError, match="subject"):
        layout.targets(Case("x", tmp_path / "x", subject="../x", bids_entities="sub-x", bids_suffix="T1w"), MODEL)


# ----------------------------------------------------------------------------------------------
# The summary page


def summary_rows() -> list[dict]:
    rows = [{"case": f"case{i}", "model": "sadm-synth", "status": "done", "error": None, "subject": f"s{i}",
             "session": None, "report": f"sadm-synth/case{i}/report.png", "case_score": score, "healthy_percentile": pct,
             "anomaly_volume_ml": ml, "n_components": i, "largest_component_ml": ml / 2, "threshold": 0.5,
             "threshold_source": "fpr5"}
            for i, (score, pct, ml) in enumerate(((0.2, 12.0, 1.0), (0.9, 100.0, 10.0), (0.5, 96.0, 3.0), (0.3, 48.0, 2.0)))]
    rows += [{"case": f"case{i}", "model": MODEL, "status": "done", "error": None, "subject": None, "session": None,
              "report": f"{MODEL}/case{i}/report.png", "case_score": 0.1 * i, "healthy_percentile": None,
              "anomaly_volume_ml": 5.0 * i, "n_components": 1, "largest_component_ml": 1.0, "threshold": 2.0,
              "threshold_source": "z2"} for i in range(3)]
    rows.append({"case": "broken", "model": MODEL, "status": "failed", "error": "scan <broken> could not be read",
                 "report": None})
    return rows


def test_summary_page_has_sortable_tables_and_cohort_statistics():
    from html.parser import HTMLParser

    from NormativeADLib.cohort.summary import cohort_statistics, summary_html
    from NormativeADLib.core.catalogue import get_card

    cards = {m: get_card(m) for m in ("sadm-synth", MODEL)}
    rows = summary_rows()
    stats = cohort_statistics(rows, cards)
    sadm, intensity = stats["sadm-synth"], stats[MODEL]
    assert sadm["flagged_ml"] == {"n": 4, "median": 2.5, "q1": 1.75, "q3": 4.75, "min": 1.0, "max": 10.0}
    assert sadm["healthy_percentile"]["median"] == 72.0 and sadm["above_healthy"] == 2  # 96 and 100 of 4 cases
    assert sadm["healthy_scans"] == len(cards["sadm-synth"].healthy_case_scores) > 0
    assert sadm["healthy_flagged_ml"] == {"threshold": "fpr5",
                                          "median": cards["sadm-synth"].healthy_flagged_ml()["fpr5"]["median_ml"]}
    assert (intensity["done"], intensity["failed"], intensity["healthy_percentile"]) == (3, 1, None)  # no healthy scores
    assert intensity["flagged_ml"]["median"] == 5.0 and intensity["flagged_ml"]["max"] == 10.0

    page = summary_html(rows, "plot.png", cards)

    class Tables(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.scripts, self.links, self.cell = [], [], [], None

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "table":
                self.tables.append({"attrs": attrs, "heads": [], "rows": []})
            elif tag == "th":
                self.tables[-1]["heads"].append(attrs)
            elif tag == "tr" and self.tables and self.tables[-1]["heads"]:
                self.tables[-1]["rows"].append([])
            elif tag == "td":
                self.cell = attrs
                self.tables[-1]["rows"][-1].append([attrs, ""])
            elif tag == "script":
                self.scripts.append(attrs)
            elif tag in ("a", "img", "link"):
                self.links.append((tag, attrs))

        def handle_data(self, data):
            if self.cell is not None and self.tables[-1]["rows"] and self.tables[-1]["rows"][-1]:
                self.tables[-1]["rows"][-1][-1][1] += data

        def handle_endtag(self, tag):
            if tag == "td":
                self.cell = None

    parsed = Tables()
    parsed.feed(page)
    statistics = next(t for t in parsed.tables if t["attrs"].get("id") == "statistics")
    cases = [t for t in parsed.tables if "cases" in t["attrs"].get("class", "")]
    failed = [t for t in parsed.tables if "failed" in t["attrs"].get("class", "")]
    assert len(cases) == 2 and len(failed) == 1
    for table in [statistics, *cases, *failed]:  # every header sorts (but the thumbnails')
        assert "sortable" in table["attrs"]["class"]
        assert all(h.get("aria-sort") in ("none", "descending") and h.get("data-type") in ("number", "text")
                   for h in table["heads"] if h) and len([h for h in table["heads"] if h]) >= 3
    by_model = {row[0][1]: [text for _, text in row] for row in statistics["rows"] if row}
    assert by_model["sadm-synth"][1:9] == ["4", "0", "2.50", "1.75 – 4.75", "1.00 – 10.00", "85.41 (fpr5)", "0.400",
                                           "72.0"] and by_model["sadm-synth"][9] == "2 of 4"
    assert by_model[MODEL][1:4] == ["3", "1", "5.00"] and by_model[MODEL][8:10] == ["n/a", "n/a"]
    sadm_cases = next(t for t in cases if t["attrs"]["data-model"] == "sadm-synth")
    assert [row[0][1] for row in sadm_cases["rows"] if row] == ["case1", "case2", "case3", "case0"]  # score first
    assert [row[2][0]["data-value"] for row in sadm_cases["rows"] if row] == ["0.9", "0.5", "0.3", "0.2"]
    assert "healthy percentile" not in str(next(t for t in cases if t["attrs"]["data-model"] == MODEL)["heads"])
    # thumbnails: larger than before, lazily loaded, each a link to the full figure
    thumbs = [a for tag, a in parsed.links if tag == "a" and a.get("class") == "thumb"]
    assert len(thumbs) == 7 and thumbs[0]["href"] == "sadm-synth/case1/report.png"
    assert all(a.get("loading") == "lazy" for tag, a in parsed.links if tag == "img" and a.get("class") == "thumb")
    assert "img.thumb{width:480px" in page and "&lt;broken&gt;" in page
    # self-contained: no script, style or image from elsewhere
    assert parsed.scripts == [{}] and not any(v and "//" in v for _, a in parsed.links for k, v in a.items()
                                             if k in ("src", "href"))


@pytest.mark.browser
def test_summary_page_sorts_and_opens_thumbnails_in_chromium(tmp_path):
    """The page's own script in a real headless Chromium (skipped without selenium, chromium, chromedriver)."""
    import shutil

    pytest.importorskip("selenium", reason="pip install -e '.[web]'")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium or not shutil.which("chromedriver"):
        pytest.skip("Chromium and chromedriver are not installed; apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from NormativeADLib.cohort.summary import summary_html
    from NormativeADLib.core.catalogue import get_card

    rows = summary_rows()
    figure = sitk.Image([900, 300], sitk.sitkUInt8) + 128  # a report figure wider than its thumbnail
    for row in rows:
        if row["report"]:
            (tmp_path / row["report"]).parent.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(figure, str(tmp_path / row["report"]))
    sitk.WriteImage(figure, str(tmp_path / "plot.png"))
    (tmp_path / "summary.html").write_text(summary_html(rows, "plot.png", {"sadm-synth": get_card("sadm-synth")}))
    options = Options()
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get((tmp_path / "summary.html").as_uri())
        table = driver.find_element(By.CSS_SELECTOR, 'table.cases[data-model="sadm-synth"]')

        def column(index: int) -> list[str]:
            return [r.find_elements(By.TAG_NAME, "td")[index].text for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]

        assert column(0) == ["case1", "case2", "case3", "case0"]  # case score, most anomalous first
        header = table.find_element(By.XPATH, ".//th[button[normalize-space()='flagged mL']]")
        header.find_element(By.TAG_NAME, "button").click()
        assert column(0) == ["case0", "case3", "case2", "case1"] and header.get_attribute("aria-sort") == "ascending"
        header.find_element(By.TAG_NAME, "button").click()
        assert column(0) == ["case1", "case2", "case3", "case0"] and header.get_attribute("aria-sort") == "descending"
        table.find_element(By.XPATH, ".//th[button[normalize-space()='case']]/button").click()
        assert column(0) == ["case0", "case1", "case2", "case3"]
        thumb = table.find_element(By.CSS_SELECTOR, "img.thumb")
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", thumb) == 900
        assert thumb.size["width"] == 480  # readable, and smaller than the figure it opens
        thumb.click()
        viewer = driver.find_element(By.ID, "viewer")
        assert viewer.get_attribute("open") is not None
        full = viewer.find_element(By.TAG_NAME, "img")
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", full) == 900
        assert full.size["width"] == 900  # the figure at its own size
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        assert viewer.get_attribute("open") is None
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []  # no script error
    finally:
        driver.quit()
