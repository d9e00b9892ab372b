"""Anomaly maps, thresholds and segmentation on arrays whose answers are known."""

import numpy as np
import pytest

from NormativeADLib.measures import anomaly, metrics
from NormativeADLib.core.card import PostProcess


def test_segment_drops_components_at_or_below_min_volume():
    score = np.zeros((20, 20, 20), np.float32)
    score[2:4, 2:4, 2:4] = 1.0  # 8 voxels of 2 mm = 0.064 mL
    score[10:15, 10:15, 10:15] = 1.0  # 125 voxels = 1.0 mL
    score[18, 18, 18] = 1.0  # 1 voxel = 0.008 mL
    mask = anomaly.segment(score, 0.5, (2.0, 2.0, 2.0), min_component_ml=0.064)
    assert mask.sum() == 125
    assert mask[12, 12, 12] and not mask[3, 3, 3] and not mask[18, 18, 18]
    assert anomaly.segment(score, 0.5, (2.0, 2.0, 2.0), 0.0).sum() == 134


def test_component_volumes_use_spacing():
    mask = np.zeros((10, 10, 10), bool)
    mask[:2, :2, :2] = True
    mask[5:, 5:, 5:] = True
    np.testing.assert_allclose(anomaly.component_volumes_ml(mask, (1.0, 2.0, 0.5)), [0.125, 0.008])


def test_segmentation_figures_count_every_voxel_once_on_an_anisotropic_grid():
    """The figures a run reports and the Slicer table recomputes at a moved threshold (one function)."""
    mask = np.zeros((10, 10, 10), bool)
    mask[:2, :2, :2] = True  # 8 voxels of 1 mm3: 0.008 mL
    mask[5:, 5:, 5:] = True  # 125 voxels: 0.125 mL
    mask[0, 9, 9] = True  # a lone voxel, apart from both
    figures = metrics.segmentation_figures(mask, (1.0, 2.0, 0.5))
    assert figures["n_components"] == 3
    assert figures["anomaly_volume_ml"] == pytest.approx(mask.sum() * 1.0 / 1000)
    assert figures["largest_component_ml"] == pytest.approx(0.125)
    assert metrics.segmentation_figures(np.zeros((4, 4, 4), bool), (1.0, 1.0, 1.0)) == {
        "anomaly_volume_ml": 0.0, "n_components": 0, "largest_component_ml": 0.0}


def test_component_table_volumes_centres_and_peaks():
    segmentation = np.zeros((20, 20, 20), bool)
    segmentation[2:4, 2:4, 2:4] = True  # 8 voxels, centre (z, y, x) = (2.5, 2.5, 2.5)
    segmentation[10:15, 10:15, 12:17] = True  # 125 voxels, centre (12, 12, 14)
    score = np.zeros(segmentation.shape, np.float32)
    score[3, 3, 3], score[11, 12, 13], score[0, 0, 0] = 0.7, 0.9, 5.0  # the last outside both
    table = metrics.component_table(segmentation, score, lambda xyz: [v * 10 for v in xyz], (2.0, 2.0, 2.0))
    assert [c["volume_ml"] for c in table] == [1.0, 0.064]
    assert table[0]["center_ras_mm"] == [140.0, 120.0, 120.0]  # (x, y, z) index * 10
    assert table[1]["center_ras_mm"] == [25.0, 25.0, 25.0]
    assert [c["peak_score"] for c in table] == pytest.approx([0.9, 0.7])


def test_calibrated_threshold_hits_target_fpr_on_known_distribution():
    rng = np.random.default_rng(0)
    scores = [rng.uniform(0, 1, (10, 20, 20)).astype(np.float32) for _ in range(4)]
    brains = [np.ones_like(s, bool) for s in scores]
    t = anomaly.calibrate_fpr(scores, brains)
    assert t["fpr5"] == pytest.approx(0.95, abs=0.01)
    assert t["fpr1"] > t["fpr5"] > t["fpr10"]
    assert anomaly.mean_fpr(t["fpr5"], scores, brains) <= 0.05


def test_targets_below_the_share_of_nonzero_scores_get_threshold_zero():
    """AutoDDPM scores only inside its inpainting mask: 3 % of healthy voxels above 0 cannot be cut to
    5 % or 10 %, so those thresholds are 0 (flag every nonzero score); 1 % is still found by bisection."""
    rng = np.random.default_rng(1)
    scores = [np.where(rng.uniform(size=(10, 20, 20)) < 0.03, rng.uniform(0.1, 1, (10, 20, 20)), 0).astype(np.float32)
              for _ in range(4)]
    brains = [np.ones_like(s, bool) for s in scores]
    t = anomaly.calibrate_fpr(scores, brains)
    assert t["fpr5"] == 0.0 and t["fpr10"] == 0.0
    assert t["fpr1"] > 0.1 and anomaly.mean_fpr(t["fpr1"], scores, brains) <= 0.01
    assert 0.02 < anomaly.mean_fpr(t["fpr5"], scores, brains) < 0.04


