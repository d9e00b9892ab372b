"""report.png: slices through the findings, apart from each other, and outlines that are the written segmentation."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from NormativeADLib import anomaly, case_figure
from NormativeADLib.case_figure import MIN_SLICE_DISTANCE_MM, View

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


def synthetic_result(orientation: str | None = None, reference: bool = True, lesions: bool = True):
    """A CaseResult-like object: an ellipsoid brain, three flagged blobs and a reference lesion.

    Largest component at z=12 (its best slice), a second one on z=14-16 whose best slice (15) lies within
    10 mm of it, the highest score in a small blob at z=34, the reference lesion around z=22.
    """
    shape = (40, 56, 48)
    brain = _ball(shape, (20, 28, 24), (18, 25, 21))
    rng = np.random.default_rng(0)
    heat = np.where(brain, rng.uniform(0.0, 0.06, shape), 0.0).astype(np.float32)
    if lesions:
        heat[_ball(shape, (12, 20, 16), (2.5, 7, 7))] = 0.3  # largest component
        heat[_ball(shape, (15, 40, 34), (1.5, 5, 5))] = 0.25  # best slice 7.5 mm from the largest one's
        heat[_ball(shape, (34, 28, 24), (1, 2, 2))] = 0.9  # the highest score
    heat *= brain
    seg = anomaly.segment(heat, THRESHOLD, SPACING, 0.01).astype(np.uint8)
    ref = _ball(shape, (22, 30, 30), (1.5, 3, 3)).astype(np.uint8)
    scan = np.where(brain, 100 + 50 * rng.uniform(size=shape), 0).astype(np.float32)
    volumes = anomaly.component_volumes_ml(seg > 0, SPACING)
    images = {name: _image(a, orientation) for name, a in (
        ("scan", scan), ("brain", brain.astype(np.uint8)), ("heat", heat), ("seg", seg), ("ref", ref))}
    metrics = {
        "case": "synthetic", "model": {"id": "ae-test-t1", "contrast": "T1"},
        "threshold": {"source": "fpr5", "value": THRESHOLD},
        "per_case": {"anomaly_volume_ml": float(volumes.sum()), "n_components": len(volumes)},
        "reference": {"dice": 0.123} if reference else None,
    }
    return SimpleNamespace(
        case="synthetic", prepared=SimpleNamespace(native=images["scan"], native_brain=images["brain"]),
        heatmap=images["heat"], segmentation=images["seg"], reference=images["ref"] if reference else None,
        pseudo_healthy=images["scan"], metrics=metrics)


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
    # the highest score is on a panel that says so
    heat = sitk.GetArrayFromImage(result.heatmap)
    top = set(np.argwhere(heat == heat.max())[:, view.axis].tolist())
    assert [p.index in top for p in shown if p.reasons[0].startswith("highest score")] == [True]
    if result.reference is not None:
        ref = sitk.GetArrayFromImage(result.reference) > 0
        named = [p for p in shown if "reference lesion" in p.reasons]
        assert named and all(np.take(ref, p.index, axis=view.axis).any() for p in named)
        assert all(np.array_equal(p.reference, np.take(ref, p.index, axis=view.axis)) for p in shown)


def test_panels_go_through_the_findings_and_keep_apart():
    result = synthetic_result()
    shown = case_figure.panels(result)
    check_panels(result, shown)
    assert len(shown) == case_figure.N_PANELS
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
    from NormativeADLib import pipeline

    # fpr5: components to show (the model's default policy flags nothing on this case)
    return pipeline.analyse(sample_scan, shipped_model, threshold="fpr5", reference_path=sample_lesion)


def test_report_of_the_shipped_sample(sample_result, tmp_path):
    shown = case_figure.panels(sample_result)
    check_panels(sample_result, shown)
    assert len(shown) == case_figure.N_PANELS
    case_figure.write_report(sample_result, tmp_path / "report.png")
    with Image.open(tmp_path / "report.png") as png:
        assert png.size[0] > 1000
