"""Hostile and careless inputs to the surfaces beyond `restore` (the restore corpus is test_hostile_inputs.py):
model import, model cards, batch manifests and BIDS folders, site calibration, transforms, thresholds
and JSON output. Each must be refused with one line naming what is wrong, before any work, and must
neither write outside its folder nor delete anything there; a folder planted as a victim beside the
models folder or the batch output must survive every attempt unchanged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import SimpleITK as sitk

from NormativeADLib.core import catalogue, jsontext, locations, writes
from NormativeADLib.core.card import card_problem, sha256
from NormativeADLib.cli import main
from NormativeADLib.core.errors import InputError

SHIPPED = locations.resources_dir() / "Models"
WEIGHTED = "sadm-synth"  # a small shipped model with weights


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A user folder of its own, and a victim folder beside its models that nothing may touch."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("the user's data")
    monkeypatch.setenv("NORMATIVEAD_HOME", str(home))
    return home


def victim_intact(home: Path) -> bool:
    victim = home.parent / "victim"
    return victim.is_dir() and (victim / "precious.txt").read_text() == "the user's data"


def model_folder(tmp_path: Path, name: str = "model", **changes) -> Path:
    """A copy of a shipped model folder whose card has the changes (None removes a field)."""
    folder = tmp_path / name
    shutil.copytree(SHIPPED / WEIGHTED, folder)
    card = json.loads((folder / "card.json").read_text())
    for key, value in changes.items():
        if value is None:
            card.pop(key, None)
        else:
            card[key] = value
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def refused(capsys, argv: list, code: int, fragment: str) -> str:
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fragment.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.mark.parametrize("bad_id", ["../../../victim", "../victim", "/tmp/absolute", "", ".", "..", "a/b",
                                    "x" * 200, 12345, None])
def test_import_refuses_an_id_that_is_not_a_plain_name(home, tmp_path, capsys, bad_id):
    folder = model_folder(tmp_path, id=bad_id)
    before = sorted(p.name for p in (home / "models").iterdir())
    refused(capsys, ["models", "import", folder, "--overwrite"], 3, "id")
    assert sorted(p.name for p in (home / "models").iterdir()) == before
    assert victim_intact(home)
    assert not (tmp_path / "absolute").exists()


@pytest.mark.parametrize("weights, fragment", [
    ({"file": "../outside.safetensors", "sha256": "0" * 64}, "weights.file"),
    ({"file": "/etc/passwd", "sha256": "0" * 64}, "weights.file"),
    (["weights.safetensors"], "'weights' must be a dict"),
    ({"file": "weights.safetensors", "sha256": "short"}, "weights.sha256"),
])
def test_import_refuses_weights_outside_the_folder_or_malformed(home, tmp_path, capsys, weights, fragment):
    folder = model_folder(tmp_path, weights=weights)
    refused(capsys, ["models", "import", folder], 3, fragment)
    assert not any((home / "models").iterdir())
    assert not (tmp_path / "outside.safetensors").exists()


def test_import_refuses_links_and_copies_files(home, tmp_path, capsys):
    folder = model_folder(tmp_path)
    weights = folder / "weights.safetensors"
    target = tmp_path / "elsewhere.safetensors"
    shutil.move(weights, target)
    weights.symlink_to(target)
    refused(capsys, ["models", "import", folder], 3, "symbolic link")
    weights.unlink()
    shutil.move(target, weights)
    assert main(["models", "import", str(folder)]) == 0
    imported = home / "models" / WEIGHTED
    assert sorted(p.name for p in imported.iterdir()) == ["card.json", "weights.safetensors"]
    assert not any(p.is_symlink() for p in imported.iterdir())
    # --overwrite replaces that model's folder only
    assert main(["models", "import", str(folder), "--overwrite"]) == 0
    assert victim_intact(home)


def test_import_without_a_folder_says_so(home, capsys):
    refused(capsys, ["models", "import"], 2, "give the model folder")


@pytest.mark.parametrize("changes, fragment", [
    ({"thresholds": {"comp10": "high"}}, "thresholds.comp10"),
    ({"grid": {"spacing_mm": 2.0, "size_xyz": [1000000, 96, 80], "origin_lps": [0, 0, 0]}}, "grid.size_xyz"),
    ({"network": {"channels": [16, 10000000], "strides": [2]}}, "network.channels"),
    ({"colour": "red"}, "unknown field(s) colour"),
    ({"format": 4}, "card format 4 is newer"),
    ({"postprocess": {"mirror": "yes"}}, "postprocess.mirror"),
    ({"postprocess": {"blur": 2}}, "postprocess.blur"),
    ({"format": "1"}, "'format' must be a int"),
    ({"family": None}, "'family' is missing"),
])
def test_a_bad_card_is_refused_on_import_and_never_takes_the_list_down(home, tmp_path, capsys, changes, fragment):
    folder = model_folder(tmp_path, **changes)
    refused(capsys, ["models", "import", folder], 3, fragment)
    # the same card already in the user's models (copied by hand): listed as broken, the others still listed
    shutil.copytree(folder, home / "models" / "broken-one")
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "broken" in listing and fragment.split("(")[0].strip("'") in listing
    assert WEIGHTED in listing and "intensity-flair" in listing


def test_every_shipped_card_meets_the_schema():
    for folder in sorted(SHIPPED.iterdir()):
        assert card_problem(json.loads((folder / "card.json").read_text())) is None, folder.name


def test_a_written_card_records_its_format_and_reads_back_the_same(tmp_path):
    from NormativeADLib.core.card import CARD_FORMAT, read_card, write_card

    card = read_card(SHIPPED / WEIGHTED)
    assert card.format <= CARD_FORMAT  # a card of format 1 need not say so
    write_card(card, tmp_path)
    assert json.loads((tmp_path / "card.json").read_text())["format"] == CARD_FORMAT
    assert read_card(tmp_path).replace(folder=None) == card.replace(folder=None, format=CARD_FORMAT)


def test_a_default_policy_per_contrast_is_read_checked_and_used(tmp_path):
    from NormativeADLib.core.card import card_problem, read_card, write_card

    card = read_card(SHIPPED / WEIGHTED).replace(contrast_thresholds={"T2": "fpr1"})
    write_card(card, tmp_path)
    again = read_card(tmp_path)
    assert again.default_for("t2") == "fpr1" and again.default_for("T1") == again.default_threshold
    assert again.default_for(None) == again.default_threshold
    d = json.loads((tmp_path / "card.json").read_text())
    assert "contrast_thresholds.T2" in card_problem({**d, "contrast_thresholds": {"T2": 3}})


@pytest.mark.parametrize("subject", ["../../../victim2", "/tmp/abs", "..", "a/b"])
def test_a_manifest_subject_cannot_leave_the_output_folder(tmp_path, subject):
    from NormativeADLib.cohort.inputs import read_manifest

    manifest = tmp_path / "cohort.csv"
    manifest.write_text(f"scan,subject\nscan.nii.gz,{subject}\n")
    with pytest.raises(InputError, match="subject"):
        read_manifest(manifest)


def test_batch_outputs_never_land_outside_out(tmp_path):
    from NormativeADLib.cohort.inputs import Case
    from NormativeADLib.cohort.outputs import Layout

    layout = Layout(tmp_path / "out")
    staging = tmp_path / "out" / ".normativead-staging" / "x"
    staging.mkdir(parents=True)
    for name in layout.names:
        (staging / name).write_text("x")
    victim = tmp_path / "victim2"
    victim.mkdir()
    with pytest.raises(InputError, match="outside"):
        layout.commit(staging, Case("../../victim2", tmp_path / "scan.nii.gz"), "intensity-t1")
    assert victim.is_dir() and not any(victim.iterdir())


@pytest.mark.parametrize("text", ["{not json", "", "[]", '{"Name": "no version"}'])
def test_a_broken_bids_description_is_refused(tmp_path, text):
    pytest.importorskip("bids", reason="the batch extra (pybids) is not installed")
    from NormativeADLib.cohort.inputs import read_bids

    (tmp_path / "dataset_description.json").write_text(text)
    with pytest.raises(InputError, match="dataset_description.json"):
        read_bids(tmp_path)


@pytest.mark.parametrize("site, fragment", [("", "not a valid name"), ("a/b", "not a valid name"),
                                            ("..", "not a valid name")])
def test_calibrate_as_a_bad_site_is_refused_before_loading(home, tmp_path, capsys, site, fragment):
    refused(capsys, ["calibrate", "--model", "intensity-t1", "--data", tmp_path, "--as", site], 2, fragment)
    assert not any((home / "models").iterdir())


@pytest.mark.parametrize("make, fragment", [
    (lambda: sitk.AffineTransform(2), "2D AffineTransform"),
    (lambda: sitk.BSplineTransformInitializer(sitk.Image([8, 8, 8], sitk.sitkFloat32), [3, 3, 3]), "BSplineTransform"),
])
def test_a_transform_that_is_not_a_3d_affine_is_refused(tmp_path, make, fragment):
    from NormativeADLib.io import read_transform

    path = tmp_path / "t.tfm"
    sitk.WriteTransform(make(), str(path))
    with pytest.raises(InputError, match=fragment):
        read_transform(path)


@pytest.mark.parametrize("value", ["-0", "0", "1e-320", "-1"])
def test_a_threshold_that_would_flag_the_whole_brain_is_refused(value):
    from NormativeADLib.core.options import resolve_threshold

    with pytest.raises(InputError, match="at least"):
        resolve_threshold(value, {"z2": 2.0})


def test_json_output_is_strict():
    text = jsontext.dumps({"psnr": float("inf"), "nested": [float("nan"), 1.5]})
    assert json.loads(text) == {"psnr": None, "nested": [None, 1.5]}
    assert "Infinity" not in text and "NaN" not in text


def test_checked_name_is_the_one_gate():
    assert locations.checked_name("ae-ixi-t1@site_2", "id") == "ae-ixi-t1@site_2"
    for bad in ("", ".", "..", "a/b", "a\\b", "..hidden", " lead", "x" * 129, "a\0b"):
        with pytest.raises(InputError):
            locations.checked_name(bad, "id")
    assert locations.child_path("/models", "ok", "id") == Path("/models/ok")


def test_weights_hash_is_checked_on_import(home, tmp_path, capsys):
    folder = model_folder(tmp_path)
    (folder / "weights.safetensors").write_bytes(b"not the weights")
    assert sha256(folder / "weights.safetensors") != catalogue.get_card(WEIGHTED).weights["sha256"]
    refused(capsys, ["models", "import", folder], 3, "do not match")


def test_a_full_disk_is_reported_before_any_work(sample_scan, tmp_path, capsys, monkeypatch):
    """Less free space than the scan's own file size (what the pseudo-healthy image alone takes):
    refused by the up-front checks, before the model loads, with the space needed and free."""
    monkeypatch.setattr(writes, "_free_bytes", lambda folder: 1000)
    line = refused(capsys, ["restore", sample_scan, "--out", tmp_path / "out", "--progress", "none"], 4,
                   "no space left on the device of")
    assert "need at least" in line and "free" in line
    assert not (tmp_path / "out").exists()
