"""DICOM in and out: a scan read from a DICOM series (its folder, or one of its files), and a run's images
written as DICOM objects that reference that series, one file each on the scan's grid: the masks as DICOM
Segmentations (SEG), the maps as Parametric Maps, frame k on the series' image k.

GDCM (SimpleITK's ImageSeriesReader) finds and sorts the series; pydicom reads its headers, which are checked
before any voxel is read: one series of single-frame images, one size, spacing and orientation, stacked
evenly along their normal (no missing slice, no gantry tilt, no second echo at the same position). The
volume read is then checked against every image's position, so that the scan is the series as acquired and
every output frame lies on the image it names. highdicom writes the outputs (imported only then).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..core.errors import InputError
from ..core.locations import is_dicom_file, is_dicom_input
from ..core.options import STUDY_OUTPUTS, guess_contrast
from .checks import as_3d_scalar, check_spacing, check_voxel_count, last_line

# Positions agree when within this fraction of a voxel (plus 0.01 mm): slices evenly spaced, volume and
# images on one grid.
_POSITION_TOLERANCE = 0.01
# Series listed by name in the message of a folder holding several.
_LISTED_SERIES = 6
# Fewer images than this make no 3D brain volume (io.checks.as_3d_scalar says the same of a file).
_MIN_SLICES = 8
# Every object says so (a Parametric Map's Content Qualification says RESEARCH too).
_RESEARCH = "; research, not for diagnosis"
# The attributes a SEG or Parametric Map takes from the images it references.
_REFERENCED = ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID")


@dataclass(frozen=True)
class Series:
    """One DICOM series as GDCM sorts it: files[k] is slice k of the volume read."""

    folder: Path
    uid: str
    files: tuple[Path, ...]
    description: str
    protocol: str
    modality: str

    @property
    def name(self) -> str:
        return self.folder.name or str(self.folder)

    def label(self) -> str:
        what = " ".join(w for w in (self.modality, repr(self.description) if self.description else "") if w)
        return f"{self.uid} ({what + ', ' if what else ''}{len(self.files)} file{'s' * (len(self.files) != 1)})"


def find_series(path: str | os.PathLike, what: str = "scan") -> Series:
    """The one DICOM series of a folder, or the series a DICOM file belongs to (read from its folder);
    InputError when there is none, or several and no file says which."""
    import pydicom

    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} not found: {path}. Check the path.")
    if not is_dicom_input(path):
        raise InputError(f"{what} {path.name} is no DICOM series folder or file.")
    folder = path if path.is_dir() else path.parent
    wanted = None
    if path.is_file():
        try:
            wanted = str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
                         .SeriesInstanceUID)
        except (OSError, AttributeError, ValueError, pydicom.errors.InvalidDicomError) as err:
            raise InputError(f"{what} {path.name} could not be read as DICOM (corrupt, or no image file?): "
                             f"{last_line(err)}") from None
    try:
        ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError as err:
        raise InputError(f"{what} folder {folder} could not be read: {last_line(err)}") from None
    if wanted is not None:
        if wanted not in ids:
            raise InputError(f"{what} {path.name} belongs to DICOM series {wanted}, which GDCM finds no image of in "
                             f"{folder}; give the folder of an image series.")
        ids = [wanted]
    if not ids:
        raise InputError(_no_series(folder, what))
    series = [_series(folder, uid) for uid in ids]
    if len(series) > 1:
        listed = "; ".join(s.label() for s in series[:_LISTED_SERIES])
        more = f"; and {len(series) - _LISTED_SERIES} more" if len(series) > _LISTED_SERIES else ""
        raise InputError(f"{what} folder {folder} holds {len(series)} DICOM series: {listed}{more}. Give the folder "
                         "of one series (move the others out), or one file of the series to analyse (its series is "
                         "read from the folder).")
    _check_complete(series[0], what)
    return series[0]


def _check_complete(series: Series, what: str) -> None:
    """Refuse a series with files GDCM left out (truncated or corrupt): it would be read without those slices,
    silently when they are the first or last."""
    import pydicom

    members = {path.name for path in series.files}
    unread = []
    for entry in sorted(os.scandir(series.folder), key=lambda e: e.name):
        if entry.name in members or entry.name.startswith(".") or not entry.is_file() or not is_dicom_file(entry.path):
            continue
        try:
            uid = pydicom.dcmread(entry.path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]) \
                .get("SeriesInstanceUID")
        except (OSError, ValueError, pydicom.errors.InvalidDicomError):
            continue
        if str(uid or "") == series.uid:
            unread.append(entry.name)
    if unread:
        shown = ", ".join(unread[:3]) + (", ..." if len(unread) > 3 else "")
        raise InputError(f"{what} series {series.uid} in {series.folder}: {len(unread)} of its files could not be read "
                         f"({shown}: truncated or corrupt?); copy the series again.")


def _series(folder: Path, uid: str) -> Series:
    import pydicom

    files = tuple(Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    header = {}
    if files:
        try:
            header = pydicom.dcmread(files[0], stop_before_pixels=True,
                                     specific_tags=["SeriesDescription", "ProtocolName", "Modality"])
        except (OSError, ValueError, pydicom.errors.InvalidDicomError):
            pass
    return Series(folder, uid, files, str(getattr(header, "SeriesDescription", "") or "").strip(),
                  str(getattr(header, "ProtocolName", "") or "").strip(), str(getattr(header, "Modality", "") or ""))


def _no_series(folder: Path, what: str) -> str:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        return f"{what} folder {folder} could not be read ({err.strerror}); check its permissions."
    files = [e.name for e in entries if e.is_file() and not e.name.startswith(".")]
    folders = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    give = "give a folder holding one DICOM series, or a NIfTI, NRRD or MHA file"
    if not files and not folders:
        return f"{what} folder {folder} is empty; {give}."
    if not files:
        shown = ", ".join(folders[:5]) + (", ..." if len(folders) > 5 else "")
        return (f"{what} folder {folder} holds no DICOM files itself but {len(folders)} folder"
                f"{'s' * (len(folders) != 1)} ({shown}): give the folder of one series.")
    shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
    return f"{what} folder {folder} holds no DICOM image series ({len(files)} files: {shown}); {give}."


def described_contrast(series: Series) -> str | None:
    """The contrast the series' description or protocol name states (AX FLAIR, t2_tse, MPRAGE is not one)."""
    for text in (series.description, series.protocol):
        contrast = guess_contrast(text) if text else None
        if contrast:
            return contrast
    return None


