"""Outputs lie on the input's own grid, and an anomaly put at a known place shows up there.

Runs on the shipped sample case in four orientations (its own LAS and three reorientations,
one of them permuting the axes) and, when ../shared/data is present, on every data set there:
whole-head IXI (PSR, 2 mm), skull-stripped z-scored BraTS (LPS), the MNI template (RAS).
"""

import numpy as np
import pytest
import SimpleITK as sitk

from testsupport import SHARED_DATA, needs_shared_data
from NormativeADLib.io import template
from NormativeADLib.core.options import IMAGE_OUTPUTS
from NormativeADLib.pipeline import analysis, preprocess
from NormativeADLib.synthesis.bias_field import superior_ramp

# Left frontal white matter (MNI RAS -26, 20, 30), in the model grid's LPS coordinates.
LESION_MNI_LPS = (26.0, -20.0, 30.0)
LESION_RADIUS_MM = 7.0
# The peak may sit anywhere in the lesion, and the 5-voxel median filter shifts it at most slightly.
PEAK_TOLERANCE_MM = LESION_RADIUS_MM + 3.0


def _insert_dark_lesion(scan: sitk.Image, center: tuple, value: float) -> sitk.Image:
    array = sitk.GetArrayFromImage(scan)
    idx = np.indices(array.shape).reshape(3, -1)[::-1].T  # (x, y, z) voxel indices
    direction = np.asarray(scan.GetDirection()).reshape(3, 3)
    points = np.asarray(scan.GetOrigin()) + (idx * np.asarray(scan.GetSpacing())) @ direction.T
    inside = np.linalg.norm(points - np.asarray(center), axis=1) <= LESION_RADIUS_MM
    array.reshape(-1)[np.ravel_multi_index(idx[inside][:, ::-1].T, array.shape)] = value
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(scan)
    return out


def _assert_same_grid(image: sitk.Image, reference: sitk.Image):
    assert image.GetSize() == reference.GetSize()
    assert image.GetSpacing() == reference.GetSpacing()
    assert image.GetOrigin() == reference.GetOrigin()
    assert image.GetDirection() == reference.GetDirection()


def _peak_mm(heatmap: sitk.Image, values: np.ndarray) -> np.ndarray:
    peak = np.unravel_index(np.argmax(values), values.shape)[::-1]
    return np.asarray(heatmap.TransformIndexToPhysicalPoint([int(i) for i in peak]))


def _check_case(scan: sitk.Image, tmp_path, model, name: str):
    """Insert a lesion at a known brain point; the heatmap's largest rise must be there.

    The rise (lesioned minus original heatmap) is what the lesion did to the map; the map's
    absolute peak also depends on how well the model restores that anatomy, which is not
    what a geometry test is about.
    """
    original = tmp_path / f"{name}_original.nii.gz"
    sitk.WriteImage(scan, str(original))
    before = analysis.analyse(original, model)
    center = before.prepared.transform.TransformPoint(LESION_MNI_LPS)
    brain_values = sitk.GetArrayFromImage(scan)[sitk.GetArrayFromImage(before.prepared.native_brain) > 0]
    lesioned = _insert_dark_lesion(scan, center, float(np.percentile(brain_values, 1)))
    path = tmp_path / f"{name}.nii.gz"
    sitk.WriteImage(lesioned, str(path))
    # Same registration for both runs, so the rise is the lesion's alone (no registration jitter).
    result = analysis.analyse(path, model, transform_path=before.prepared.transform)
    for image in (result.heatmap, result.pseudo_healthy, result.segmentation):
        _assert_same_grid(image, lesioned)
    rise = sitk.GetArrayFromImage(result.heatmap) - sitk.GetArrayFromImage(before.heatmap)
    distance = float(np.linalg.norm(_peak_mm(result.heatmap, rise) - np.asarray(center)))
    assert distance <= PEAK_TOLERANCE_MM, f"{name}: heatmap rise peaks {distance:.1f} mm from the inserted lesion"


@pytest.mark.parametrize("orientation", [None, "RAS", "LPI", "SRA"])
def test_sample_case_in_four_orientations(sample_scan, shipped_model, tmp_path, orientation):
    scan = sitk.ReadImage(str(sample_scan), sitk.sitkFloat32)
    if orientation:
        scan = sitk.DICOMOrient(scan, orientation)
    _check_case(scan, tmp_path, shipped_model, f"sample_{orientation or 'native'}")


@needs_shared_data()
@pytest.mark.parametrize("relative", [
    "healthy/ixi_t1/IXI013-HH-1212_T1.nii.gz",
    "pathology/brats2013/pat0005/t1c.nii.gz",
    "template/mni152_2009a_t1.nii.gz",
])
def test_shared_data_sets(shipped_model, tmp_path, relative):
    scan = sitk.ReadImage(str(SHARED_DATA / relative), sitk.sitkFloat32)
    _check_case(scan, tmp_path, shipped_model, relative.split("/")[-1].split(".")[0])


