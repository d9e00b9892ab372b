"""DICOM in and out on the command line: `normativead restore SERIES_FOLDER --format dicom` on a series made
from the shipped sample case, read back with highdicom; and the series a run refuses, with what to do.

The runs use intensity-flair (no network: a run costs registration and writing only); the NIfTI run reuses
the DICOM run's transform.tfm, so the two see one registration and their images can be compared voxel for
voxel.
"""

from __future__ import annotations

import json
import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from testsupport import SAMPLE, write_dicom_series

from NormativeADLib import cli
from NormativeADLib.core import options
from NormativeADLib.core.errors import InputError
from NormativeADLib.io import dicom

MODEL = "intensity-flair"
SAMPLE_FLAIR = SAMPLE / "mslub_patient26_flair.nii.gz"


def restore(capsys, *args) -> tuple[int, str]:
    code = cli.main(["restore", *map(str, args), "--progress", "none"])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """The sample FLAIR as a DICOM MR series in a folder whose name states no contrast (its description does)."""
    folder = tmp_path_factory.mktemp("dicom") / "case_0001"
    uids = write_dicom_series(sitk.ReadImage(str(SAMPLE_FLAIR)), folder, description="AX FLAIR")
    return folder, uids


@pytest.fixture(scope="module")
def runs(series, tmp_path_factory):
    """One run with --format dicom, and one with --format nifti on the same series and registration."""
    folder, _ = series
    base = tmp_path_factory.mktemp("runs")
    assert cli.main(["restore", str(folder), "--model", MODEL, "--format", "dicom", "--out", str(base / "dicom"),
                     "--progress", "none"]) == 0
    assert cli.main(["restore", str(folder), "--model", MODEL, "--out", str(base / "nifti"), "--progress", "none",
                     "--transform", str(base / "dicom" / "transform.tfm"), "--no-figures"]) == 0
    return base / "dicom", base / "nifti"


def source_order(folder) -> list[str]:
    """The series' SOP Instance UIDs in GDCM's order: slice k of the volume read is image k."""
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    return [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]


