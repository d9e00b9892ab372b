"""Preprocessing of any contrast from another scanner, and the registration check that stops a bad one."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk

from testsupport import SHARED_DATA, needs_shared_data
from NormativeADLib.pipeline import contrast_check, preprocess
from NormativeADLib.core.catalogue import DEFAULT_MODEL, get_card
from NormativeADLib.cli import main

TCGA = SHARED_DATA / "pathology" / "tcga-fg-6692"
# Dice of our brain mask against the folder's HD-BET mask of the T1c, resampled onto each contrast's grid.
# Measured 0.83 / 0.88 / 0.85 / 0.74: the contrasts are separate acquisitions (the patient moves between
# them, so the T1c's mask does not quite fit the FLAIR), the registration is affine and the 5.5 mm slices
# blur the brain's edge.
MIN_DICE = {"t1": 0.78, "t1c": 0.83, "t2": 0.80, "flair": 0.70}


def _grid():
    return get_card(DEFAULT_MODEL).grid


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _shifted(prepared: preprocess.Prepared, mm: float) -> preprocess.Prepared:
    moved = sitk.AffineTransform(prepared.transform)
    moved.SetTranslation(np.asarray(prepared.transform.GetTranslation()) + [0.0, mm, 0.0])
    return dataclasses.replace(prepared, transform=moved)


@needs_shared_data()
@pytest.mark.parametrize("contrast", list(MIN_DICE))
def test_whole_head_clinical_scan_gets_a_brain_mask_in_every_contrast(contrast):
    scan = sitk.ReadImage(str(TCGA / f"{contrast}.nii.gz"), sitk.sitkFloat32)
    reference = sitk.Resample(sitk.ReadImage(str(TCGA / "brainmask_t1c_hdbet.nii.gz")), scan, sitk.Transform(),
                              sitk.sitkNearestNeighbor, 0)
    prepared = preprocess.prepare(scan, _grid())
    assert prepared.mask_source == "template"
    ours = sitk.GetArrayFromImage(prepared.native_brain) > 0
    assert _dice(ours, sitk.GetArrayFromImage(reference) > 0) >= MIN_DICE[contrast]
    assert preprocess.check_registration(prepared) >= preprocess.QC_MIN_OVERLAP


@needs_shared_data()
def test_ixi_whole_head_t1_registers_as_before():
    """The training site's scans keep the tight tissue core (not the clinical fallback) and fit the template."""
    scan = sitk.ReadImage(str(sorted((SHARED_DATA / "healthy" / "ixi_t1").glob("*.nii.gz"))[0]), sitk.sitkFloat32)
    core_ml = sitk.GetArrayFromImage(preprocess.crude_brain_mask(scan)).sum() * np.prod(scan.GetSpacing()) / 1000
    assert 900 < core_ml < 2000
    prepared = preprocess.prepare(scan, _grid())
    assert preprocess.registration_qc(prepared) > 0.99
    assert contrast_check.template_correlation(prepared) > 0.25  # T1 scans: +0.24..+0.60
    assert 1400 < prepared.brain.sum() * _grid().spacing_mm ** 3 / 1000 < 2000  # in MNI space (template 1.8 L)


def test_the_training_cache_registers_a_scan_the_same_way_twice(sample_scan):
    """The training cache's brain masks place every synthetic anomaly of the validation that chooses the
    defaults: prepared again, a scan must come out the same (on several threads the registration ends a
    little differently each run, and the sample T1's brain mask moved by 80-90 voxels)."""
    scan = sitk.ReadImage(str(sample_scan), sitk.sitkFloat32)
    with preprocess.reproducible_registration():
        first, second = (preprocess.prepare(scan, _grid()) for _ in range(2))
    assert first.transform.GetParameters() == second.transform.GetParameters()
    assert np.array_equal(first.brain, second.brain) and np.array_equal(first.image, second.image)
    assert preprocess.REGISTRATION_THREADS == 0  # runs go back to every core


def test_registration_check_stops_a_misregistered_case(sample_scan):
    prepared = preprocess.prepare(sitk.ReadImage(str(sample_scan), sitk.sitkFloat32), _grid())
    assert preprocess.check_registration(prepared) > 0.99
    assert preprocess.registration_qc(_shifted(prepared, 10.0)) < 1.0  # the number follows the error
    with pytest.raises(preprocess.InputError, match="--mask.*--transform"):
        preprocess.check_registration(_shifted(prepared, 30.0))


def test_cli_refuses_a_transform_that_misses_the_brain_and_writes_nothing(sample_scan, tmp_path, capsys):
    prepared = preprocess.prepare(sitk.ReadImage(str(sample_scan), sitk.sitkFloat32), _grid())
    wrong = tmp_path / "wrong.tfm"
    sitk.WriteTransform(_shifted(prepared, 30.0).transform, str(wrong))
    out = tmp_path / "out"
    code = main(["restore", str(sample_scan), "--model", "intensity-t1", "--transform", str(wrong),
                 "--out", str(out), "--progress", "none"])
    assert code == 2
    err = capsys.readouterr().err
    assert "registration to the MNI152 template failed its check" in err and "--mask" in err
    assert not out.exists()


def test_outputs_carry_the_registration_number_and_figure(sample_scan, tmp_path):
    out = tmp_path / "out"
    assert main(["restore", str(sample_scan), "--model", "intensity-t1", "--out", str(out), "--progress", "none"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["registration_qc"] >= preprocess.QC_MIN_OVERLAP
    assert (out / "registration.png").stat().st_size > 10_000