def test_registration_recovers_a_known_affine():
    """The 1 mm template moved by a known affine (6 degrees, 5 % larger, shifted) is found again to well
    under a model voxel (2 mm), although registration sees the scan at 2 mm (at_most_resolution)."""
    grid = preprocess.ModelGrid()
    mni = sitk.ReadImage(str(template.template_path()), sitk.sitkFloat32)
    truth = sitk.AffineTransform(3)  # model-space point -> scan point
    rotation = np.asarray(sitk.VersorTransform((0, 0, 1), np.deg2rad(6.0)).GetMatrix()).reshape(3, 3)
    truth.SetMatrix((rotation * 1.05).ravel().tolist())
    truth.SetTranslation((4.0, -3.0, 6.0))
    scan = sitk.Resample(mni, mni, truth.GetInverse(), sitk.sitkLinear, 0.0)
    found = preprocess.prepare(scan, grid).transform
    _, brain = template.template_on_grid(grid)
    reference = template.grid_image(grid)
    points = [reference.TransformIndexToPhysicalPoint([int(i) for i in index[::-1]])
              for index in np.argwhere(sitk.GetArrayFromImage(brain) > 0)[::50]]
    error = [np.linalg.norm(np.subtract(found.TransformPoint(p), truth.TransformPoint(p))) for p in points]
    assert np.mean(error) < 0.5 and np.max(error) < 1.0, f"mean {np.mean(error):.2f}, max {np.max(error):.2f} mm"


def test_write_outputs_on_input_grid(sample_scan, shipped_model, tmp_path):
    result = analysis.analyse(sample_scan, shipped_model)
    out = analysis.write_outputs(result, tmp_path / "out", fmt="nrrd")
    scan = sitk.ReadImage(str(sample_scan))
    for name in IMAGE_OUTPUTS:
        written = sitk.ReadImage(str(out / f"{name}.nrrd"))
        assert written.GetSize() == scan.GetSize()
        np.testing.assert_allclose(written.GetSpacing(), scan.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(written.GetOrigin(), scan.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(written.GetDirection(), scan.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "segmentation.nrrd"))),
                                  sitk.GetArrayFromImage(result.segmentation))
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "staging files left behind"


def _slab_brightness(prepared) -> tuple[float, float]:
    """The 85th percentile (white matter) of the lowest and highest fifth of the brain's slices."""
    image, brain = prepared.image, prepared.brain
    slices = np.flatnonzero(brain.any(axis=(1, 2)))
    fifth = (slices[-1] - slices[0]) // 5
    low, high = slice(slices[0], slices[0] + fifth), slice(slices[-1] - fifth, slices[-1] + 1)
    return tuple(float(np.percentile(image[s][brain[s]], 85)) for s in (low, high))


def test_bias_correction_flattens_a_field_and_leaves_a_flat_scan(sample_scan):
    """The sample T1 is flat (MSLUB ships it bias-corrected); given an IXI-like field (x1 at the bottom to
    x0.7 at the top of the head) its top slab's white matter drops to about 0.75 of the bottom's. N4 brings
    it back within 5 % of the scan as it was, and leaves the scan as it was within 0.02."""
    grid = preprocess.ModelGrid()
    scan = sitk.ReadImage(str(sample_scan), sitk.sitkFloat32)
    ramped = superior_ramp(scan, 1.0, 0.7)
    flat = preprocess.prepare(scan, grid)
    transform = flat.transform  # one registration for all, so only the intensities differ
    bottom, top = _slab_brightness(flat)
    r_bottom, r_top = _slab_brightness(preprocess.prepare(ramped, grid, transform=transform))
    c_bottom, c_top = _slab_brightness(preprocess.prepare(ramped, grid, transform=transform, bias_correction=True))
    n_bottom, n_top = _slab_brightness(preprocess.prepare(scan, grid, transform=transform, bias_correction=True))
    assert r_top / r_bottom < 0.85 * top / bottom, "the field should darken the top of the scaled scan"
    assert abs(c_top / c_bottom - top / bottom) < 0.05, (c_top / c_bottom, top / bottom)
    assert abs(n_bottom - bottom) < 0.02 and abs(n_top - top) < 0.02


def test_bias_correction_leaves_an_already_normalised_scan():
    """N4 models positive intensities: a scan with values at or below zero in its brain (BraTS z-scores,
    bias-corrected before) is returned as it is."""
    values = np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32)
    scan = sitk.GetImageFromArray(values)
    brain = sitk.GetImageFromArray(np.ones(values.shape, np.uint8))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(preprocess.correct_bias_field(scan, brain)), values)
