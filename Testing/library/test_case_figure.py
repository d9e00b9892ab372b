"""report.png: slices through the findings, apart from each other, and outlines that are the written segmentation."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from NormativeADLib.measures import anomaly
from NormativeADLib.pipeline import case_figure
from NormativeADLib.pipeline.case_figure import MIN_SLICE_DISTANCE_MM, View

THRESHOLD = 0.1
SPACING = (1.0, 1.2, 2.5)  # x, y, z mm: anisotropic, slices 2.5 mm apart


def _image(array: np.ndarray, orientation: str | None) -> sitk.Image:
    """An image of a (z, y, x) array on an LPS-identity grid, optionally re-oriented (same physical content)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin((-20.0, -30.0, -40.0))
    return sitk.DICOMOrient(image, orientation) if orientation else image


def _ball(shape, centre, radii_vox) -> np.ndarray:
    zz, yy, xx = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip((zz, yy, xx), centre, radii_vox)) <= 1.0


# Scores of the synthetic case: background maximum, largest component, second component, highest score.
RESIDUAL_SCORES = (0.06, 0.3, 0.25, 0.9)
PROBABILITY_THRESHOLD = 0.9999  # a SADM-like probability model: everything interesting lies just below 1
PROBABILITY_SCORES = (0.9, 0.99995, 0.99993, 0.9999999)
STRAY = (28, 28, 24)  # one voxel: above the threshold but smaller than the smallest kept component


def synthetic_result(orientation: str | None = None, reference: bool = True, lesions: bool = True,
                     threshold: float = THRESHOLD, scores=RESIDUAL_SCORES, family: str | None = None,
                     restored: bool = False, stray: float | None = None):
    """A CaseResult-like object: an ellipsoid brain, three flagged blobs and a reference lesion.

    Largest component at z=12 (its best slice), a second one on z=14-16 whose best slice (15) lies within
    10 mm of it, the highest score in a small blob at z=34, the reference lesion around z=22 (not flagged).
    restored: the pseudo-healthy image has the blobs replaced by the brain's mean (else it is the scan, as
    for a model without a restorer). stray: that score on the one voxel STRAY (dropped as too small).
    """
    shape = (40, 56, 48)
    brain = _ball(shape, (20, 28, 24), (18, 25, 21))
    rng = np.random.default_rng(0)
    background, largest, second, highest = scores
    heat = np.where(brain, rng.uniform(0.0, background, shape), 0.0).astype(np.float32)
    blobs = np.zeros(shape, bool)
    if lesions:
        for centre, radii, value in (((12, 20, 16), (2.5, 7, 7), largest),  # largest component
                                     ((15, 40, 34), (1.5, 5, 5), second),  # best slice 7.5 mm from the largest's
                                     ((34, 28, 24), (1, 2, 2), highest)):  # the highest score
            blob = _ball(shape, centre, radii)
            heat[blob], blobs = value, blobs | blob
    if stray is not None:
        heat[STRAY] = stray
    heat *= brain
    seg = anomaly.segment(heat, threshold, SPACING, 0.01).astype(np.uint8)
    ref = _ball(shape, (22, 30, 30), (1.5, 3, 3)).astype(np.uint8)
    scan = np.where(brain, 100 + 50 * rng.uniform(size=shape), 0).astype(np.float32)
    pseudo = np.where(blobs, 125.0, scan).astype(np.float32) if restored else scan
    volumes = anomaly.component_volumes_ml(seg > 0, SPACING)
    images = {name: _image(a, orientation) for name, a in (
        ("scan", scan), ("brain", brain.astype(np.uint8)), ("heat", heat), ("seg", seg), ("ref", ref),
        ("pseudo", pseudo))}
    metrics = {
        "case": "synthetic", "model": {"id": "ae-test-t1", "contrast": "T1", "family": family},
        "threshold": {"source": "fpr5", "value": threshold},
        "per_case": {"anomaly_volume_ml": float(volumes.sum()), "n_components": len(volumes)},
        "reference": {"dice": 0.123} if reference else None,
    }
    return SimpleNamespace(
        case="synthetic", prepared=SimpleNamespace(native=images["scan"], native_brain=images["brain"]),
        heatmap=images["heat"], segmentation=images["seg"], reference=images["ref"] if reference else None,
        pseudo_healthy=images["pseudo"], metrics=metrics)


