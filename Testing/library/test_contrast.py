"""The scan's contrast: stated (--contrast), read from the file name, or assumed; a model outside its contrasts warns."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from testsupport import SAMPLE, SHARED_DATA, needs_shared_data
from NormativeADLib.core import catalogue
from NormativeADLib import io
from NormativeADLib.core.card import ModelCard
from NormativeADLib.core.errors import InputError
from NormativeADLib.core.grid import ModelGrid
from NormativeADLib.pipeline.contrast_check import check_contrast
from NormativeADLib.pipeline.preprocess import prepare
from NormativeADLib.cli import main
from NormativeADLib.core.options import CONTRASTS, RestoreOptions, canonical_contrast, guess_contrast


@pytest.mark.parametrize("name, contrast", [
    ("mslub_patient26_flair.nii.gz", "FLAIR"), ("sub-01_FLAIR.nii.gz", "FLAIR"), ("sub-01_T1w.nii.gz", "T1"),
    ("sub-01_ce-gd_T1w.nii.gz", "T1c"), ("t1c.nii.gz", "T1c"), ("brats_t1ce.nii", "T1c"), ("t1post.nii.gz", "T1c"),
    ("IXI013-HH-1212_T1.nii.gz", "T1"), ("sub-01_T2w.nii.gz", "T2"), ("input.nrrd", None), ("scan.nii.gz", None),
    ("sub-01_acq-t2star.nii.gz", None),
])
def test_contrast_from_the_file_name(name, contrast):
    assert guess_contrast(name) == contrast


def test_contrast_spellings():
    assert [canonical_contrast(c.lower()) for c in CONTRASTS] == list(CONTRASTS)
    with pytest.raises(ValueError, match="T1, T1c, T2, FLAIR"):
        canonical_contrast("PD")
    assert RestoreOptions("a.nii", "out", contrast="T2").arguments()[-2:] == ["--contrast", "T2"]


def test_every_shipped_card_lists_its_contrasts():
    cards, broken = catalogue.scan_models()
    assert not broken
    for card in cards:
        assert card.trained_contrasts and set(card.trained_contrasts) <= set(CONTRASTS), card.id
        # a study model is evaluated on sets of contrasts, written "FLAIR+T1"
        assert {c for s in card.evaluated_contrasts for c in s.split("+")} <= set(CONTRASTS), card.id
        again = ModelCard.from_dict(json.loads(json.dumps(card.to_dict())))
        assert again.trained_contrasts == card.trained_contrasts
        assert again.evaluated_contrasts == card.evaluated_contrasts


def test_a_model_outside_its_contrasts_runs_and_warns(tmp_path, capsys):
    flair = SAMPLE / "mslub_patient26_flair.nii.gz"
    out = tmp_path / "out"
    assert main(["restore", str(flair), "--model", "intensity-t1", "--out", str(out), "--progress", "none"]) == 0
    captured = capsys.readouterr()
    assert "scan contrast FLAIR (from the file name); model trained for T1" in captured.out
    assert "warning: model intensity-t1 was trained for T1, not FLAIR" in captured.err
    stated = json.loads((out / "metrics.json").read_text())["contrast"]
    assert stated["scan"] == "FLAIR" and stated["warning"]


def test_a_stated_contrast_wins_and_a_wrong_one_is_refused(tmp_path, capsys):
    flair = SAMPLE / "mslub_patient26_flair.nii.gz"
    # FLAIR has dark CSF like T1: stating T2 (bright CSF) contradicts the scan itself
    code = main(["restore", str(flair), "--model", "intensity-t2", "--contrast", "t2", "--out", str(tmp_path / "o"),
                 "--progress", "none"])
    assert code == 2
    assert "does not look like T2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["restore", str(flair), "--contrast", "PD", "--out", str(tmp_path / "p")])


def _user_model(source_id: str, new_id: str, dice_by_contrast: dict, contrasts: tuple = (),
                restores: bool = True) -> None:
    """A copy of a shipped weightless model in the user's models, with synthetic-validation Dice at its
    default policy as given (and the contrasts it was trained for, when given), and restoration figures
    that pass the restorer checks (or fail them: restores=False)."""
    from NormativeADLib.core.card import write_card
    from NormativeADLib.core.locations import home

    card = catalogue.get_card(source_id)
    removal, ratio = (0.6, 3.0) if restores else (0.0, 1.0)
    per_contrast = {c: {"dice": {card.default_threshold: d}, "ssim": 0.95, "removal": removal,
                        "residual_contrast": ratio} for c, d in dice_by_contrast.items()}
    folder = home() / "models" / new_id
    folder.mkdir(parents=True)
    record = {"version": catalogue.SYNTHETIC_VALIDATION_VERSION, "per_contrast": per_contrast}
    write_card(card.replace(id=new_id, figures={"synthetic_validation": record},
                            contrasts=contrasts or card.contrasts), folder)


def test_the_default_model_is_the_best_measured_for_the_scan_contrast(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMATIVEAD_HOME", str(tmp_path / "home"))
    measured = {c: max(filter(None, (catalogue.synthetic_dice(card, c) for card in catalogue.list_models())),
                       default=0.0) for c in CONTRASTS}
    _user_model("intensity-t1", "better-on-t2", {"T2": measured["T2"] + 0.1, "FLAIR": 0.0}, contrasts=("T2", "FLAIR"))
    assert catalogue.default_model("T2") == "better-on-t2"
    assert catalogue.default_model("FLAIR") != "better-on-t2"
    assert catalogue.default_model(None) != "better-on-t2"  # not measured in every contrast
    _user_model("intensity-t1", "measured-everywhere", {c: 1.0 for c in CONTRASTS})
    assert catalogue.default_model(None) != "measured-everywhere"  # trained for T1 only
    _user_model("intensity-t1", "better-everywhere", {c: 1.0 for c in CONTRASTS}, contrasts=CONTRASTS)
    assert catalogue.default_model(None) == "better-everywhere"


def test_a_model_that_restores_comes_before_a_better_detector_that_does_not(tmp_path, monkeypatch):
    from NormativeADLib.core.locations import home

    monkeypatch.setenv("NORMATIVEAD_HOME", str(tmp_path / "home"))
    _user_model("intensity-t1", "detector", {"T2": 0.8}, contrasts=("T2",), restores=False)
    _user_model("intensity-t1", "restorer", {"T2": 0.45}, contrasts=("T2",))
    _user_model("intensity-t1", "detector-far-better", {"T2": 1.0}, contrasts=("T2",), restores=False)
    # the rule among these three alone, whatever the shipped models measure
    monkeypatch.setattr(catalogue, "model_roots", lambda: [home() / "models"])
    assert catalogue.get_card("restorer").restores and not catalogue.get_card("detector").restores
    assert catalogue.default_model("T2") == "detector-far-better"  # the restorer finds less than half as much
    (home() / "models" / "detector-far-better" / "card.json").unlink()
    assert catalogue.default_model("T2") == "restorer"  # 0.45 is more than half of the detector's 0.8


def test_restore_without_a_model_takes_the_default_for_the_scan_contrast(tmp_path, capsys):
    flair = SAMPLE / "mslub_patient26_flair.nii.gz"
    out = tmp_path / "out"
    assert main(["restore", str(flair), "--out", str(out), "--progress", "none"]) == 0
    model = json.loads((out / "metrics.json").read_text())["model"]["id"]
    assert model == catalogue.default_model("FLAIR")


BRATS_CASES = [(case, contrast) for case in ("pat0005", "pat0002") for contrast in ("t1c", "flair")]


def _planted_tumour(scan, brain: np.ndarray, contrast: str):
    """The scan with a tumour of a quarter of the brain's volume in one hemisphere: on T1c an enhancing
    rim (brighter than any tissue) round a dark necrotic core, on FLAIR bright oedema throughout."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(scan).astype(np.float32)
    spacing = np.array(scan.GetSpacing()[::-1])
    zyx = np.argwhere(brain)
    centre = zyx.mean(0)
    centre[2] += 0.25 * np.ptp(zyx[:, 2])  # off the midline, into one hemisphere
    distance = np.sqrt((((np.indices(array.shape).T - centre) * spacing) ** 2).sum(-1)).T
    order = np.sort(distance[brain])
    radius = order[len(order) // 4]  # the sphere about that centre holding a quarter of the brain
    tumour = brain & (distance <= radius)
    values = array[brain]
    if contrast == "t1c":
        array[tumour & (distance > 0.7 * radius)] = 1.3 * np.percentile(values, 99.5)
        array[tumour & (distance <= 0.7 * radius)] = np.percentile(values, 5)
    else:
        array[tumour] = 1.3 * np.percentile(values, 99)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(scan)
    return out, tumour.sum() / brain.sum()


@needs_shared_data()
@pytest.mark.parametrize("case, contrast", BRATS_CASES)
def test_a_large_tumour_does_not_make_a_valid_scan_look_like_another_contrast(case, contrast):
    """A quarter of the brain replaced by tumour moves the whole-brain template correlation towards 0
    (an independent T1c with 217 mL of tumour was refused on it); the check rests on the medians of
    white matter and CSF in the clearer hemisphere, which the tumour moves less: the scan runs (at most
    with a warning that its contrast is unclear), its tissue contrast still on the stated side."""
    import SimpleITK as sitk

    folder = SHARED_DATA / "pathology" / "brats2013" / case
    scan = io.read_scan(folder / f"{contrast}.nii.gz")
    brain_image = sitk.Cast(sitk.ReadImage(str(folder / "brainmask.nii.gz")) > 0.5, sitk.sitkUInt8)
    brain = sitk.GetArrayFromImage(brain_image) > 0
    planted, share = _planted_tumour(scan, brain, contrast)
    assert 0.22 < share < 0.28
    name = "T1c" if contrast == "t1c" else "FLAIR"
    before = check_contrast(prepare(scan, ModelGrid(), brain_image), name)
    after = check_contrast(prepare(planted, ModelGrid(), brain_image), name)  # no InputError: it runs
    assert before["warning"] is None and before["tissue_contrast"] > 0.1
    assert after["tissue_contrast"] > 0, after
    # the planted tumour does move the correlation the old check decided on
    assert after["template_correlation"] < before["template_correlation"]


def test_an_inverted_scan_is_refused_and_weak_evidence_only_warns():
    flair = io.read_scan(SAMPLE / "mslub_patient26_flair.nii.gz")
    prepared = prepare(flair, ModelGrid())
    assert check_contrast(prepared, "FLAIR")["warning"] is None
    with pytest.raises(InputError, match="does not look like FLAIR"):
        check_contrast(replace(prepared, image=np.where(prepared.brain, 1 - prepared.image, 0)), "FLAIR")
    flat = replace(prepared, image=np.where(prepared.brain, 0.5, 0).astype(np.float32))
    assert "contrast is unclear" in check_contrast(flat, "FLAIR")["warning"]
