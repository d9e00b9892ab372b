"""Reading scans with their full geometry, and writing images.

Images travel through the library as SimpleITK images, so spacing, origin and direction are
never separated from the voxels. Arrays taken from them are in (z, y, x) order.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core import warm
from ..core.errors import InputError, OutputError
from ..core.locations import case_name, check_input_file, is_dicom_input
from ..core.interrupts import interrupts_held
from . import dicom
from .checks import MIN_FIELD_ML, as_3d_scalar, check_header, last_line, nifti_non_finite, unreadable, validate_scan

# Grids are "the same" when they agree within this fraction of a voxel.
_GRID_TOLERANCE = 1e-3
# A mask larger than any brain (preprocess._MAX_BRAIN_ML) is not a brain mask (a head, the whole field).
_MAX_MASK_ML = 2500.0


def read_image(path: str | os.PathLike, what: str = "scan") -> sitk.Image:
    """Read a 3D scalar image (NIfTI, NRRD, MHA) with its geometry; raise InputError otherwise.

    The header is checked before the voxels are read (check_header: layout, spacing, size, and that
    the file holds the data its header promises, compressed data through its checksum), so a hostile
    or damaged file answers in one line without reading gigabytes.
    """
    path = check_input_file(path, what)
    # ITK's readers print warnings about odd headers on the C stderr: kept back while the file is
    # checked (a refused file answers in one line), passed on once it has been read. A cancel waits
    # for the end of the block, so stderr is never left redirected.
    with interrupts_held(), _c_stderr() as captured:
        check_header(path, what)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as err:
            raise unreadable(path, what, err) from None
    if captured and captured[0].strip():
        os.write(2, captured[0].encode())
    return as_3d_scalar(image, path.name, what)


def read_scan(path: str | os.PathLike) -> sitk.Image:
    """Read and validate the scan to analyse, as float32 (once per file state in a warm worker)."""
    return warm.read("scan", path, lambda: _read_scan(path))


def _read_scan(path: str | os.PathLike) -> sitk.Image:
    if is_dicom_input(path):
        image = read_dicom(path)
        validate_scan(image, case_name(path))
        return sitk.Cast(image, sitk.sitkFloat32)
    image = read_image(path, "scan")
    bad = nifti_non_finite(Path(path))
    if bad:
        raise InputError(
            f"scan {Path(path).name} contains {bad} NaN/Inf voxels; repair or mask them before analysis."
        )
    validate_scan(image, Path(path).name)
    return sitk.Cast(image, sitk.sitkFloat32)


def read_dicom(path: str | os.PathLike, what: str = "scan") -> sitk.Image:
    """A DICOM series (its folder, or one of its files) as one 3D image, after its headers are checked
    (io/dicom.py); GDCM's warnings are kept back while it is read, as read_image does."""
    with interrupts_held(), _c_stderr() as captured:
        image = dicom.read_series(dicom.find_series(path, what), what)
    if captured and captured[0].strip():
        os.write(2, captured[0].encode())
    return image


def read_mask(path: str | os.PathLike, reference: sitk.Image, what: str = "mask") -> sitk.Image:
    """Read a binary mask that must lie on the reference's grid; returns a uint8 0/1 image.

    NaN/Inf voxels are refused (ITK would read them as 0), and so is a mask larger than any brain."""
    mask = read_image(path, what)
    name = Path(path).name
    check_same_grid(mask, reference, f"{what} {name}")
    array = sitk.GetArrayFromImage(mask)
    bad = nifti_non_finite(Path(path), what) or int(array.size - np.isfinite(array).sum())
    if bad:
        raise InputError(f"{what} {name} contains {bad} NaN/Inf voxels; a mask holds 1 inside and 0 outside, "
                         "nothing else. Repair it or give none.")
    inside = array > 0.5
    volume_ml = float(inside.sum()) * float(np.prod(reference.GetSpacing())) / 1000.0
    if what == "mask" and volume_ml < MIN_FIELD_ML:
        empty = "is empty" if not inside.any() else f"marks only {volume_ml:.3g} mL, less than any brain"
        raise InputError(f"mask {name} {empty} (a brain holds at least {MIN_FIELD_ML:g} mL); give a brain mask "
                         "with 1 inside the brain, or none (the brain is then found automatically).")
    if volume_ml > _MAX_MASK_ML:
        held = "brain" if what == "mask" else "lesion"
        raise InputError(f"{what} {name} marks {volume_ml:.0f} mL, far more than any brain (at most "
                         f"{_MAX_MASK_ML:g} mL): not a {held} mask (a head mask, or the whole field of view?). "
                         f"Give a {held} mask with 1 inside and 0 outside.")
    binary = sitk.GetImageFromArray(inside.astype(np.uint8))
    binary.CopyInformation(reference)
    return binary