def _largest_component(seg: np.ndarray) -> np.ndarray:
    labels, n = anomaly.label_components(seg > 0)
    return labels == 1 + np.argmax(np.bincount(labels.ravel(), minlength=n + 1)[1:])


def check_panels(result, shown):
    """What every report must satisfy, on any result."""
    view = View.of(result.prepared.native)
    seg = sitk.GetArrayFromImage(result.segmentation)
    for a, b in itertools.combinations(shown, 2):
        assert abs(a.index - b.index) * view.slice_mm >= MIN_SLICE_DISTANCE_MM - 1e-6
    for p in shown:  # the outline drawn is the written segmentation on that slice
        assert p.segmentation.dtype == bool
        np.testing.assert_array_equal(p.segmentation, np.take(seg, p.index, axis=view.axis) > 0)
        assert p.reasons
    # one panel goes through the largest component and says so
    if seg.any():
        largest = _largest_component(seg)
        through = [p for p in shown if np.take(largest, p.index, axis=view.axis).any()]
        assert any(any(r.startswith("largest component") for r in p.reasons) for p in through)
    # the highest score (the highest flagged one when anything is flagged) is on a panel that says so
    heat = sitk.GetArrayFromImage(result.heatmap)
    if seg.any():
        heat = np.where(seg > 0, heat, -np.inf)
    top = set(np.argwhere(heat == heat.max())[:, view.axis].tolist())
    assert [p.index in top for p in shown if p.reasons[0].startswith("highest")] == [True]
    ref = None if result.reference is None else sitk.GetArrayFromImage(result.reference) > 0
    if seg.any():  # no panel on a slice with nothing flagged (a missed reference lesion is a finding)
        assert all(p.segmentation.any() or (ref is not None and np.take(ref, p.index, axis=view.axis).any())
                   for p in shown)
    if ref is not None:
        named = [p for p in shown if "reference lesion" in p.reasons]
        assert named and all(np.take(ref, p.index, axis=view.axis).any() for p in named)
        assert all(np.array_equal(p.reference, np.take(ref, p.index, axis=view.axis)) for p in shown)


def test_panels_go_through_the_findings_and_keep_apart():
    result = synthetic_result()
    shown = case_figure.panels(result)
    check_panels(result, shown)
    # three components and the reference lesion: every flagged slice left is within 10 mm of a panel, so
    # the fifth panel stays empty rather than show a slice with nothing flagged
    assert len(shown) == 4
    assert [p.position_mm for p in shown] == sorted(p.position_mm for p in shown)
    largest = next(p for p in shown if any(r.startswith("largest component") for r in p.reasons))
    assert largest.index == 12  # its largest cross-section, free of other panels
    second = next(p for p in shown if any(r.startswith("component 2") for r in p.reasons))
    assert second.index == 16  # its own best slice (15) is too close: the next free one
    # a finding already visible on a panel is named there rather than given a neighbour of it
    hottest = next(p for p in shown if p.reasons[0].startswith("highest score 0.9"))
    third = anomaly.component_volumes_ml(sitk.GetArrayFromImage(result.segmentation) > 0, SPACING)[2]
    assert abs(hottest.index - 34) <= 1 and hottest.reasons[1] == f"component 3 of 3, {third:.2g} mL"


def test_display_is_radiological_and_the_same_for_any_acquisition_axes():
    """A sagittally stored copy of the same volume gives the same slices and the same pictures."""
    axial, sagittal = synthetic_result(), synthetic_result("PSR")
    view = View.of(sagittal.prepared.native)
    assert view.axis == 1 and view.slice_mm == 2.5 and view.aspect == pytest.approx(1.2)
    a, s = case_figure.panels(axial), case_figure.panels(sagittal)
    check_panels(sagittal, s)
    assert [p.position_mm for p in a] == pytest.approx([p.position_mm for p in s])
    assert [p.reasons for p in a] == [p.reasons for p in s]
    va = View.of(axial.prepared.native)
    for pa, ps in zip(a, s):
        np.testing.assert_array_equal(va.display(pa.segmentation), view.display(ps.segmentation))
        np.testing.assert_array_equal(va.display(pa.heatmap), view.display(ps.heatmap))
    # patient right-anterior (low x and low y in LPS) is drawn top left
    marker = np.zeros((40, 56, 48), np.uint8)
    marker[20, 2, 3] = 1
    for orientation in (None, "PSR", "RAI"):
        image = _image(marker, orientation)
        v = View.of(image)
        plane = v.display(v.slice(sitk.GetArrayFromImage(image), int(np.argwhere(
            sitk.GetArrayFromImage(image))[0][v.axis])))
        row, col = np.argwhere(plane)[0]
        assert (row, col) == (2, 3), orientation


