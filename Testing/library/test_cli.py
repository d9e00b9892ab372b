"""The command line end to end on the shipped sample case, as a user runs it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from NormativeADLib.core import catalogue, options, locations
from NormativeADLib.models import registry


def normativead(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "NormativeADLib.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=600)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    run = normativead("demo", "--out", out, "--progress", "json")
    return run, out


def test_demo_writes_every_output_on_the_input_grid(demo_run):
    run, out = demo_run
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(options.output_names("nifti"))
    scan = sitk.ReadImage(str(locations.sample_case("FLAIR")[0]))
    seg = sitk.ReadImage(str(out / "segmentation.nii.gz"))
    assert seg.GetSize() == scan.GetSize()
    np.testing.assert_allclose(seg.GetOrigin(), scan.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(seg.GetDirection(), scan.GetDirection(), atol=1e-6)
    assert set(np.unique(sitk.GetArrayFromImage(seg))) <= {0, 1}


def test_demo_metrics_are_consistent(demo_run):
    _, out = demo_run
    m = json.loads((out / "metrics.json").read_text())
    card = catalogue.get_card(catalogue.DEMO_MODEL)
    assert m["model"]["id"] == card.id and m["model"]["contrast"] == "FLAIR"
    assert m["threshold"] == {"source": card.default_threshold, "value": card.thresholds[card.default_threshold]}
    seg = sitk.ReadImage(str(out / "segmentation.nii.gz"))
    voxel_ml = np.prod(seg.GetSpacing()) / 1000
    assert m["per_case"]["anomaly_volume_ml"] == pytest.approx(sitk.GetArrayFromImage(seg).sum() * voxel_ml)
    ref = m["reference"]
    assert 0 <= ref["dice"] <= 1 and 0 < ref["auroc"] <= 1 and 0 < ref["auprc"] <= 1
    csv = (out / "metrics.csv").read_text().splitlines()
    assert len(csv) == 2 and csv[0].startswith("case,model,threshold_source")


def test_progress_is_json_lines_then_done_then_figures(demo_run):
    run, _ = demo_run
    events = [json.loads(line) for line in run.stdout.splitlines()]
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] > 0.9
    # "done" when the outputs are in place, then the figures (drawn after a front end shows the overlay)
    assert [e["event"] for e in events if e["event"] != "progress"] == ["done", "figures"]


def test_existing_outputs_are_not_overwritten(demo_run):
    _, out = demo_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    run = normativead("demo", "--out", out, "--progress", "none")
    assert run.returncode == 4 and "--overwrite" in run.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_manual_threshold_and_nrrd(tmp_path, sample_scan):
    run = normativead("restore", sample_scan, "--threshold", "0.2", "--format", "nrrd", "--out", tmp_path / "o",
                      "--json", "--progress", "none")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["metrics"]["threshold"] == {"source": "manual", "value": 0.2}
    assert (tmp_path / "o" / "heatmap.nrrd").is_file()


def test_models_lists_the_shipped_model():
    run = normativead("models", "--json")
    assert run.returncode == 0, run.stderr
    cards = json.loads(run.stdout)
    shipped = next(c for c in cards if c["id"] == catalogue.DEFAULT_MODEL)
    assert set(shipped["thresholds"]) >= {"fpr1", "fpr5", "fpr10", "comp10"}
    assert shipped["default_threshold"] in {*shipped["thresholds"], "adaptive"}
    assert "normativead train" in shipped["training"]["command"]
    table = normativead("models").stdout
    card = catalogue.get_card(catalogue.DEFAULT_MODEL)
    pooled = card.figures["evaluation"]["pooled"]["auroc"]
    assert f"healthy SSIM {card.figures['healthy_validation']['ssim']:.2f}, dev AUROC {pooled:.2f} (3 cases)" in table


def test_import_model_for_offline_sites(tmp_path):
    card = catalogue.get_card(catalogue.DEFAULT_MODEL)
    run = normativead("models", "import", card.folder)
    assert run.returncode == 0, run.stderr
    imported = catalogue.get_card(catalogue.DEFAULT_MODEL)
    assert imported.folder == locations.home() / "models" / card.id
    assert normativead("models", "import", card.folder).returncode == 3  # already there, not overwritten


def test_transform_of_a_run_is_reused_exactly(demo_run, tmp_path):
    """A second model run on the same scan can share the first run's registration (--transform)."""
    _, out = demo_run
    sample_scan = locations.sample_case("FLAIR")[0]
    run = normativead("restore", sample_scan, "--model", catalogue.DEMO_MODEL, "--transform", out / "transform.tfm",
                      "--out", tmp_path / "again", "--progress", "none")
    assert run.returncode == 0, run.stderr
    for name in ("heatmap.nii.gz", "segmentation.nii.gz"):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / name))),
                                      sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "again" / name))))
    bad = normativead("restore", sample_scan, "--transform", tmp_path / "none.tfm", "--out", tmp_path / "x",
                      "--progress", "none")
    assert bad.returncode == 2 and "transform file not found" in bad.stderr