def series_bytes(series: Series) -> int:
    total = 0
    for path in series.files:
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total


# ----------------------------------------------------------------------------------------------
# Reading


def read_headers(series: Series, what: str = "scan") -> list:
    """The series' headers (no pixel data), in its order, checked to make one evenly stacked volume."""
    import pydicom

    headers = []
    for path in series.files:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
        except (OSError, ValueError, pydicom.errors.InvalidDicomError) as err:
            raise InputError(f"{what} file {path.name} of series {series.uid} could not be read (corrupt or truncated "
                             f"file?): {last_line(err)}; copy the series again.") from None
    _check_headers(series, headers, what)
    return headers


def _check_headers(series: Series, headers: list, what: str) -> None:
    name = f"series {series.uid} in {series.folder}"
    frames = [int(getattr(h, "NumberOfFrames", 1) or 1) for h in headers]
    if max(frames) > 1:
        raise InputError(f"{what} {name} is a multi-frame (enhanced) DICOM image of {max(frames)} frames; this "
                         "version reads classic series of one image per file. Convert it (dcm2niix to NIfTI) and "
                         "give that file.")
    if len(headers) < _MIN_SLICES:
        raise InputError(f"{what} {name} holds {len(headers)} image{'s' * (len(headers) != 1)}: too few for a 3D "
                         "brain volume (a localizer or a single slice?). Give the series of a 3D volume.")
    needed = ("Rows", "Columns", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient")
    for header, path in zip(headers, series.files):
        missing = [k for k in needed if getattr(header, k, None) in (None, "")]
        if missing:
            raise InputError(f"{what} file {path.name} of {name} has no {', '.join(missing)}: not an image a volume "
                             "can be built from (a report, a secondary capture?). Give an MR image series.")
        if int(getattr(header, "SamplesPerPixel", 1) or 1) != 1:
            raise InputError(f"{what} {name} has colour (RGB) images; give a single-channel MRI series.")
    layout = [(int(h.Rows), int(h.Columns)) for h in headers]
    orientation = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
    pixel = np.array([[float(v) for v in h.PixelSpacing] for h in headers])
    if len(set(layout)) > 1 or not np.allclose(orientation, orientation[0], atol=1e-4) \
            or not np.allclose(pixel, pixel[0], rtol=1e-4):
        raise InputError(f"{what} {name} mixes images of different sizes, spacings or orientations (a localizer, "
                         "or several acquisitions under one series?); give the series of one 3D volume.")
    rows, columns = layout[0]
    check_voxel_count((columns, rows, len(headers)), name, what)
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    if orientation.shape[1] != 6 or positions.shape[1] != 3 or not np.isfinite(positions).all() \
            or not np.isfinite(orientation).all() or not np.isfinite(pixel).all():
        raise InputError(f"{what} {name} has malformed image positions or orientations; check the series.")
    normal = np.cross(orientation[0, :3], orientation[0, 3:])
    if not math.isclose(float(np.linalg.norm(normal)), 1.0, abs_tol=1e-3):
        raise InputError(f"{what} {name} has an image orientation that is no pair of perpendicular unit vectors "
                         f"({list(orientation[0])}); check the series.")
    along = positions @ normal
    gaps = np.diff(along)
    repeated = int((np.diff(np.sort(along)) < 0.01).sum())
    if repeated:
        raise InputError(f"{what} {name} holds {len(along)} images at {len(along) - repeated} positions (several "
                         "echoes, time points or b-values in one series?); give a series of one 3D volume.")
    spacing = float(np.median(np.abs(gaps)))
    check_spacing((float(pixel[0][1]), float(pixel[0][0]), spacing), name, what)
    tolerance = _POSITION_TOLERANCE * spacing + 0.01
    if np.abs(np.abs(gaps) - spacing).max() > tolerance or not (np.all(gaps > 0) or np.all(gaps < 0)):
        raise InputError(f"{what} {name} has unevenly spaced slices (gaps from {np.abs(gaps).min():.3g} to "
                         f"{np.abs(gaps).max():.3g} mm: missing slices?); give the complete series, or convert it "
                         "(dcm2niix) and give the resampled file.")
    stacked = positions[0] + np.outer(along - along[0], normal)
    if np.abs(positions - stacked).max() > tolerance:
        raise InputError(f"{what} {name} has slices that are not stacked along their normal (a gantry tilt?); "
                         "convert it (dcm2niix corrects tilts) and give the resulting file.")


def read_series(series: Series, what: str = "scan") -> sitk.Image:
    """The series as one 3D image with its geometry (InputError on anything unreadable or inconsistent)."""
    headers = read_headers(series, what)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"{what} series {series.uid} in {series.folder} could not be read (corrupt or truncated "
                         f"file?): {last_line(err)}") from None
    image = as_3d_scalar(image, series.name, what)
    check_on_images(image, headers, series, what)
    return image