def test_report_png_size_and_header(tmp_path):
    result = synthetic_result()
    path = tmp_path / "report.png"
    case_figure.write_report(result, path)
    view = View.of(result.prepared.native)
    shown = case_figure.panels(result)
    width, height = case_figure.figure_size(view, case_figure._crop(view, shown), len(shown))
    with Image.open(path) as png:
        assert png.size == (round(width * case_figure.DPI), round(height * case_figure.DPI))
    text = case_figure.header(result)
    volume = result.metrics["per_case"]["anomaly_volume_ml"]
    assert "ae-test-t1" in text and "(T1)" in text and f"flagged {volume:.1f} mL" in text
    assert "fpr5" in text and "Dice 0.123" in text and "\n" not in text
    assert case_figure.render(result).get_suptitle() == text


def test_a_hotter_unflagged_voxel_takes_no_panel():
    """The case's highest score is a lone voxel the segmentation dropped: the panels stay on flagged slices."""
    result = synthetic_result(stray=0.95)
    assert sitk.GetArrayFromImage(result.segmentation)[STRAY] == 0
    shown = case_figure.panels(result)
    check_panels(result, shown)
    assert all(abs(p.index - STRAY[0]) > 1 for p in shown)
    assert any(p.reasons[0] == "highest flagged score 0.9" for p in shown)


def test_nothing_flagged_falls_back_to_the_highest_scores():
    result = synthetic_result(threshold=0.95, stray=0.5)
    assert not sitk.GetArrayFromImage(result.segmentation).any()
    shown = case_figure.panels(result)
    check_panels(result, shown)
    assert len(shown) == case_figure.N_PANELS  # all five panels, on the highest-score slices
    assert any(p.index == STRAY[0] for p in shown)  # the next highest score (0.5) has its panel
    hottest = next(p for p in shown if p.reasons[0].startswith("highest score"))
    assert abs(hottest.index - 34) <= 1 and hottest.reasons[0] == "highest score 0.9"


@pytest.mark.parametrize("threshold, others, expected", [
    (0.9999, (0.79992, 1.0, 1.0), "0.9999"),  # a probability just below its ceiling
    (0.9999948441982269, (0.7999958, 0.9999999, 1.0), "0.99999"),  # sadm-ixi-t1's comp10
    (0.0010854752617888153, (0.000868, 0.42, 1.0), "0.00109"),  # sadm-ixi-t1's fpr5
    (0.035207746550541534, (0.0281662, 0.41), "0.0352"),  # a residual
    (2.0, (1.6, 9.3), "2"),  # a z-score
    (0.1, (0.08, 0.1), "0.1"),  # equal values need no extra digits
])
def test_score_digits_print_the_threshold_unlike_the_range(threshold, others, expected):
    digits = case_figure.score_digits(threshold, others)
    scale = case_figure.ScoreScale(0.0, threshold, 1.0, digits)
    assert scale.text(threshold) == expected
    assert all(scale.text(v) != expected for v in others if v != threshold)


def test_a_probability_below_one_never_prints_as_one():
    scale = case_figure.ScoreScale(0.8, 0.9999, 1.0, 4, ceiling=1.0)
    assert scale.text(np.float32(0.9999999)) == "0.9999999" and scale.text(1.0) == "1"
    assert case_figure.ScoreScale(0.8, 0.9999, 1.0, 4).text(0.9999999) == "1"  # no ceiling: plain rounding


def test_colour_limits_stay_within_the_scores_and_the_family_ceiling():
    assert case_figure.score_ceiling("sadm") == 1.0
    assert case_figure.score_ceiling("ae") is None and case_figure.score_ceiling("intensity") is None
    assert case_figure.score_ceiling(None) is None
    probabilities = np.array([0.2, 0.9, 0.99995], np.float32)
    for threshold in (0.5, 0.9999, 0.99999, 1.0):  # p50, comp10, and one nothing can pass
        floor, top = case_figure.colour_limits(probabilities, threshold, 1.0)
        assert 0.0 <= floor < threshold <= top <= 1.0, threshold
    assert case_figure.colour_limits(probabilities, 0.9999, 1.0)[1] == pytest.approx(0.99995)  # the highest present
    # residuals and z-scores: up to the case's highest score, or a band above the threshold when none pass it
    assert case_figure.colour_limits(np.array([0.01, 0.41]), 0.035, None) == pytest.approx((0.028, 0.41))
    assert case_figure.colour_limits(np.array([0.01, 0.02]), 0.035, None) == pytest.approx((0.028, 0.042))
    assert case_figure.colour_limits(np.array([0.5, 9.3]), 2.0, None) == pytest.approx((1.6, 9.3))


