"""`normativead train` end to end on a few real healthy scans: a loadable, verified, calibrated model."""

import json

import numpy as np
import pytest

from testsupport import SHARED_DATA, needs_shared_data
from NormativeADLib.core import catalogue, locations
from NormativeADLib import cli
from NormativeADLib.training import data
from NormativeADLib.models import registry
from NormativeADLib.core.card import read_card, sha256
from NormativeADLib.core.errors import InputError


@needs_shared_data()
def test_train_writes_a_calibrated_model_that_the_registry_loads(tmp_path, capsys):
    split = data.load_split(locations.resources_dir() / "Splits" / "ixi_t1.json")
    tiny = {"train": list(split.train[:2]), "validation": list(split.validation[:1]),
            "calibration": list(split.calibration[:2])}
    (tmp_path / "split.json").write_text(json.dumps(tiny))
    config = json.loads((locations.resources_dir() / "Configs" / "ae_small.json").read_text())
    config["id"] = "ae-test"
    (tmp_path / "config.json").write_text(json.dumps(config))
    out = locations.home() / "models" / "ae-test"
    code = cli.main(["train", "--config", str(tmp_path / "config.json"), "--data",
                     str(SHARED_DATA / "healthy" / "ixi_t1"), "--split", str(tmp_path / "split.json"),
                     "--epochs", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    model = registry.load_model("ae-test")
    card = model.card
    assert card.weights["sha256"] == sha256(out / "weights.safetensors")
    assert set(card.thresholds) == {"fpr1", "fpr5", "fpr10", "comp10"}
    assert len(card.healthy_case_scores) == 2
    assert card.training["epochs_run"] == 1 and "--epochs 1" in card.training["command"]
    epoch_seconds = [h["seconds"] for h in card.training["history"]]  # summed over runs when resumed
    assert epoch_seconds[0] > 0 and card.training["seconds"] == round(sum(epoch_seconds))
    assert card.training["subjects"] == tiny  # what a report must never restore
    # the split states neither its data nor their licence: the card says so rather than guess
    assert (card.training["data"], card.training["licence"]) == (data.NOT_RECORDED, data.NOT_RECORDED)
    assert np.isfinite(card.figures["healthy_validation"]["ssim"])
    # the same command again refuses to replace the model
    assert cli.main(["train", "--config", str(tmp_path / "config.json"), "--data",
                     str(SHARED_DATA / "healthy" / "ixi_t1"), "--split", str(tmp_path / "split.json"),
                     "--epochs", "1", "--out", str(out)]) == 2
    assert not list(out.parent.glob(".ae-test-*")), "staging folder left behind"
    recalibrate_restores_the_thresholds_and_drops_stale_figures(out, capsys)
    training_goes_on_from_an_installed_model(tmp_path, capsys)


def training_goes_on_from_an_installed_model(tmp_path, capsys):
    """--init-from: the weights of an installed model are the start, and the card says which; a model of
    another family or network is refused before any scan is prepared."""
    common = ["train", "--config", str(tmp_path / "config.json"), "--data", str(SHARED_DATA / "healthy" / "ixi_t1"),
              "--split", str(tmp_path / "split.json"), "--epochs", "1"]
    refused = locations.home() / "models" / "ae-refused"
    assert cli.main(common + ["--init-from", "dae-synth", "--out", str(refused)]) == 2
    assert "--init-from dae-synth" in capsys.readouterr().err and not refused.exists()
    source = catalogue.get_card("ae-test")
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "id": "ae-test-longer"}))
    out = locations.home() / "models" / "ae-test-longer"
    assert cli.main(common + ["--init-from", "ae-test", "--out", str(out)]) == 0, capsys.readouterr().err
    lineage = registry.load_model("ae-test-longer").card.training["initialised_from"]
    assert lineage["id"] == "ae-test" and lineage["sha256"] == source.weights["sha256"]
    assert lineage["epochs_run"] == 1 and lineage["command"] == source.training["command"]


def recalibrate_restores_the_thresholds_and_drops_stale_figures(out, capsys):
    """`normativead calibrate`: same weights, same subjects, same thresholds; figures measured at
    other thresholds leave the card."""
    from NormativeADLib.core.card import write_card

    card = catalogue.get_card("ae-test")
    stale = card.replace(thresholds={k: v * 3 for k, v in card.thresholds.items()},
                         figures={**card.figures, "evaluation": {"threshold": "fpr5", "cases": []}})
    write_card(stale, out)
    code = cli.main(["calibrate", "--model", "ae-test", "--data", str(SHARED_DATA / "healthy" / "ixi_t1")])
    assert code == 0, capsys.readouterr().err
    again = catalogue.get_card("ae-test")
    for name, value in card.thresholds.items():
        assert again.thresholds[name] == pytest.approx(value, rel=1e-4)
    assert "evaluation" not in again.figures
    assert again.figures["calibration"]["command"].startswith("normativead calibrate --model ae-test")
    assert again.weights == card.weights and again.training == card.training


def test_shipped_split_is_the_one_split_subjects_makes():
    """The split file says it was made by data.split_subjects: making it again gives the same split."""
    split = data.load_split(locations.resources_dir() / "Splits" / "ixi_t1.json")
    subjects = [*split.train, *split.validation, *split.calibration]
    assert data.split_subjects(reversed(subjects), n_validation=15, n_calibration=25, seed=0) == split