def check_on_images(image: sitk.Image, headers: list, series: Series, what: str = "scan") -> None:
    """Raise InputError unless slice k of image lies on the series' image k (size, spacing, position)."""
    rows, columns = int(headers[0].Rows), int(headers[0].Columns)
    spacing = min(image.GetSpacing())
    tolerance = _POSITION_TOLERANCE * spacing + 0.01
    same = image.GetSize() == (columns, rows, len(headers)) and all(
        np.allclose(image.TransformIndexToPhysicalPoint((0, 0, k)), [float(v) for v in h.ImagePositionPatient],
                    atol=tolerance) for k, h in enumerate(headers))
    same = same and np.allclose(image.GetDirection()[0::3], [float(v) for v in headers[0].ImageOrientationPatient[:3]],
                                atol=1e-4)
    if not same:
        raise InputError(f"{what} series {series.uid} in {series.folder} does not lie where its images say (the "
                         "volume read and the images' positions disagree; did the series change meanwhile?). Run "
                         "again, or convert it (dcm2niix) and give the resulting file.")


# ----------------------------------------------------------------------------------------------
# Writing: a run's images as DICOM objects that reference the series


def check_referencable(series: Series, what: str = "scan") -> list:
    """The series' headers when DICOM outputs can reference it: InputError otherwise (before the analysis)."""
    headers = read_headers(series, what)
    for key in _REFERENCED:
        missing = [p.name for h, p in zip(headers, series.files) if not str(getattr(h, key, "") or "")]
        if missing:
            raise InputError(f"--format dicom: {what} series {series.uid} has no {key} in {missing[0]}"
                             f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}; a DICOM SEG and "
                             "Parametric Map must carry it from the images they reference. Give --format nifti or "
                             "nrrd.")
    frames = {str(h.FrameOfReferenceUID) for h in headers}
    if len(frames) > 1:
        raise InputError(f"--format dicom: {what} series {series.uid} spans {len(frames)} frames of reference; "
                         "give --format nifti or nrrd.")
    if len({str(h.SOPInstanceUID) for h in headers}) < len(headers):
        raise InputError(f"--format dicom: {what} series {series.uid} has images that share a SOP Instance UID, so "
                         "no output could say which it lies on; give --format nifti or nrrd.")
    return headers


@dataclass(frozen=True)
class Segment:
    """A mask written as a DICOM SEG: its label and SNOMED CT category and type (DICOM CID 7150/7151)."""

    label: str
    category: object  # pydicom Code
    kind: object
    rgb: tuple[float, float, float]


@dataclass(frozen=True)
class Map:
    """A map written as a DICOM Parametric Map: its real-world value label (16 characters at most)."""

    label: str
    explanation: str
    signal: bool  # scan intensities (a restoration, a registered volume): may show the face, arbitrary units