def check_inputs(scan_path: str | os.PathLike, mask_path: str | os.PathLike | None = None,
                 reference_path: str | os.PathLike | None = None,
                 transform_path: str | os.PathLike | None = None, dicom_output: bool = False) -> None:
    """Read and check a run's files (InputError on the first problem) without the heavy packages of
    the analysis: the command line calls it before importing torch, so a bad file answers in a second.
    dicom_output: the outputs will be DICOM objects referencing the scan's series (restore --format dicom)."""
    scan = read_scan(scan_path)
    if dicom_output:
        dicom.check_referencable(dicom.find_series(scan_path))
    for path, what in ((mask_path, "mask"), (reference_path, "reference")):
        if path:
            read_mask(path, scan, what)
    if transform_path:
        read_transform(transform_path)


def read_transform(path: str | os.PathLike) -> sitk.Transform:
    """A registration written by an earlier run (transform.tfm: model/MNI points -> scan points)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"transform file not found: {path}; give a transform.tfm written by an earlier run.")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError:
        raise InputError(f"transform {path.name} could not be read; give a transform.tfm written by an earlier run.") from None
    if transform.GetDimension() != 3 or not transform.IsLinear():
        kind = f"{transform.GetDimension()}D {transform.GetName()}"
        raise InputError(f"transform {path.name} is a {kind}; give the 3D affine transform.tfm an earlier run "
                         "wrote (model/MNI to scan), or none.")
    values = tuple(transform.GetParameters()) + tuple(transform.GetFixedParameters())
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"transform {path.name} holds NaN/Inf parameters; give a transform.tfm written by an "
                         "earlier run, or none.")
    if transform.GetDimension() == 3 and len(transform.GetParameters()) == 12:  # affine: 3x3 matrix, translation
        scale = abs(float(np.linalg.det(np.reshape(values[:9], (3, 3))))) ** (1 / 3)
        if not 0.1 < scale < 10:
            raise InputError(f"transform {path.name} is degenerate (it scales volumes by {scale ** 3:.3g}); give a "
                             "transform.tfm written by an earlier run on this scan, or none.")
    return transform


def check_same_grid(image: sitk.Image, reference: sitk.Image, what: str) -> None:
    """Raise InputError unless image and reference share size, spacing, origin and direction."""
    if image.GetSize() != reference.GetSize():
        raise InputError(
            f"{what} has size {image.GetSize()} but the scan {reference.GetSize()}; "
            "resample it onto the scan's grid first."
        )
    spacing = np.array(reference.GetSpacing())
    tol = _GRID_TOLERANCE * spacing.min()
    if (
        not np.allclose(image.GetSpacing(), spacing, atol=tol)
        or not np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=tol * 10)
        or not np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-4)
    ):
        raise InputError(
            f"{what} has the scan's size but not its spacing/origin/direction; "
            "resample it onto the scan's grid first."
        )


def image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """An image with the reference's geometry holding array (z, y, x)."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def write_image(image: sitk.Image, path: str | os.PathLike) -> None:
    """Write with compression; callers write into an atomic_output_dir staging folder.

    ITK's NIfTI writer reports a failed write (a full disk) only on the C stderr and goes on: that
    stream is captured here, so a failure raises (OSError ENOSPC when the disk is full, which
    atomic_output_dir reports with the space needed; OutputError otherwise) and prints nothing more.
    """
    path = Path(path)
    failure = None
    with interrupts_held(), _c_stderr() as captured:
        try:
            sitk.WriteImage(image, str(path), useCompression=True)
        except RuntimeError as err:
            failure = last_line(err)
    noise = captured[0] if captured else ""
    if failure is None and "error" in noise.lower():
        failure = last_line(Exception(noise))
    elif noise.strip():
        os.write(2, noise.encode())  # a warning, not a failure: pass it on
    if failure is None and (not path.is_file() or path.stat().st_size == 0):
        failure = "nothing was written"
    if failure is None:
        return
    needed = image.GetNumberOfPixels() * image.GetNumberOfComponentsPerPixel() * image.GetSizeOfPixelComponent()
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < needed:
        raise OSError(errno.ENOSPC, f"No space left on device ({failure})", str(path))
    raise OutputError(f"could not write {path.name}: {failure}; check the output folder's disk.")


@contextmanager
def _c_stderr():
    """Capture what C libraries print on file descriptor 2 in the block (a list holding it afterwards)."""
    captured: list[str] = []
    try:
        sink = tempfile.TemporaryFile()
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (pythonw): nothing to capture
        yield captured
        return
    try:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError, OSError):
            pass
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
    finally:
        os.close(saved)
        try:
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))
        finally:
            sink.close()
