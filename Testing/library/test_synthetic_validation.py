"""What a restorer must do, measured on synthetic anomalies, and the default policy chosen there
(NormativeADLib.training.synthetic_validation): checks that the identity, which restores nothing, fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from testsupport import SAMPLE
from NormativeADLib.core import catalogue
from NormativeADLib import io
from NormativeADLib.models import registry
from NormativeADLib.training import synthetic_validation as sv
from NormativeADLib.core.card import restorer_problems
from NormativeADLib.core.grid import ModelGrid
from NormativeADLib.pipeline.preprocess import prepare


@pytest.fixture(scope="module")
def volume():
    """The shipped sample T1 in model space (its few small MS lesions barely count next to 3 planted anomalies)."""
    prepared = prepare(io.read_scan(SAMPLE / "mslub_patient26_t1.nii.gz"), ModelGrid())
    return prepared.image, prepared.brain


def identity_of(model_id: str) -> registry.LoadedModel:
    """A model whose network returns its input: the restoration that removes nothing."""
    card = catalogue.get_card(model_id)
    return registry.LoadedModel(card, torch.nn.Identity())


def test_the_identity_fails_the_restorer_checks(volume):
    image, brain = volume
    figures = sv.measure(identity_of("ae-ixi-t1"), [image], [brain], ["T1"])
    t1 = figures["T1"]
    assert t1["ssim"] > 0.99 and t1["mae"] < 1e-6  # it keeps healthy tissue perfectly...
    assert abs(t1["removal"]) < 1e-6  # ...and removes nothing
    assert t1["residual_contrast"] is None  # its residual is 0 everywhere
    assert len(restorer_problems(figures)) == 2
    assert t1["flagged_ratio"] and not any(t1["flagged_ratio"].values())  # and flags none of the planted volume


def test_the_flagged_volume_is_read_against_the_planted_one():
    """Median of flagged / planted mL over the scans with anomalies, and over those carrying a tumour alone:
    a policy with Dice 0.4 may flag twice the anomaly or half of it, and only this figure says which."""
    def row(planted, flagged, tumour=False):
        return sv.ScanFigures(0.9, 0.1, 0.5, 2.0, {"p50": 0.4}, {"p50": 0.0}, planted, {"p50": flagged}, tumour)

    rows = [row(10.0, 20.0), row(10.0, 5.0), row(40.0, 10.0, tumour=True), row(0.0, 3.0)]
    assert sv._flagged_ratio(rows, ["p50"]) == {"p50": 0.5}  # 2, 0.5 and 0.25; the scan with none planted is left out
    assert sv._flagged_ratio([r for r in rows if r.tumour], ["p50"]) == {"p50": 0.25}
    assert sv._flagged_ratio([row(0.0, 3.0)], ["p50"]) == {}


def test_blurring_everything_away_is_not_a_restoration(volume):
    """A heavy blur removes most of an anomaly's change from its output, but it does not keep healthy
    tissue: the SSIM floor, not the removal figure, is what it fails."""
    image, brain = volume
    model = registry.LoadedModel(catalogue.get_card("ae-ixi-t1"), _Blur())
    figures = sv.measure(model, [image], [brain], ["T1"])
    assert figures["T1"]["removal"] > 0.3
    assert any("healthy SSIM" in p for p in restorer_problems(figures))


class _Blur(torch.nn.Module):
    """Averages each slice over 9 x 9 voxels (a restoration that loses the anatomy)."""

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 9, stride=1, padding=4, count_include_pad=False)


def test_anomalies_are_planted_inside_the_brain_reproducibly(volume):
    image, brain = volume
    a1, m1, _, h1 = sv.with_anomalies(image, brain, np.random.default_rng(3))
    a2, m2, _, _ = sv.with_anomalies(image, brain, np.random.default_rng(3))
    assert np.array_equal(a1, a2) and np.array_equal(m1, m2)
    assert m1.any() and not (m1 & ~brain).any()
    assert np.array_equal(a1[~m1], image[~m1]) and h1 is image  # without percentiles: clipped, nothing rescaled


def test_a_scan_is_normalised_with_its_anomalies_in_it(volume):
    """Version 7: with the model's percentiles the anomalies are planted unclipped and the scan normalised
    after, as preprocessing normalises a real scan with its lesion in it: a bright lesion large enough to take the
    brain's top percentile (a tumour's oedema on FLAIR) darkens the healthy tissue; the healthy counterpart comes
    out scaled alike, so that only the anomaly tells the two apart."""
    image, brain = volume
    darkened = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        clipped, mask_c, kinds_c, _ = sv.with_anomalies(image, brain, np.random.default_rng(seed), contrast="FLAIR")
        anomalous, mask, kinds, healthy = sv.with_anomalies(image, brain, rng, contrast="FLAIR", percentiles=(1.0, 99.0))
        assert np.array_equal(mask, mask_c) and kinds == kinds_c  # the same anomalies, only scaled otherwise
        assert anomalous.min() >= 0 and anomalous.max() <= 1 and not anomalous[~brain].any()
        assert np.abs(anomalous - healthy)[brain & ~mask].max() < 1e-5  # outside the anomalies: scaled alike
        darkened.append(float(np.median(image[brain & ~mask]) - np.median(anomalous[brain & ~mask])))
    assert max(darkened) > 0.02  # some draw's large bright anomaly rescaled the healthy brain (0.06 here)
    assert min(darkened) > -0.02


def test_anomalies_planted_on_flair_are_mostly_bright(volume):
    """Version 4 of the validation: on T2 and FLAIR the anomalies are drawn as lesions look there."""
    image, brain = volume

    def mean_change(contrast):
        changes = []
        for seed in range(8):
            anomalous, mask, _, _ = sv.with_anomalies(image, brain, np.random.default_rng(seed), contrast=contrast)
            changes.append(float((anomalous - image)[mask].mean()))
        return np.mean(changes)

    same = [sv.with_anomalies(image, brain, np.random.default_rng(5), contrast=c)[1] for c in ("T1", None)]
    assert np.array_equal(*same)  # T1 keeps the general mix, as before version 4
    assert mean_change("FLAIR") > mean_change("T1") + 0.02


def test_contrasts_are_redrawn_from_the_tissue_labels(volume):
    image, brain = volume
    rng = np.random.default_rng(0)
    assert sv.in_contrast(image, brain, "T1", rng) is image
    t2 = sv.in_contrast(image, brain, "T2", rng)
    assert t2.shape == image.shape and np.corrcoef(t2[brain], image[brain])[0, 1] < 0


def test_the_policy_is_chosen_within_the_healthy_limit():
    figures = {"T1": {"dice": {"a": 0.9, "b": 0.5, "c": 0.4}, "healthy_median_ml": {"a": 40.0, "b": 2.0, "c": 0.0}},
               "FLAIR": {"dice": {"a": 0.9, "b": 0.3, "c": 0.6}, "healthy_median_ml": {"a": 40.0, "b": 1.0, "c": 0.0}}}
    policy, why = sv.choose_policy(figures)
    assert policy == "c" and "c 0.500" in why  # a flags 40 mL on healthy scans: not eligible
    figures["T1"]["healthy_median_ml"]["c"] = 9.0
    assert sv.choose_policy(figures)[0] == "b"
    # none within 1.5 mL in every contrast: the one that exceeds the limit least (by at most 1.5 mL), saying so
    policy, why = sv.choose_policy(figures, limit_ml=1.5)
    assert policy == "b" and "2.0 mL in T1" in why
    # a policy that flags nothing is no default while one finds anomalies near the limit: "z" keeps healthy
    # scans at 0 mL and finds nothing
    for f in figures.values():
        f["dice"]["z"], f["healthy_median_ml"]["z"] = 0.0, 0.0
    assert sv.choose_policy(figures, limit_ml=1.5)[0] == "b"
    # ... but one that flags twice the limit is worse; the clean one finds nothing either, which is no reason
    # to move a card's default: no choice, and the why says so
    policy, why = sv.choose_policy(figures, limit_ml=0.5)
    assert policy is None and "no policy finds" in why and "z stay" in why
    assert sv.choose_policy({c: {"dice": {"a": 0.5}, "healthy_median_ml": {"a": 40.0}} for c in figures})[0] is None


def test_a_policy_at_the_probability_ceiling_is_never_a_default():
    """comp10 of a segmenter sits at 0.9999: as a default it printed every score as 1 and left the slider no
    range. Such policies are never chosen; a card whose default is one takes the finding policy that exceeds
    the healthy limit least, however far, rather than keep it."""
    figures = {"T2": {"dice": {"comp10": 0.2, "p50": 0.3, "p95": 0.25, "fpr1": 0.3},
                      "healthy_median_ml": {"comp10": 1.0, "p50": 30.0, "p95": 18.0, "fpr1": 120.0}}}
    assert sv.choose_policy(figures)[0] == "comp10"
    assert sv.choose_policy(figures, exclude={"comp10"})[0] is None  # nothing near: a card keeps its default
    policy, why = sv.choose_policy(figures, exclude={"comp10"}, must_choose=True)
    assert policy == "p95" and "18.0 mL in T2" in why and "ceiling" in why
    segmenter = registry.load_model("sadm-synth")
    ceiling = sv.ceiling_policies(segmenter)
    assert "comp10" in ceiling and segmenter.card.thresholds["comp10"] >= sv.PROBABILITY_CEILING
    assert not ceiling & {"p50", "p80", "p95"}
    assert sv.ceiling_policies(registry.load_model("intensity-flair")) == set()  # z-scores have no ceiling
    from NormativeADLib.models import FAMILIES

    for card in catalogue.list_models():  # and no shipped card has such a default
        if FAMILIES[card.family].segments:
            at = sv.ceiling_policies(registry.load_model(card.id))
            assert card.default_threshold not in at and not set(card.contrast_thresholds.values()) & at, card.id


def test_figures_of_an_older_validation_do_not_compare():
    """Each SYNTHETIC_VALIDATION_VERSION measures on other scans or anomalies (3: 15 scans, not 5; 4: bright
    anomalies on T2 and FLAIR; 5: contrasts redrawn from labels with the ventricles in CSF): a card measured
    before is no candidate in any contrast, T1 included,
    until it is measured again."""
    card = catalogue.get_card("sadm-dae")
    per_contrast = {c: {"dice": {card.default_for(c): 0.3}} for c in ("T1", "FLAIR")}
    for version in (None, catalogue.SYNTHETIC_VALIDATION_VERSION - 1):
        old = card.replace(figures={**card.figures, "synthetic_validation": {
            "per_contrast": per_contrast, **({"version": version} if version else {})}})
        assert catalogue.synthetic_dice(old, "T1") is None and catalogue.synthetic_dice(old, "FLAIR") is None
    current = card.replace(figures={**card.figures, "synthetic_validation": {
        "version": catalogue.SYNTHETIC_VALIDATION_VERSION, "per_contrast": per_contrast}})
    assert catalogue.synthetic_dice(current, "T1") == 0.3 and catalogue.synthetic_dice(current, "FLAIR") == 0.3


def test_the_shipped_cards_of_the_current_validation_were_measured_on_one_draw():
    """Defaults are chosen by comparing cards' synthetic figures, which holds only if every card was measured
    on the same anomalies. The planted volume per contrast is the draw's fingerprint: it must agree across
    the shipped cards of the current version that prepare scans alike (the intensity rules scale by the
    brain's minimum and maximum, so their scans register apart and their anomalies fall elsewhere, a
    difference docs/models.md states). The draw follows the prepared validation scans, and preparing
    a scan again moves it (the multi-threaded registration is not bit-reproducible, so the brain mask and
    with it every anomaly's place change): between 2026-12-05 and 12-06 the cache was prepared again, and
    cards measured before and after were compared as if on the same anomalies."""
    volumes = {}
    for card in catalogue.list_models():
        record = card.figures.get("synthetic_validation") or {}
        if record.get("version") != catalogue.SYNTHETIC_VALIDATION_VERSION:
            continue
        for contrast, figures in (record.get("per_contrast") or {}).items():
            if figures.get("n_scans"):  # a scan prepared with another scaling is registered apart: other places
                key = (contrast, figures["n_scans"], tuple(card.percentiles), card.bias_correction)
                volumes.setdefault(key, {})[card.id] = round(figures["anomaly_ml"], 3)
    assert volumes, "no shipped card is measured on the current synthetic validation"
    for (contrast, *_), by_card in volumes.items():
        assert len(set(by_card.values())) == 1, (contrast, by_card)


@pytest.mark.parametrize("contrast", [*catalogue.CONTRASTS, None])
def test_every_default_finds_synthetic_anomalies_at_its_default_policy(contrast):
    """A default whose policy finds nothing (Dice 0: what a policy chosen only for its healthy volume does) would
    turn the one button into a no-op. A scan of known contrast runs at the card's policy for that contrast; one of
    unknown contrast at the card's overall policy, measured in all four."""
    card = catalogue.get_card(catalogue.default_model(contrast))
    if contrast:
        dice = catalogue.synthetic_dice(card, contrast)
    else:
        dice = np.mean([catalogue.synthetic_dice(card, c, card.default_threshold) for c in catalogue.CONTRASTS])
    assert dice > 0.05, (card.id, contrast, card.default_for(contrast))
    if card.family == "sadm":  # a probability: the policy leaves the slider a range above it
        assert card.thresholds[card.default_for(contrast)] <= 0.95


@pytest.mark.parametrize("contrast", catalogue.CONTRASTS)
def test_every_default_states_how_much_of_a_synthetic_anomaly_it_flags(contrast):
    """The card of each contrast's default says, at its default policy, the flagged volume over the planted
    one on synthetic anomalies, also on the scans carrying a glioma-sized tumour: what a user should know
    before reading a flagged volume as a lesion's (docs/models.md compares it with the development cases)."""
    card = catalogue.get_card(catalogue.default_model(contrast))
    figures = card.figures["synthetic_validation"]["per_contrast"][contrast]
    policy = card.default_for(contrast)
    assert figures["flagged_ratio"][policy] > 0.1, (card.id, contrast, policy)
    assert figures["tumour_flagged_ratio"][policy] > 0.0, (card.id, contrast, policy)


def test_a_contrast_gets_its_own_policy_where_its_choice_differs():
    """sadm-dae on realistic synthetic T2 flags 8.8 mL of a healthy brain at p50: over all contrasts only p95 comes
    near the limit, which costs T1 two thirds of its Dice; each contrast then takes its own choice."""
    from NormativeADLib.training.train import _policies_per_contrast

    figures = {"T1": {"dice": {"p50": 0.094, "p95": 0.031}, "healthy_median_ml": {"p50": 2.4, "p95": 0.7}},
               "T2": {"dice": {"p50": 0.098, "p95": 0.093}, "healthy_median_ml": {"p50": 8.8, "p95": 6.8}}}
    overall, _ = sv.choose_policy(figures)
    assert overall == "p95"
    per_contrast, reasons = _policies_per_contrast(figures, overall)
    assert per_contrast == {"T1": "p50"} and "p50" in reasons["T1"]
    assert _policies_per_contrast({"T1": figures["T1"]}, "p50") == ({}, {})


def test_a_card_that_keeps_its_default_lists_only_the_contrasts_that_differ_from_it():
    """sadm-synth's own figures: no policy is within the healthy limit in every contrast, so the card keeps its
    p95; each contrast is then compared with p95, not with "no choice", and only T1 (p50) differs (T1c did too,
    on its version-6 figures)."""
    from NormativeADLib.training.train import chosen_policies

    model = registry.load_model("sadm-synth")
    figures = model.card.figures["synthetic_validation"]["per_contrast"]
    policy, why, per_contrast, _ = chosen_policies(model.card, figures, sv.ceiling_policies(model))
    assert policy is None and model.card.default_threshold == "p95"
    assert per_contrast == {"T1": "p50"} == model.card.contrast_thresholds


def test_a_policy_offered_after_calibration_has_the_healthy_median_the_selection_measured():
    """`calibrate --select-only` offers probability levels a card was not calibrated with (study-dae's p95):
    the healthy median then comes from the synthetic validation's healthy T1 scans as scanned (the same
    subjects), so a batch summary and the results tables still say what the default flags on healthy scans.
    What calibrate measured wins; a model validated only on redrawn contrasts takes the largest median of
    its contrasts."""
    shipped = catalogue.get_card("study-dae")
    # as study-dae 1.0.0 was: calibrated before p95 was offered, then chosen p95 on synthetic anomalies
    healthy = shipped.figures["healthy_validation"]
    calibrated = {p: v for p, v in healthy["flagged_ml"].items() if p != "p95"}
    card = shipped.replace(default_threshold="p95", figures={
        **shipped.figures, "healthy_validation": {**healthy, "flagged_ml": calibrated}})
    synthetic_t1 = card.figures["synthetic_validation"]["per_contrast"]["T1"]["healthy_median_ml"]
    flagged = card.healthy_flagged_ml()
    assert flagged["p95"] == {"median_ml": synthetic_t1["p95"]}
    assert flagged["p50"] == calibrated["p50"]
    redrawn = catalogue.get_card("sadm-synth-t2flair")
    # as it was calibrated before the probability levels were offered
    healthy = redrawn.figures["healthy_validation"]
    calibrated = {p: v for p, v in healthy["flagged_ml"].items() if p not in ("p50", "p80", "p95")}
    redrawn = redrawn.replace(figures={**redrawn.figures, "healthy_validation": {**healthy, "flagged_ml": calibrated}})
    per_contrast = redrawn.figures["synthetic_validation"]["per_contrast"]
    assert "T1" not in per_contrast
    flagged = redrawn.healthy_flagged_ml()
    for policy, value in flagged.items():
        if policy in calibrated:
            assert value == calibrated[policy]
        else:
            assert value == {"median_ml": max(f["healthy_median_ml"][policy] for f in per_contrast.values())}
    assert set(flagged) - set(calibrated)  # the levels offered after its calibration now say what they flag