def test_train_config_by_family_and_size():
    from NormativeADLib.core.errors import InputError
    from NormativeADLib.training.train import load_config

    assert load_config("small", "cddpm")["family"] == "cddpm"
    assert load_config("cddpm_published", "cddpm") == load_config("cddpm_published")
    with pytest.raises(InputError, match="family ae, not vae"):
        load_config("ae_small", "vae")
    with pytest.raises(FileNotFoundError, match="shipped: .*ddpm_small"):
        load_config("tiny", "ddpm")


def test_evaluation_figures_are_recorded_in_the_card(tmp_path):
    import shutil

    from NormativeADLib.evaluation.evaluate import CASE_FIGURES, record_in_card

    source = catalogue.get_card(catalogue.DEFAULT_MODEL)
    folder = locations.home() / "models" / "ae-record-test"
    shutil.copytree(source.folder, folder)
    try:
        (folder / "card.json").write_text(
            json.dumps({**json.loads((folder / "card.json").read_text()), "id": "ae-record-test"}))
        row = {"case": "c1", "contrast": "T1", "dice": 0.2, "auprc": 0.3, "auroc": 0.7, "flagged_ml": 12.0,
               "lesion_detection_rate": 0.5, "false_positive_components": 3, "caci": 0.1}
        report = {"model": {"id": "ae-record-test", "default_threshold": "fpr5"},
                  "cases": [{**row, "threshold_source": "fpr5"}, {**row, "threshold_source": "fpr1", "dice": 0.9}],
                  "summary": {"fpr5": {"per_volume_mean": {"dice": 0.2}}}, "pooled": {"auroc": 0.7}}
        record_in_card(report, "normativead evaluate --record")
        card = catalogue.get_card("ae-record-test")
        assert card.figures["evaluation"]["cases"] == [{**dict.fromkeys(CASE_FIGURES), **row}]  # a figure not measured: None
        assert card.figures["healthy_validation"] == source.figures["healthy_validation"]
        assert card.thresholds == source.thresholds
        assert not list(folder.glob(".card.json*"))  # no temporary file left
    finally:
        shutil.rmtree(folder)


def test_recording_an_evaluation_never_changes_the_default_policy(tmp_path):
    """The dev cases measure: a policy better on them (fpr1 here) does not become the default."""
    import shutil

    from NormativeADLib.evaluation.evaluate import record_in_card

    source = catalogue.get_card("sadm-synth")
    folder = locations.home() / "models" / "sadm-record-test"
    shutil.copytree(source.folder, folder)
    try:
        (folder / "card.json").write_text(
            json.dumps({**json.loads((folder / "card.json").read_text()), "id": "sadm-record-test"}))
        rows = [{"case": "c1", "contrast": "T1", "dice": d, "threshold_source": p} for p, d in
                (("fpr1", 0.9), (source.default_threshold, 0.1))]
        summary = {p: {"per_volume_mean": {"dice": d}} for p, d in (("fpr1", 0.9), (source.default_threshold, 0.1))}
        record_in_card({"model": {"id": "sadm-record-test", "default_threshold": source.default_threshold},
                        "cases": rows, "summary": summary, "pooled": {}}, "normativead evaluate --record")
        card = catalogue.get_card("sadm-record-test")
        assert card.default_threshold == source.default_threshold
        assert card.figures["evaluation"]["threshold"] == source.default_threshold
        assert card.figures["evaluation"]["per_volume_mean"]["dice"] == 0.1
    finally:
        shutil.rmtree(folder)


