"""Reading scans with their full geometry, and writing images.

Images travel through the library as SimpleITK images, so spacing, origin and direction are
never separated from the voxels. Arrays taken from them are in (z, y, x) order.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .paths import check_input_file, file_suffix

# A scan has many grey levels; a label map a handful of integers.
_MAX_LABEL_VALUES = 16
# Grids are "the same" when they agree within this fraction of a voxel.
_GRID_TOLERANCE = 1e-3


def read_image(path: str | os.PathLike, what: str = "scan") -> sitk.Image:
    """Read a 3D scalar image (NIfTI, NRRD, MHA) with its geometry; raise InputError otherwise."""
    path = check_input_file(path, what)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown reason"
        raise InputError(
            f"{what} {path.name} could not be read (corrupt or truncated file?): {first}"
        ) from None
    return _as_3d_scalar(image, path.name, what)


def _as_3d_scalar(image: sitk.Image, name: str, what: str) -> sitk.Image:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{what} {name} has vector/RGB voxels; give a single-channel MRI volume.")
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    elif dim == 4:
        raise InputError(
            f"{what} {name} is 4D ({image.GetSize()[3]} volumes); extract the one 3D volume to analyse."
        )
    elif dim != 3:
        raise InputError(f"{what} {name} is {dim}D; a 3D brain MRI volume is needed.")
    if min(image.GetSize()) < 8:
        raise InputError(
            f"{what} {name} has size {image.GetSize()}: too thin for a 3D brain volume (a single slice?)."
        )
    return image


def validate_scan(image: sitk.Image, name: str) -> None:
    """Reject scans the models cannot interpret: non-finite, empty, constant, label maps."""
    array = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(array)
    if not finite.all():
        raise InputError(
            f"scan {name} contains {int((~finite).sum())} NaN/Inf voxels; repair or mask them before analysis."
        )
    lo, hi = float(array.min()), float(array.max())
    if lo == hi:
        raise InputError(f"scan {name} is constant ({lo}); it holds no image. Check the file.")
    if _looks_like_labels(array):
        raise InputError(
            f"scan {name} looks like a label map (only {len(np.unique(array))} integer values); "
            "give the MRI scan as input and a mask with --mask or --reference."
        )


def _looks_like_labels(array: np.ndarray) -> bool:
    sample = array.ravel()[:: max(1, array.size // 200_000)]
    values = np.unique(sample)
    if len(values) > _MAX_LABEL_VALUES:
        return False
    return bool(np.all(values == np.round(values)))


def _nifti_non_finite(path: Path) -> int:
    """NaN/Inf voxels of a NIfTI file, counted by nibabel: ITK's reader silently turns them into 0
    (and reads some truncated files without complaint, which nibabel refuses)."""
    if file_suffix(path) not in (".nii", ".nii.gz"):
        return 0
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise InputError(f"scan {path.name} could not be read (corrupt or truncated file?): {err}") from None
    return int(np.size(data) - np.isfinite(data).sum()) if np.issubdtype(data.dtype, np.floating) else 0


def read_scan(path: str | os.PathLike) -> sitk.Image:
    """Read and validate the scan to analyse, as float32."""
    image = read_image(path, "scan")
    bad = _nifti_non_finite(Path(path))
    if bad:
        raise InputError(
            f"scan {Path(path).name} contains {bad} NaN/Inf voxels; repair or mask them before analysis."
        )
    validate_scan(image, Path(path).name)
    return sitk.Cast(image, sitk.sitkFloat32)


def read_mask(path: str | os.PathLike, reference: sitk.Image, what: str = "mask") -> sitk.Image:
    """Read a binary mask that must lie on the reference's grid; returns a uint8 0/1 image."""
    mask = read_image(path, what)
    check_same_grid(mask, reference, f"{what} {Path(path).name}")
    array = sitk.GetArrayFromImage(mask)
    if not np.isfinite(array).all():
        raise InputError(f"{what} {Path(path).name} contains NaN/Inf voxels.")
    binary = sitk.GetImageFromArray((array > 0.5).astype(np.uint8))
    binary.CopyInformation(reference)
    return binary


def read_transform(path: str | os.PathLike) -> sitk.Transform:
    """A registration written by an earlier run (transform.tfm: model/MNI points -> scan points)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"transform file not found: {path}; give a transform.tfm written by an earlier run.")
    try:
        return sitk.ReadTransform(str(path))
    except RuntimeError:
        raise InputError(f"transform {path.name} could not be read; give a transform.tfm written by an earlier run.") from None


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
    """Write with compression; callers write into an atomic_output_dir staging folder."""
    sitk.WriteImage(image, str(path), useCompression=True)