def test_score_map_zero_outside_eroded_brain_and_median_removes_speckle():
    image = np.zeros((20, 40, 40), np.float32)
    brain = np.zeros_like(image, bool)
    brain[:, 5:35, 5:35] = True
    restored = image.copy()
    restored[10, 20, 20] = 1.0  # isolated voxel: removed by the median filter
    restored[4:12, 12:20, 12:20] = 0.8  # a block survives it
    restored[:, 5, 5:35] = 1.0  # brain border: outside the eroded brain
    score = anomaly.score_map(image, restored, brain, PostProcess(erode_iterations=3, median_size=5))
    assert score[10, 20, 20] == 0
    assert score[8, 16, 16] == pytest.approx(0.8)
    assert score[:, 5].max() == 0


def test_best_dice_threshold_finds_separating_value():
    score = np.linspace(0, 1, 1000).reshape(10, 10, 10)
    label = score > 0.7
    t, dice = anomaly.best_dice_threshold([score], [label], [np.ones_like(label)])
    assert dice > 0.99
    assert 0.65 < t < 0.75


def test_healthy_percentile():
    assert anomaly.healthy_percentile(0.5, [0.1, 0.2, 0.6, 0.7]) == 50.0
    assert anomaly.healthy_percentile(0.5, []) is None


def _healthy_scores(n=10, shape=(30, 40, 40), seed=0):
    """Healthy-like score maps: smooth noise around 0.03 inside a box 'brain'."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    brain = np.zeros(shape, bool)
    brain[3:-3, 4:-4, 4:-4] = True
    scores = []
    for _ in range(n):
        noise = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.5)
        scores.append((np.clip(0.03 + 0.02 * noise / noise.std(), 0, None) * brain).astype(np.float32))
    return scores, brain


def test_component_calibration_allows_the_stated_share_of_flagged_healthy_scans():
    scores, brain = _healthy_scores(n=10)
    threshold, figures = anomaly.calibrate_components(scores, (2.0, 2.0, 2.0), 0.056, max_flagged_fraction=0.1)
    flagged = [anomaly.components_above_floor(s, threshold, (2.0, 2.0, 2.0), 0.056) > 0 for s in scores]
    assert sum(flagged) <= 1 and figures["healthy_scans_flagged"] == sum(flagged) / 10
    slightly_lower = threshold * 0.97  # the smallest such threshold: a little lower flags more scans
    assert sum(anomaly.components_above_floor(s, slightly_lower, (2.0, 2.0, 2.0), 0.056) > 0 for s in scores) > 1


def test_adaptive_threshold_ignores_a_global_shift_but_keeps_a_planted_lesion():
    from NormativeADLib.core.card import PostProcess

    post = PostProcess(erode_iterations=0, median_size=1)
    scores, brain = _healthy_scores(n=10)
    stats = anomaly.score_statistics(scores, [brain] * len(scores), post)
    base = anomaly.calibrate_components(scores, (2.0, 2.0, 2.0), 0.056)[0]
    case, _ = _healthy_scores(n=1, seed=5)
    shifted = (case[0] * 2.5 + 0.05) * brain  # another scanner: every residual larger
    lesion = np.zeros_like(brain)
    lesion[12:18, 15:21, 15:21] = True
    shifted[lesion] += 0.6
    fixed = anomaly.segment(shifted, base, (2, 2, 2), 0.056)
    adaptive = anomaly.adaptive_threshold(shifted, brain, base, stats["healthy_median"], stats["healthy_robust_sd"])
    flagged = anomaly.segment(shifted, adaptive, (2, 2, 2), 0.056)
    assert (fixed & ~lesion).sum() > 20 * lesion.sum()  # the calibrated threshold flags the whole brain
    assert (flagged & ~lesion).sum() < 0.2 * lesion.sum()  # the adaptive one does not
    assert (flagged & lesion).sum() > 0.8 * lesion.sum()  # and keeps the lesion
    assert anomaly.adaptive_threshold(scores[0], brain, base, stats["healthy_median"],
                                      stats["healthy_robust_sd"]) == pytest.approx(base, rel=0.15)