def test_bench_times_engine_baseline_and_whole_case():
    run = normativead("bench", "--model", "ae-ixi-t1", "--runs", "1", "--device", "cpu")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["weights"] == "trained" and result["slices_restored"] > 50
    assert 0 < result["restore_s_median"] < result["whole_case_s_median"]
    assert result["baseline_restore_s_median"] > 0 and result["peak_memory_mb"] > 0


def test_bench_times_an_untrained_config_of_the_same_network():
    run = normativead("bench", "--config", "ae_small", "--runs", "1", "--device", "cpu")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    shipped = registry.load_model("ae-ixi-t1").network
    assert result["weights"] == "untrained: speed only" and result["whole_case_s_median"] is None
    assert result["parameters"] == sum(p.numel() for p in shipped.parameters())
    assert normativead("bench", "--config", "ae_small", "--model", "ae-ixi-t1").returncode == 2


def test_demo_finds_the_sample_lesions(demo_run):
    """The first case a user opens: the flagged volume within 3x of the lesion's and Dice at least 0.3
    (the demo model was chosen because it measurably does this; the T1 models flagged 16-369 mL here)."""
    run, out = demo_run
    m = json.loads((out / "metrics.json").read_text())
    flagged, lesion = m["per_case"]["anomaly_volume_ml"], m["reference"]["reference_volume_ml"]
    assert lesion / 3 <= flagged <= 3 * lesion, (flagged, lesion)
    assert m["reference"]["dice"] >= 0.3


STUDY_MODELS = [c.id for c in catalogue.list_models() if c.family == options.STUDY_FAMILY]


@pytest.mark.skipif(not STUDY_MODELS, reason="no study model installed")
def test_a_study_of_t1_and_flair_gives_one_heatmap_and_a_restoration_per_contrast(tmp_path):
    t1, lesion = locations.sample_case("T1")
    flair, _ = locations.sample_case("FLAIR")
    out = tmp_path / "study"
    run = normativead("restore", t1, "--with", f"FLAIR={flair}", "--reference", lesion, "--out", out,
                      "--device", "cpu", "--progress", "none", "--no-figures")
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(options.analysis_names("nifti", ["FLAIR"]))
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"]["id"] == catalogue.default_study_model() and m["study"]["contrasts"] == ["T1", "FLAIR"]
    qc = m["study"]["registration"]["FLAIR"]
    assert qc["edge_correlation"] > 0.25 and qc["translation_mm"] < 2.0  # the sample's FLAIR lies on its T1
    read = lambda name: sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{name}.nii.gz")))  # noqa: E731
    heat, brain = read("heatmap"), read("brain_mask") > 0
    change = np.abs(read("pseudo_healthy_FLAIR") - read("registered_FLAIR"))
    assert change[brain].max() > 0  # the FLAIR is restored, not copied
    high = brain & (heat >= np.percentile(heat[brain], 99))
    assert change[high].mean() > change[brain & ~high].mean()  # the restoration changes most where the heatmap is high
    assert read("uncertainty").shape == heat.shape and m["uncertainty"]["mean_outside_flagged"] is not None


def test_other_volumes_need_a_study_model_and_say_so_at_once(tmp_path):
    t1, _ = locations.sample_case("T1")
    flair, _ = locations.sample_case("FLAIR")
    run = normativead("restore", t1, "--with", flair, "--model", "sadm-dae", "--out", tmp_path / "x")
    assert run.returncode == 2 and "reads one volume" in run.stderr
    assert not (tmp_path / "x").exists()


def test_no_uncertainty_writes_no_uncertainty_map(tmp_path):
    flair, _ = locations.sample_case("FLAIR")
    out = tmp_path / "plain"
    run = normativead("restore", flair, "--model", "intensity-flair", "--out", out, "--no-uncertainty",
                      "--no-figures", "--progress", "none")
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(options.analysis_names("nifti", uncertainty=False))
    assert json.loads((out / "metrics.json").read_text())["uncertainty"] is None
