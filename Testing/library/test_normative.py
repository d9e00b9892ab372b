"""Normative-learning indices on constructed cases whose value is known by hand, then on real data.

The constructed cohort is the MNI152 template on the model grid (real brain anatomy): healthy
slices, and pathological slices made by inserting dark lesions into them. Three "models" restore
it: one that returns its input (copies anomalies), one that returns the healthy slices (an
oracle restoration), one that blurs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from NormativeADLib.measures import metrics
from NormativeADLib.evaluation import normative
from NormativeADLib.core.grid import ModelGrid
from NormativeADLib.io.template import template_on_grid

from testsupport import REPO, SHARED_DATA, needs_shared_data


@pytest.fixture(scope="module")
def cohort():
    t1, mask = template_on_grid(ModelGrid())
    image = sitk.GetArrayFromImage(t1)
    brain = sitk.GetArrayFromImage(mask) > 0
    image = np.clip(image / np.percentile(image[brain], 99), 0, 1) * brain
    slices = normative.brain_slices(image.astype(np.float32), brain)
    brains = normative.brain_slices(brain, brain)
    reference, unseen = slices[0::2], slices[1::2]
    unseen_brain = brains[1::2]
    rng = np.random.default_rng(0)
    lesions = np.zeros_like(unseen_brain)
    for i, b in enumerate(unseen_brain):
        ys, xs = np.nonzero(ndimage.binary_erosion(b, iterations=8))
        if len(ys):
            k = rng.integers(len(ys))
            yy, xx = np.ogrid[:b.shape[0], :b.shape[1]]
            lesions[i] = ((yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 <= 25) & b
    pathological = np.where(lesions, 0.05, unseen).astype(np.float32)
    return {"reference": reference, "unseen": unseen, "brain": unseen_brain, "lesions": lesions,
            "pathological": pathological}


def test_hmean_and_overall_by_hand():
    assert metrics.hmean(1.0, 0.0) == 0.0
    assert metrics.hmean(0.5, 0.5) == pytest.approx(0.5)
    assert metrics.hmean(1.0, 0.5) == pytest.approx(2 / 3)
    assert metrics.hmean(-0.2, 1.0) == 0.0  # SSIM can be negative: clipped to 0
    assert metrics.hmean(None, 1.0) is None
    assert normative.overall(1.0, 0.5, 0.25) == pytest.approx((2 / 3 + 0.25) / 2)
    assert normative.overall(None, 0.5, 0.25) is None


def test_frechet_distance_of_shifted_sets_is_the_squared_shift():
    a = np.random.default_rng(1).normal(size=(500, 6))
    shift = np.array([1.0, -2.0, 0.0, 0.5, 0.0, 3.0])
    assert normative.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert normative.frechet_distance(a + shift, a) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_identity_model_has_rqi_one_caci_zero_ahi_zero(cohort):
    """A model that returns its input: perfect on healthy scans, changes nothing in anomalies."""
    c = cohort
    assert normative.rqi(c["unseen"], c["unseen"], normative.ssim_distance) == pytest.approx(1.0)
    change = metrics.restoration_fidelity(c["pathological"], c["pathological"], c["brain"] & ~c["lesions"],
                                          c["lesions"])
    assert change["ssim"] == pytest.approx(1.0) and change["ssim_inside"] == pytest.approx(1.0)
    assert change["caci"] == pytest.approx(0.0)
    ahi = normative.ahi(c["pathological"], c["pathological"], c["unseen"], c["reference"],
                        normative.histogram_features)
    assert ahi["value"] == pytest.approx(0.0, abs=1e-9)
    assert ahi["frechet"]["pathological"] > ahi["frechet"]["unseen_healthy"]


def test_oracle_restoration_has_ahi_one_and_high_caci(cohort):
    """Restorations equal to the healthy slices: as healthy as unseen healthy scans (AHI exactly 1)."""
    c = cohort
    ahi = normative.ahi(c["pathological"], c["unseen"], c["unseen"], c["reference"], normative.histogram_features)
    assert ahi["value"] == pytest.approx(1.0)
    change = metrics.restoration_fidelity(c["pathological"], c["unseen"], c["brain"] & ~c["lesions"], c["lesions"])
    # Not exactly 1 outside: the 3D SSIM window reaches lesions of the neighbouring stacked slices.
    assert change["ssim"] > 0.8 and change["ssim_inside"] < 0.5
    assert change["caci"] > 0.6


def test_blank_model_has_rqi_zero(cohort):
    blank = np.zeros_like(cohort["unseen"])
    assert normative.rqi(cohort["unseen"], blank, normative.ssim_distance) == pytest.approx(0.0)


def test_blurring_lowers_rqi_step_by_step(cohort):
    values = [normative.rqi(cohort["unseen"], ndimage.gaussian_filter(cohort["unseen"], (0, s, s)),
                            normative.ssim_distance) for s in (0.5, 1.0, 2.0, 4.0)]
    assert 1.0 > values[0] > values[1] > values[2] > values[3] > 0.0


def test_indices_name_variants_and_leave_missing_standard_ones_empty(cohort):
    c = cohort
    sets = normative.SliceSets(c["unseen"], c["unseen"], c["reference"], c["pathological"], c["unseen"])
    out = normative.indices(sets, [0.5, None, 0.7], distance=None, features=None)
    assert out["RQI"] is None and out["AHI"] is None and out["overall"] is None
    assert out["RQI-SSIM"] == pytest.approx(1.0) and out["AHI-HIST"] == pytest.approx(1.0)
    assert out["CACI"] == pytest.approx(0.6)
    assert out["overall-variants"] == pytest.approx((metrics.hmean(1.0, 0.6) + 1.0) / 2)


def test_report_without_standard_weights_says_which_file_is_missing(tmp_path, monkeypatch):
    from NormativeADLib.measures import perceptual
    from NormativeADLib.evaluation import report

    monkeypatch.setenv("NORMATIVEAD_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    if perceptual.lpips_available() or perceptual.inception_available():
        pytest.skip("an lpips package with its weights is installed here")
    messages = []
    distance, features, notes = report.standard_networks(None, messages.append)
    assert distance is None and features is None
    assert perceptual.FILES["alexnet"].filename in notes["lpips"]
    assert perceptual.FILES["inception"].filename in notes["inception"]
    assert len(messages) == 2


@needs_shared_data()
def test_report_command_on_real_scans(tmp_path):
    """Two shipped models, two unseen IXI scans, one MS case: the whole report is written."""
    manifest = tmp_path / "cases.json"
    cases = json.loads((REPO / "Resources" / "Cases" / "shared_dev.json").read_text())
    manifest.write_text(json.dumps([c for c in cases if c["name"] == "mslub_patient26"]))
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "NormativeADLib.cli", "report", "--models", "ae-ixi-t1", "vae-ixi-t1",
           "--healthy", str(SHARED_DATA / "healthy" / "ixi_t1"), "--pathology", str(manifest),
           "--root", str(SHARED_DATA), "--out", str(out), "--max-unseen", "2", "--max-reference", "2",
           "--device", "cpu"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert [m["model"]["id"] for m in report["models"]] == ["ae-ixi-t1", "vae-ixi-t1"]
    split = json.loads((REPO / "Resources" / "Splits" / "ixi_t1.json").read_text())
    assert all(name.split("-")[0] in split["validation"] for name in report["healthy"]["unseen"])
    for row in report["models"]:
        idx = row["indices"]
        assert 0 < idx["RQI-SSIM"] < 1
        assert 0 <= idx["CACI"] <= 1
        assert row["n_slices"]["pathological"] > 0
    for name in ("report.html", "report.csv", "indices.png", "examples_ae-ixi-t1.png", "examples_vae-ixi-t1.png"):
        assert (out / name).stat().st_size > 0
    assert "RQI-SSIM" in (out / "report.html").read_text()


def test_case_manifest_needs_a_reference_for_every_case(tmp_path):
    from NormativeADLib.core.errors import InputError
    from NormativeADLib.evaluation.evaluate import read_manifest

    (tmp_path / "cases.json").write_text(json.dumps([{"name": "a", "scan": "a.nii.gz"}]))
    with pytest.raises(InputError, match="case a .* has no reference"):
        read_manifest(tmp_path)  # a folder holding cases.json
    with pytest.raises(InputError, match="no case manifest"):
        read_manifest(tmp_path / "none.json")
