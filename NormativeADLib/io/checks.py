"""Checks of an image file before and after it is read: header, payload and layout against what the
file claims (truncated, decompression bombs, absurd grids), and a scan's values (labels, non-finite
voxels). Every failure is an InputError that says what is wrong and what to do.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.locations import file_suffix

# A scan has many grey levels; a label map a handful of integers.
_MAX_LABEL_VALUES = 16
# Voxels coarser than this along any axis are no brain MRI (thick 2D slices reach 5-7 mm): a header error.
_MAX_SPACING_MM = 10.0
# A field of view smaller than the smallest brain (preprocess._MIN_BRAIN_ML) holds none.
MIN_FIELD_ML = 300.0
# Larger grids are refused before they are read (268 million voxels: 1 GB as float32, and the
# pipeline holds several copies); 0.5 mm over a whole head is 115 million.
_MAX_VOXELS = 1 << 28
_COMPLEX = {sitk.sitkComplexFloat32, sitk.sitkComplexFloat64}


def unreadable(path: Path, what: str, err: Exception) -> InputError:
    return InputError(f"{what} {path.name} could not be read (corrupt or truncated file?): {last_line(err)}")


def last_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown reason"


def check_header(path: Path, what: str = "scan") -> None:
    """Everything about an image file that its header tells, checked before its voxels are read."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise unreadable(path, what, err) from None
    name = path.name
    size = tuple(int(n) for n in reader.GetSize())
    _check_layout(size, reader.GetNumberOfComponents(), reader.GetPixelID(), name, what)
    spacing = tuple(float(v) for v in reader.GetSpacing()[:3])
    nifti = _nifti_header(path)
    if nifti is not None:  # ITK (and nibabel) read a NIfTI pixdim of 0 as 1 mm: the header must not
        spacing = tuple(abs(v) if math.isfinite(v) and v != 0 else v for v in nifti["pixdim"])
    check_spacing(spacing, name, what)
    check_voxel_count(size, name, what)
    voxels = math.prod(size)
    if nifti is not None:  # the data as stored (ITK reports scaled integers as float)
        _check_payload(path, nifti["voxels"] * nifti["voxel_bytes"], size, what, nifti["offset"])
        return _field_of_view_if_scan(size, spacing, name, what)
    try:
        pixel_bytes = sitk.Image([1, 1], reader.GetPixelID()).GetSizeOfPixelComponent()
    except RuntimeError:
        pixel_bytes = 0  # a pixel type SimpleITK cannot hold: ITK's reader reports it
    if pixel_bytes:
        _check_payload(path, voxels * pixel_bytes, size, what)
    _field_of_view_if_scan(size, spacing, name, what)


def check_voxel_count(size, name: str, what: str = "scan") -> None:
    """Refuse a grid too large to analyse before its voxels are read."""
    voxels = math.prod(size)
    if voxels > _MAX_VOXELS:
        raise InputError(f"{what} {name} has {_size_text(size)} voxels ({voxels / 1e6:.0f} million), more than "
                         f"{_MAX_VOXELS / 1e6:.0f} million; resample it to a coarser grid (1 mm is plenty: the "
                         "models work at 2 mm).")


def _field_of_view_if_scan(size, spacing, name: str, what: str) -> None:
    if what == "scan":
        check_field_of_view(size[:3], spacing, name)