def nifti(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def map_frames(path, order: list[str]) -> np.ndarray:
    """A Parametric Map's frames put back in the series' slice order through each frame's source image."""
    pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(path))
    sources = [order.index(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
               for f in pm.PerFrameFunctionalGroupsSequence]
    assert sorted(sources) == list(range(len(order)))  # one frame on every image of the series
    frames = np.empty_like(pm.pixel_array)
    frames[sources] = pm.pixel_array
    return frames, pm


@pytest.mark.slow  # two whole-scan runs of the command line
def test_a_series_folder_runs_and_every_output_is_written(runs, series):
    out, _ = runs
    assert sorted(p.name for p in out.iterdir()) == sorted(options.output_names("dicom"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["case"] == series[0].name
    assert metrics["contrast"]["scan"] == "FLAIR"
    assert metrics["contrast"]["source"] == "from the DICOM series description"


@pytest.mark.slow
def test_the_seg_references_the_source_series_and_holds_the_segmentation(runs, series):
    out, reference = runs
    folder, uids = series
    seg = hd.seg.segread(out / "segmentation.dcm")
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage and seg.SegmentationType == "BINARY"
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [uids["series"]]
    referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(uids["sop"])
    assert (seg.StudyInstanceUID, seg.FrameOfReferenceUID, seg.PatientID) == (uids["study"], uids["frame"], "NAD-TEST-1")
    assert seg.SeriesInstanceUID != uids["series"]
    described = seg.get_segment_description(1)
    assert described.segment_label == "anomaly"
    assert (described.segmented_property_category.value, described.segmented_property_type.value) == ("49755003",
                                                                                                       "52988006")
    order = source_order(folder)
    frames = seg.get_pixels_by_source_instance(order, segment_numbers=[1])[..., 0]
    written = nifti(reference / "segmentation.nii.gz")
    assert written.sum() > 1000  # the sample's lesions: the comparison is not of two empty masks
    np.testing.assert_array_equal(frames, written)
    metrics = json.loads((out / "metrics.json").read_text())
    voxel_ml = float(np.prod(sitk.ReadImage(str(reference / "segmentation.nii.gz")).GetSpacing())) / 1000
    assert metrics["per_case"]["anomaly_volume_ml"] == pytest.approx(frames.sum() * voxel_ml)


@pytest.mark.slow
def test_the_maps_and_the_brain_mask_hold_the_run_s_images_on_the_scan_grid(runs, series):
    out, reference = runs
    order = source_order(series[0])
    heatmap, pm = map_frames(out / "heatmap.dcm", order)
    np.testing.assert_allclose(heatmap, nifti(reference / "heatmap.nii.gz"), atol=1e-6)
    assert heatmap.max() > 0
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.LUTLabel == "anomaly score" and pm.ReferencedSeriesSequence[0].SeriesInstanceUID == series[1]["series"]
    pseudo, pm = map_frames(out / "pseudo_healthy.dcm", order)
    np.testing.assert_allclose(pseudo, nifti(reference / "pseudo_healthy.nii.gz"), rtol=1e-6, atol=1e-3)
    assert pm.RecognizableVisualFeatures == "YES"  # the scan outside the brain: a face may show
    uncertainty, _ = map_frames(out / "uncertainty.dcm", order)
    np.testing.assert_allclose(uncertainty, nifti(reference / "uncertainty.nii.gz"), atol=1e-6)
    brain = hd.seg.segread(out / "brain_mask.dcm")
    assert brain.get_segment_description(1).segmented_property_type.value == "12738006"  # SCT Brain
    np.testing.assert_array_equal(brain.get_pixels_by_source_instance(order, segment_numbers=[1])[..., 0],
                                  nifti(reference / "brain_mask.nii.gz"))


# ----------------------------------------------------------------------------------------------
# Refused before any analysis: each says what is wrong and what to do, and writes nothing


def test_a_folder_of_two_series_names_both_and_what_to_do(series, tmp_path, capsys):
    folder, uids = series
    two = tmp_path / "two"
    shutil.copytree(folder, two)
    other = write_dicom_series(sitk.ReadImage(str(SAMPLE / "mslub_patient26_t1.nii.gz")), tmp_path / "t1",
                               description="SAG T1", study_uid=uids["study"])
    for path in (tmp_path / "t1").iterdir():
        shutil.move(str(path), two / f"T1_{path.name}")
    code, err = restore(capsys, two, "--model", MODEL, "--out", tmp_path / "out")
    assert code == 2, err
    assert "holds 2 DICOM series" in err and uids["series"] in err and other["series"] in err
    assert "'AX FLAIR'" in err and "give the folder of one series" in err.lower()
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    # one file names the series to read: the library finds it among the two
    found = dicom.find_series(two / "T1_IM0003.dcm")
    assert found.uid == other["series"] and len(found.files) == len(other["sop"]) and found.description == "SAG T1"


@pytest.mark.parametrize("content, fragment", [
    ({}, "is empty"),
    ({"notes.txt": b"not an image"}, "holds no DICOM image series (1 files: notes.txt)"),
])
def test_a_folder_without_dicom_is_refused(tmp_path, capsys, content, fragment):
    folder = tmp_path / "scans"
    folder.mkdir()
    for name, data in content.items():
        (folder / name).write_bytes(data)
    code, err = restore(capsys, folder, "--model", MODEL, "--out", tmp_path / "out")
    assert code == 2 and fragment in err, err
    assert "give a folder holding one DICOM series" in err and not (tmp_path / "out").exists()


def test_format_dicom_needs_a_dicom_scan(tmp_path, capsys):
    code, err = restore(capsys, SAMPLE_FLAIR, "--model", MODEL, "--format", "dicom", "--out", tmp_path / "out")
    assert code == 2, err
    assert "--format dicom" in err and "no DICOM series" in err and "--format nifti or nrrd" in err
    assert not (tmp_path / "out").exists()


def test_outputs_never_go_into_the_series_folder(series, capsys):
    folder, _ = series
    before = sorted(p.name for p in folder.iterdir())
    code, err = restore(capsys, folder, "--model", MODEL, "--format", "dicom", "--out", folder)
    assert code == 4 and "series' own folder" in err, err
    assert sorted(p.name for p in folder.iterdir()) == before


def _copy_without(folder, tmp_path, drop=(), duplicate=None, truncate=None):
    copy = tmp_path / "series"
    shutil.copytree(folder, copy)
    for index in drop:
        (copy / f"IM{index:04d}.dcm").unlink()
    if truncate is not None:  # a copy cut short: GDCM leaves the file out of the series
        path = copy / f"IM{truncate:04d}.dcm"
        path.write_bytes(path.read_bytes()[:-100])
    if duplicate is not None:  # a second image at the same position (a second echo)
        ds = pydicom.dcmread(copy / f"IM{duplicate:04d}.dcm")
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(copy / "IM_echo2.dcm")
    return copy


@pytest.mark.parametrize("change, fragment", [
    ({"drop": [90]}, "unevenly spaced slices (gaps from 1 to 2 mm: missing slices?)"),
    ({"duplicate": 40}, "holds 183 images at 182 positions (several echoes"),
    ({"drop": range(5, 182)}, "holds 5 images: too few for a 3D brain volume"),
    # the last slice: without the check the volume would be read one slice short, silently
    ({"truncate": 181}, "1 of its files could not be read (IM0181.dcm: truncated or corrupt?); copy the series again"),
])
def test_a_broken_series_is_refused(series, tmp_path, capsys, change, fragment):
    copy = _copy_without(series[0], tmp_path, **change)
    code, err = restore(capsys, copy, "--model", MODEL, "--out", tmp_path / "out")
    assert code == 2 and fragment in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_format_dicom_needs_a_frame_of_reference(tmp_path, capsys):
    image = sitk.ReadImage(str(SAMPLE_FLAIR))
    folder = tmp_path / "no_frame"
    write_dicom_series(image, folder, frame_of_reference=False)
    for path in folder.iterdir():  # GDCM may add one: take it out, as some exporters leave it
        ds = pydicom.dcmread(path)
        if "FrameOfReferenceUID" in ds:
            del ds.FrameOfReferenceUID
            ds.save_as(path)
    code, err = restore(capsys, folder, "--model", MODEL, "--format", "dicom", "--out", tmp_path / "out")
    assert code == 2 and "has no FrameOfReferenceUID" in err and "--format nifti or nrrd" in err, err
    assert not (tmp_path / "out").exists()


def test_outputs_are_written_only_onto_the_series_analysed(series, tmp_path):
    """The writer reads the series again: images on another grid (the series changed during the run) are
    refused, nothing written."""
    folder, _ = series
    image = dicom.read_series(dicom.find_series(folder))
    shifted = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    shifted.CopyInformation(image)
    shifted.SetOrigin([v + 2.0 for v in image.GetOrigin()])
    producer = dicom.Producer(MODEL, "1", "z2 = 2", 2.0)
    with pytest.raises(InputError, match="does not lie where its images say"):
        dicom.write_outputs({"segmentation": shifted}, folder, tmp_path, producer)
    assert list(tmp_path.iterdir()) == []


def test_nothing_flagged_is_still_a_seg_on_every_image(series, tmp_path):
    folder, uids = series
    image = dicom.read_series(dicom.find_series(folder))
    empty = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(image)
    dicom.write_outputs({"segmentation": empty}, folder, tmp_path, dicom.Producer(MODEL, "1", "z2 = 2", 2.0))
    seg = hd.seg.segread(tmp_path / "segmentation.dcm")
    assert int(seg.NumberOfFrames) == len(uids["sop"])
    assert not seg.get_pixels_by_source_instance(source_order(folder), segment_numbers=[1]).any()
