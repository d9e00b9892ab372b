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


def _user_model(source_id: str, new_id: str, auprc_by_contrast: dict, contrasts: tuple = ()) -> None:
    """A copy of a shipped weightless model in the user's models, with evaluation figures as given
    (and the contrasts it was trained for, when given)."""
    from NormativeADLib.card import write_card
    from NormativeADLib.paths import home

    card = catalogue.get_card(source_id)
    cases = [{"case": f"case_{c}", "contrast": c, "auprc": a} for c, a in auprc_by_contrast.items()]
    folder = home() / "models" / new_id
    folder.mkdir(parents=True)
    write_card(card.replace(id=new_id, figures={"evaluation": {"cases": cases}}, contrasts=contrasts or card.contrasts),
               folder)


def test_the_default_model_is_the_best_measured_for_the_scan_contrast(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMATIVEAD_HOME", str(tmp_path / "home"))
    measured = {c: max(filter(None, (catalogue.measured_auprc(card, c) for card in catalogue.list_models())),
                       default=0.0) for c in CONTRASTS}
    _user_model("intensity-t1", "better-on-t2", {"T2": measured["T2"] + 0.1, "FLAIR": 0.0})
    assert catalogue.default_model("T2") == "better-on-t2"
    assert catalogue.default_model("FLAIR") != "better-on-t2"
    assert catalogue.default_model(None) != "better-on-t2"  # not measured in every contrast
    _user_model("intensity-t1", "measured-everywhere", {c: 1.0 for c in CONTRASTS})
    assert catalogue.default_model(None) != "measured-everywhere"  # trained for T1 only
    _user_model("intensity-t1", "better-everywhere", {c: 1.0 for c in CONTRASTS}, contrasts=CONTRASTS)
    assert catalogue.default_model(None) == "better-everywhere"


def test_restore_without_a_model_takes_the_default_for_the_scan_contrast(tmp_path, capsys):
    flair = SAMPLE / "mslub_patient26_flair.nii.gz"
    out = tmp_path / "out"
    assert main(["restore", str(flair), "--out", str(out), "--progress", "none"]) == 0
    model = json.loads((out / "metrics.json").read_text())["model"]["id"]
    assert model == catalogue.default_model("FLAIR")