def output_objects() -> dict:
    """What each image of a run becomes (options.IMAGE_OUTPUTS; a study's images by prefix)."""
    from pydicom.sr.codedict import codes

    # the codes and colour of the Slicer module's anomaly segment (NormativeADSlicerLib/scene.py)
    return {
        "segmentation": Segment("anomaly", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion,
                                (1.0, 0.9, 0.1)),
        "brain_mask": Segment("brain", codes.cid7150.AnatomicalStructure, codes.SCT.Brain, (0.3, 0.6, 1.0)),
        "heatmap": Map("anomaly score", "anomaly score", False),
        "uncertainty": Map("uncertainty", "half the heatmap's change under a left-right mirror", False),
        "pseudo_healthy": Map("MR signal", "pseudo-healthy restoration, scan units", True),
        "registered": Map("MR signal", "study volume registered onto the scan", True),
    }


@dataclass(frozen=True)
class Producer:
    """Who made the outputs: written into every object (equipment, algorithm, series description)."""

    model_id: str
    model_version: str
    threshold: str  # e.g. "fpr5 = 0.2314"
    threshold_value: float


def write_outputs(images: dict, source: str | os.PathLike, folder: Path, producer: Producer,
                  suffix: str = ".dcm") -> list[Path]:
    """Write every image (name -> image on the scan's grid) as one DICOM file in folder, referencing the
    source series, which is read again and must still be the one analysed (InputError otherwise)."""
    series = find_series(source)
    headers = check_referencable(series)
    for image in images.values():
        check_on_images(image, headers, series)
    kinds = output_objects()
    number = int(getattr(headers[0], "SeriesNumber", 0) or 0)
    written = []
    for index, (name, image) in enumerate(images.items(), start=1):
        kind = kinds.get(name) or kinds[next(s for s in STUDY_OUTPUTS if name.startswith(s + "_"))]
        dataset = _object(name, kind, image, headers, producer, min(number * 100 + index, 2**31 - 1))
        path = folder / (name + suffix)
        dataset.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def _object(name: str, kind, image: sitk.Image, headers: list, producer: Producer, series_number: int):
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    array = sitk.GetArrayFromImage(image)  # (z, y, x): frame k on image k, rows y, columns x
    common = dict(series_instance_uid=generate_uid(), series_number=series_number, sop_instance_uid=generate_uid(),
                  instance_number=1, manufacturer="NormativeAD", manufacturer_model_name=producer.model_id[:64],
                  software_versions=__version__, device_serial_number=producer.model_version[:64] or "none")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"NormativeAD {producer.model_id}"[:64], family=codes.cid7162.ArtificialIntelligence,
        version=producer.model_version[:64] or "none", parameters={"threshold": producer.threshold[:64]})
    content = dict(content_description=f"NormativeAD {name.replace('_', ' ')}"[:64 - len(_RESEARCH)] + _RESEARCH,
                   content_label=name.upper()[:16])
    if isinstance(kind, Segment):
        segment = hd.seg.SegmentDescription(
            segment_number=1, segment_label=kind.label, segmented_property_category=kind.category,
            segmented_property_type=kind.kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, anatomic_regions=[codes.SCT.Brain],
            display_color=hd.color.CIELabColor.from_rgb(*(round(255 * c) for c in kind.rgb)))
        mask = (array > 0).astype(np.uint8)
        dataset = hd.seg.Segmentation(
            source_images=headers, pixel_array=mask, omit_empty_frames=bool(mask.any()),  # nothing flagged: all frames
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment], **content,
            **common)
    else:
        values = array.astype(np.float32)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        mapping = hd.pm.RealWorldValueMapping(
            lut_label=kind.label[:16], lut_explanation=f"{kind.explanation}; {producer.model_id}"[:64],
            unit=codes.UCUM.ArbitraryUnit if kind.signal else codes.UCUM.NoUnits, value_range=(low, high),
            slope=1.0, intercept=0.0, quantity_definition=codes.DCM.MRSignalIntensity if kind.signal else None)
        center, width = _window(values, kind, producer.threshold_value)
        dataset = hd.pm.ParametricMap(
            source_images=headers, pixel_array=values, contains_recognizable_visual_features=kind.signal,
            real_world_value_mappings=[mapping],
            voi_lut_transformations=[hd.VOILUTTransformation(window_center=center, window_width=width)], **content,
            **common)
    dataset.SeriesDescription = f"NormativeAD {name} ({producer.model_id})"[:64]
    return dataset


def _window(values: np.ndarray, kind: Map, threshold: float) -> tuple[float, float]:
    """A display window: scan intensities from their 1st to 99th percentile, scores from 0 to twice the
    threshold (the threshold mid-grey)."""
    if kind.signal:
        low, high = (float(v) for v in np.percentile(values, [1, 99]))
    else:
        low, high = 0.0, 2 * threshold if math.isfinite(threshold) and threshold > 0 else float(values.max())
    width = max(high - low, 1e-6)
    return low + width / 2, width