def test_a_split_states_the_data_and_licence_a_card_records(tmp_path):
    """The shipped split file is the one place the IXI data and their licence are written; a split that
    states neither reads as not recorded; a shorter training list (train_subjects) keeps them."""
    from dataclasses import replace

    shipped = json.loads((locations.resources_dir() / "Splits" / "ixi_t1.json").read_text())
    split = data.load_split(locations.resources_dir() / "Splits" / "ixi_t1.json")
    assert split.licence == shipped["licence"] and split.licence.startswith("CC BY-SA 3.0")
    assert split.data == shipped["data"] and split.data.startswith("IXI T1")
    assert replace(split, train=split.train[:2]).licence == split.licence
    bare = {k: shipped[k] for k in ("train", "validation", "calibration")}
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    custom = data.load_split(tmp_path / "bare.json")
    assert (custom.data, custom.licence) == (data.NOT_RECORDED, data.NOT_RECORDED)
    assert custom == split  # the same subjects: the same split, whatever it states about them


def test_shipped_cards_record_the_data_and_licence_their_split_states():
    """Every shipped model trained on the shipped split (all of its training subjects or the first n of
    them) records that split's data and licence."""
    split = data.load_split(locations.resources_dir() / "Splits" / "ixi_t1.json")
    cards = [read_card(f) for f in sorted((locations.resources_dir() / "Models").iterdir()) if (f / "card.json").is_file()]
    trained = [c for c in cards if c.weights and _trained_on(data.card_subjects(c), split)]
    assert len(trained) >= 10, f"only {len(trained)} shipped models trained on the shipped split"
    for card in trained:
        assert (card.training["data"], card.training["licence"]) == (split.data, split.licence), card.id


def _trained_on(subjects: data.Split, split: data.Split) -> bool:
    return (subjects.validation, subjects.calibration) == (split.validation, split.calibration) \
        and subjects.train == split.train[:len(subjects.train)]


def test_a_config_states_bias_correction_and_the_cache_keeps_it_apart():
    from NormativeADLib.core.grid import ModelGrid
    from NormativeADLib.training import train

    config = train.load_config("sadm_dae")
    assert not train.card_from_config(config).bias_correction
    config["intensity"]["bias_field"] = "n4"
    card = train.card_from_config(config)
    assert card.bias_correction and card.intensity["bias_field"] == "n4"
    config["intensity"]["bias_field"] = "N3"
    with pytest.raises(InputError, match="bias_field"):
        train.card_from_config(config)
    grid, percentiles = ModelGrid(), (1.0, 99.0)
    assert data.cache_key(grid, percentiles, True) != data.cache_key(grid, percentiles)
    assert data.cache_key(grid, percentiles, False) == data.cache_key(grid, percentiles)


def test_a_segmenter_starts_from_one_pinned_to_an_earlier_restorer():
    """--init-from takes the source's own weights (checked against its card) without building the source
    whole: a SADM segmenter trained on again over its restorer trained again (or over another restorer) starts
    from the version pinned to the restorer before, whose pin no longer matches the installed restorer."""
    import torch
    from NormativeADLib.training import train

    source = catalogue.get_card("sadm-dae")
    restorer = catalogue.get_card(source.network["restorer"])  # the installed one, whatever the source pins
    network = registry.build_network(source.replace(network={
        **source.network, "restorer_version": restorer.version, "restorer_sha256": restorer.weights["sha256"]}))
    from safetensors.torch import load_file
    from NormativeADLib.core.card import verify_weights

    saved = load_file(str(verify_weights(source)))
    retrained = {**source.network, "restorer_version": "9.9.9", "restorer_sha256": "0" * 64}
    lineage = train._start_from("sadm-dae", source.replace(network=retrained), network, lambda _: None)
    assert lineage["id"] == "sadm-dae" and lineage["sha256"] == source.weights["sha256"]
    for key, value in network.state_dict().items():
        assert torch.equal(value, saved[key]), key
    another = catalogue.get_card("dae-synth-weighted")  # another restorer of the same slices: a start too
    moved = {**source.network, "restorer": another.id, "restorer_version": another.version,
             "restorer_sha256": another.weights["sha256"]}
    moved_from = train._start_from("sadm-dae", source.replace(network=moved), network, lambda _: None)
    assert moved_from["id"] == "sadm-dae" and moved_from["restorer"] == source.network["restorer"]
    assert "restorer" not in lineage  # the same restorer (trained again): nothing to say
    other = {**retrained, "channels": [8, 16, 32, 64]}
    with pytest.raises(InputError, match="differ from the config"):
        train._start_from("sadm-dae", source.replace(network=other), network, lambda _: None)


def test_a_rule_model_is_not_calibrated_over_its_stated_thresholds(capsys):
    """The intensity baseline states its thresholds as z-scores; `calibrate` without --select-only replaced
    them with calibrated voxel rates (z2 gone, the demo's policy with it). It is refused before any scan is
    read, the card untouched."""
    before = catalogue.get_card("intensity-flair")
    code = cli.main(["calibrate", "--model", "intensity-flair", "--data", "/nonexistent"])
    assert code == 2
    assert "--select-only" in capsys.readouterr().err
    assert catalogue.get_card("intensity-flair").thresholds == before.thresholds == {"z2": 2.0, "z3": 3.0}
