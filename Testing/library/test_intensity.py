"""The intensity baseline on constructed volumes whose answer is known."""

import numpy as np
import pytest

from NormativeADLib.measures import anomaly
from NormativeADLib.models import registry
from NormativeADLib.pipeline.restore import restore_volume


@pytest.fixture(scope="module")
def flair():
    return registry.load_model("intensity-flair")


def brain_volume(seed=0, shape=(40, 48, 48)):
    """A noisy 'brain': an ellipsoid of tissue at 0.5 +- 0.05 with a zero background."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    brain = ((z - 20) / 18) ** 2 + ((y - 24) / 22) ** 2 + ((x - 24) / 22) ** 2 < 1
    image = np.where(brain, rng.normal(0.5, 0.05, shape), 0).astype(np.float32)
    return image, brain


def scores(model, image, brain):
    restored = restore_volume(model, image, brain, device=None)
    return anomaly.score_map(image, restored, brain, model.card.postprocess)


def test_a_planted_bright_lesion_is_flagged_and_nothing_else(flair):
    image, brain = brain_volume()
    lesion = np.zeros_like(brain)
    lesion[18:23, 20:26, 20:26] = True
    image[lesion] += 0.3  # six robust standard deviations
    threshold = flair.card.thresholds[flair.card.default_threshold]
    flagged = anomaly.segment(scores(flair, image, brain), threshold, (2.0, 2.0, 2.0), flair.card.postprocess.min_component_ml)
    assert (flagged & lesion).sum() / lesion.sum() > 0.6
    assert (flagged & ~lesion).sum() < 0.2 * lesion.sum()


def test_a_global_intensity_shift_or_scale_changes_nothing(flair):
    """The score is the case's own z-score: a site's gain and offset cannot flag the brain."""
    image, brain = brain_volume(seed=1)
    image[18:22, 20:24, 20:24] += 0.25
    base = scores(flair, image, brain)
    shifted = scores(flair, np.where(brain, image * 1.7 + 0.2, 0).astype(np.float32), brain)
    np.testing.assert_allclose(shifted, base, atol=1e-4)


def test_dark_voxels_do_not_score_on_flair_but_do_on_t1():
    image, brain = brain_volume(seed=2)
    image[18:22, 20:24, 20:24] -= 0.3
    dark = np.zeros_like(brain)
    dark[18:22, 20:24, 20:24] = True
    assert scores(registry.load_model("intensity-flair"), image, brain)[dark].max() < 1.0
    assert np.median(scores(registry.load_model("intensity-t1"), image, brain)[dark]) > 3.0