def _nifti_header(path: Path) -> dict | None:
    """What a NIfTI-1/2 header says, as written (ITK and nibabel read a pixdim of 0 as 1 mm, and ITK
    reports scaled integer data as float): pixdim[1:4], voxel count, bytes per voxel on disk and the
    offset of the voxels. None when the file is no NIfTI or its header cannot be read."""
    if file_suffix(path) not in (".nii", ".nii.gz"):
        return None
    try:
        with (gzip.open(path, "rb") if file_suffix(path) == ".nii.gz" else open(path, "rb")) as handle:
            head = handle.read(540)
        for endian in "<>":
            size = struct.unpack(endian + "i", head[:4])[0]
            if size == 348:
                dims = struct.unpack(endian + "8h", head[40:56])
                bitpix = struct.unpack(endian + "h", head[72:74])[0]
                pixdim = struct.unpack(endian + "3f", head[80:92])
                offset = struct.unpack(endian + "f", head[108:112])[0]
            elif size == 540:
                dims = struct.unpack(endian + "8q", head[16:80])
                bitpix = struct.unpack(endian + "h", head[14:16])[0]
                pixdim = struct.unpack(endian + "3d", head[112:136])
                offset = struct.unpack(endian + "q", head[168:176])[0]
            else:
                continue
            if not 1 <= dims[0] <= 7 or bitpix <= 0 or bitpix % 8:
                return None
            return {"pixdim": pixdim, "voxels": math.prod(max(1, int(d)) for d in dims[1:dims[0] + 1]),
                    "voxel_bytes": bitpix // 8, "offset": max(int(offset) if math.isfinite(offset) else 0, size)}
    except (OSError, EOFError, struct.error, zlib.error, ValueError):
        pass
    return None


def _check_layout(size: tuple, components: int, pixel_id: int, name: str, what: str) -> None:
    if pixel_id in _COMPLEX:
        raise InputError(f"{what} {name} has complex voxels (raw or phase data?); give a real-valued magnitude "
                         "image (the magnitude of the complex data).")
    if components != 1:
        raise InputError(f"{what} {name} has vector/RGB voxels; give a single-channel MRI volume.")
    dim = len(size)
    if dim == 4 and size[3] != 1:
        raise InputError(f"{what} {name} is 4D ({size[3]} volumes); extract the one 3D volume to analyse.")
    if dim not in (3, 4):
        raise InputError(f"{what} {name} is {dim}D; a 3D brain MRI volume is needed.")
    if min(size[:3]) < 8:
        raise InputError(f"{what} {name} has size {size[:3]}: too thin for a 3D brain volume (a single slice?).")


def _size_text(size) -> str:
    return "x".join(str(int(n)) for n in size)


def _spacing_text(spacing) -> str:
    return " x ".join(f"{v:g}" for v in spacing) + " mm"


def check_spacing(spacing, name: str, what: str = "scan") -> None:
    """Voxel spacing must be positive, finite and no coarser than a brain MRI's."""
    if not all(math.isfinite(v) and v > 0 for v in spacing):
        raise InputError(f"{what} {name} has voxel spacing {_spacing_text(spacing)} in its header: spacing must be "
                         "positive; fix the header (NIfTI pixdim, NRRD spacings, MHA ElementSpacing).")
    if max(spacing) > _MAX_SPACING_MM:
        raise InputError(f"{what} {name} has voxel spacing {_spacing_text(spacing)}: coarser than any brain MRI "
                         f"(at most {_MAX_SPACING_MM:g} mm per axis); check the header's spacing and units.")


def check_field_of_view(size, spacing, name: str) -> None:
    """A scan whose whole field of view is smaller than the smallest brain cannot hold one."""
    field_ml = math.prod(n * s for n, s in zip(size, spacing)) / 1000.0
    if field_ml < MIN_FIELD_ML:
        raise InputError(f"no brain found: scan {name} covers only {field_ml:.3g} mL ({_size_text(size)} voxels of "
                         f"{_spacing_text(spacing)}), less than any brain ({MIN_FIELD_ML:g} mL); check the file "
                         "and its voxel spacing.")


# -- does the file hold what its header promises?

def _check_payload(path: Path, expected: int, size: tuple, what: str, nifti_offset: int | None = None) -> None:
    """Refuse a file shorter than its header's voxels, or whose compressed data fail their checksum.

    ITK reads compressed data only as far as the voxels go and never reaches the gzip checksum, so a
    damaged byte would pass silently as a changed voxel; the whole stream is inflated here (in chunks,
    about 50 ms for a 1 mm brain) and its CRC and length checked. Layouts not recognised are left to ITK.
    """
    layout = _data_layout(path, nifti_offset)
    if layout is None:
        return
    start, encoding, needed = layout
    needed += expected
    if encoding == "raw":
        held, complete = path.stat().st_size - start, True
    else:
        try:
            held, complete = _inflated_size(path, start, encoding)
        except zlib.error as err:
            raise InputError(f"{what} {path.name} could not be read: it is corrupt (its compressed data fail their "
                             f"integrity check: {err}); copy the file again from its source.") from None
    if held < needed or not complete:
        short = needed - held
        holds = (f"{short} bytes less" if 0 < short < expected / 100 else
                 f"{_megabytes(max(0, held - (needed - expected)))} of image data")
        raise InputError(f"{what} {path.name} could not be read: it is truncated or its header is wrong (the header "
                         f"promises {_size_text(size)} voxels, {_megabytes(expected)}, the file holds {holds}"
                         f"{'' if complete else ' and its compressed stream ends early'}); copy the file again.")


def _megabytes(nbytes: int) -> str:
    return f"{nbytes / 1e6:.3g} MB"


def _data_layout(path: Path, nifti_offset: int | None = None) -> tuple[int, str, int] | None:
    """(offset of the data in the file, "raw" | "gzip" | "zlib", bytes before the voxels in the
    inflated stream) of a file that holds its own voxels, or None."""
    suffix = file_suffix(path)
    with open(path, "rb") as handle:
        head = handle.read(2)
    if suffix in (".nii", ".nii.gz"):
        if nifti_offset is None:
            return None
        return (0, "gzip", nifti_offset) if head == b"\x1f\x8b" else (nifti_offset, "raw", 0)
    if suffix == ".nrrd":
        header, start = _text_header(path, b"\n\n")
        if header is None:
            return None
        fields = {k.strip().lower(): v.strip().lower() for k, _, v in
                  (line.partition(":") for line in header.splitlines()) if _}
        if "data file" in fields or "datafile" in fields:
            return None
        encoding = fields.get("encoding", "raw")
        if encoding == "raw":
            return start, "raw", 0
        if encoding in ("gzip", "gz"):
            return start, "gzip", 0
        return None
    if suffix == ".mha":
        header, start = _text_header(path, b"ElementDataFile")
        if header is None:
            return None
        with open(path, "rb") as handle:
            handle.seek(start)
            line = handle.readline()
        if line.split(b"=")[-1].strip().upper() != b"LOCAL":
            return None
        start += len(line)
        fields = {k.strip().lower(): v.strip().lower() for k, _, v in
                  (line.partition("=") for line in header.splitlines()) if _}
        return start, "zlib" if fields.get("compresseddata") == "true" else "raw", 0
    return None


def _text_header(path: Path, end: bytes, limit: int = 1 << 16) -> tuple[str | None, int]:
    with open(path, "rb") as handle:
        text = handle.read(limit)
    at = text.find(end)
    if at < 0:
        return None, 0
    if end == b"\n\n":
        return text[:at].decode(errors="replace"), at + 2
    return text[:at].decode(errors="replace"), at


def _inflated_size(path: Path, start: int, encoding: str) -> tuple[int, bool]:
    """(bytes the compressed data inflate to, whether the stream ended properly); zlib.error on a
    failed checksum or bad data. Memory stays at a few MB whatever the file claims."""
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    total, complete, buffer = 0, False, b""
    with open(path, "rb") as handle:
        handle.seek(start)
        while True:
            if not buffer:
                buffer = handle.read(1 << 20)
                if not buffer:
                    break
            total += len(inflater.decompress(buffer, 1 << 22))
            buffer = inflater.unconsumed_tail
            if not inflater.eof:
                continue
            complete = True
            rest = inflater.unused_data
            if encoding != "gzip":
                break
            if len(rest) < 2:
                rest += handle.read(2 - len(rest))
            if rest[:2] != b"\x1f\x8b":  # nothing, or padding, after the last gzip member
                break
            inflater, complete, buffer = zlib.decompressobj(wbits), False, rest
    return total, complete


def as_3d_scalar(image: sitk.Image, name: str, what: str) -> sitk.Image:
    if image.GetPixelID() in _COMPLEX:
        raise InputError(f"{what} {name} has complex voxels (raw or phase data?); give a real-valued magnitude "
                         "image (the magnitude of the complex data).")
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
    """Reject scans the models cannot interpret: bad spacing, too small to hold a brain, non-finite,
    empty, constant, label maps."""
    spacing = tuple(float(v) for v in image.GetSpacing())
    check_spacing(spacing, name)
    check_field_of_view(image.GetSize(), spacing, name)
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


def nifti_non_finite(path: Path, what: str = "scan") -> int:
    """NaN/Inf voxels of a NIfTI file, counted by nibabel: ITK's reader silently turns them into 0
    (and reads some truncated files without complaint, which nibabel refuses)."""
    if file_suffix(path) not in (".nii", ".nii.gz"):
        return 0
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise InputError(f"{what} {path.name} could not be read (corrupt or truncated file?): {err}") from None
    return int(np.size(data) - np.isfinite(data).sum()) if np.issubdtype(data.dtype, np.floating) else 0