def _score_images(fig):
    return [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "anomaly_score"]


def test_probability_model_report(tmp_path):
    """A 0.9999 threshold prints as such everywhere, sits mid-bar, and the bar stays inside [0, 1]."""
    result = synthetic_result(threshold=PROBABILITY_THRESHOLD, scores=PROBABILITY_SCORES, family="sadm")
    shown = case_figure.panels(result)
    check_panels(result, shown)
    scale = case_figure.score_scale(result)
    assert scale.text(scale.threshold) == "0.9999"
    assert "= 0.9999 |" in case_figure.header(result)
    fig = case_figure.render(result)
    images = _score_images(fig)
    assert images and all(0.0 <= im.norm.vmin and im.norm.vmax <= 1.0 for im in images)
    assert images[0].norm(PROBABILITY_THRESHOLD) == pytest.approx(0.5)  # the threshold mid-bar, visible
    bar = next(ax for ax in fig.axes if ax.get_ylabel() == "anomaly score")
    labels = [t.get_text() for t in bar.get_yticklabels()]
    assert "threshold 0.9999" in labels and all(0.0 <= t <= 1.0 for t in bar.get_yticks())
    assert "(flagged above 0.9999)" in fig.axes[len(shown)].get_ylabel()  # the score row's label
    assert "highest score 0.9999999" in [r for p in shown for r in p.reasons]
    case_figure.write_report(result, tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.parametrize("restored", [True, False])
def test_restoration_row_shows_the_restoration_or_says_there_is_none(restored):
    result = synthetic_result(restored=restored)
    fig = case_figure.render(result)
    n_columns = max(len(case_figure.panels(result)), 2)
    row = fig.axes[2 * n_columns:3 * n_columns]
    drawn = [im.get_array() for ax in row for im in ax.get_images()]
    if restored:
        assert row[0].get_ylabel() == "restoration\n(pseudo-healthy)"
        view = View.of(result.prepared.native)
        first = case_figure.panels(result)[0]
        np.testing.assert_array_equal(drawn[0], view.display(first.pseudo_healthy))
        assert not np.array_equal(drawn[0], view.display(first.scan)) or not first.segmentation.any()
    else:
        assert row[0].get_ylabel() == case_figure.NO_RESTORATION and "no restorer" in row[0].get_ylabel()
        assert not drawn  # the scan is not shown a second time as if restored
        assert any("no restorer" in t.get_text() for ax in row for t in ax.texts)


def test_no_reference_no_lesion_zero_threshold(tmp_path):
    result = synthetic_result(reference=False, lesions=False)
    result.metrics["threshold"] = {"source": "manual", "value": 0.0}
    shown = case_figure.panels(result)
    assert all(p.reference is None for p in shown)
    assert len(shown) == case_figure.N_PANELS and any(r.startswith("highest score") for p in shown for r in p.reasons)
    assert "Dice" not in case_figure.header(result)
    case_figure.write_report(result, tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def sample_result(sample_scan, sample_lesion, shipped_model):
    from NormativeADLib.pipeline import analysis

    # fpr5: components to show (the model's default policy flags nothing on this case)
    return analysis.analyse(sample_scan, shipped_model, threshold="fpr5", reference_path=sample_lesion)


def test_report_of_the_shipped_sample(sample_result, tmp_path):
    shown = case_figure.panels(sample_result)
    check_panels(sample_result, shown)
    assert shown
    assert case_figure.has_restoration(sample_result)  # the default model restores
    scale = case_figure.score_scale(sample_result)
    assert scale.floor < scale.threshold < scale.top
    assert scale.text(scale.threshold) != scale.text(scale.top)
    case_figure.write_report(sample_result, tmp_path / "report.png")
    with Image.open(tmp_path / "report.png") as png:
        assert png.size[0] > 1000
