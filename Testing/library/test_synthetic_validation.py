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
    a1, m1 = sv.with_anomalies(image, brain, np.random.default_rng(3))
    a2, m2 = sv.with_anomalies(image, brain, np.random.default_rng(3))
    assert np.array_equal(a1, a2) and np.array_equal(m1, m2)
    assert m1.any() and not (m1 & ~brain).any()
    assert np.array_equal(a1[~m1], image[~m1])


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
    assert sv.choose_policy(figures, limit_ml=0.5)[0] is None
