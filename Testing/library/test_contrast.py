"""The scan's contrast: stated (--contrast), read from the file name, or assumed; a model outside its contrasts warns."""

from __future__ import annotations

import json

import pytest

from conftest import SAMPLE
from NormativeADLib import catalogue
from NormativeADLib.card import ModelCard
from NormativeADLib.cli import main
from NormativeADLib.options import CONTRASTS, RestoreOptions, canonical_contrast, guess_contrast


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
        assert set(card.evaluated_contrasts) <= set(CONTRASTS), card.id
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
