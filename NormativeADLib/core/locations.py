"""Where NormativeAD's files live, and how a name a user or a file gives becomes a path: only through
checked_name / child_path, and never outside the folder that owns it.

Standard library only: the Slicer module lists models through it before any heavy package is installed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import InputError
READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
# A scan may also be a DICOM series: its folder, or one of its files (io/dicom.py reads it).
DICOM_SUFFIXES = (".dcm", ".ima")


def home() -> Path:
    """The user's NormativeAD folder: imported and trained models, caches (NORMATIVEAD_HOME moves it)."""
    return Path(os.environ.get("NORMATIVEAD_HOME", Path.home() / ".cache" / "normativead"))


def prepared_cache() -> Path:
    """The default cache of scans prepared in model space (training, calibration, reports' healthy scans)."""
    return home() / "prepared"


def resources_dir() -> Path:
    """Shipped resources: beside the library in a checkout or Slicer, or inside an installed wheel."""
    override = os.environ.get("NORMATIVEAD_RESOURCES")
    if override:
        return Path(override)
    library = Path(__file__).resolve().parents[1]  # NormativeADLib/, this file being core/locations.py
    sibling = library.parent / "Resources"
    if sibling.is_dir():
        return sibling
    return library / "_shipped"  # a wheel installs Resources/ as NormativeADLib._shipped


def model_roots() -> list[Path]:
    """Model folders, searched in this order: the user's first, so they shadow shipped ones."""
    return [home() / "models", resources_dir() / "Models"]


SAMPLE_SCANS = {"T1": "mslub_patient26_t1.nii.gz", "FLAIR": "mslub_patient26_flair.nii.gz"}


def sample_case(contrast: str = "T1") -> tuple[Path, Path]:
    """The shipped sample case in a contrast: (scan, reference lesion mask); Resources/SampleData/ATTRIBUTION.txt
    says whose. T1 and FLAIR ship (same patient, same grid)."""
    if contrast not in SAMPLE_SCANS:
        raise InputError(f"the sample case ships in {', '.join(SAMPLE_SCANS)}, not {contrast}; choose a model of those.")
    folder = resources_dir() / "SampleData"
    return folder / SAMPLE_SCANS[contrast], folder / "mslub_patient26_lesion.nii.gz"


def check_input_file(path: str | os.PathLike, what: str = "scan", dicom: bool = False) -> Path:
    """The path of an image file to read, or InputError saying what is wrong (before any heavy work).

    dicom: a DICOM series is accepted too, as its folder or one of its files (io/dicom.py checks the series)."""
    path = Path(path)
    if dicom and is_dicom_input(path):
        return path
    if path.is_dir():
        also = "" if not dicom else ", or a folder holding one DICOM series"
        raise InputError(f"{what} {path} is a folder; give the image file inside it{also}.")
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}. Check the path.")
    if file_suffix(path) not in READABLE_SUFFIXES:
        raise InputError(f"{what} {path.name}: unsupported format; use one of {', '.join(READABLE_SUFFIXES)}.")
    return path


def is_dicom_file(path: str | os.PathLike) -> bool:
    """A DICOM file: the "DICM" mark after its 128-byte preamble, or a .dcm / .ima name."""
    path = Path(path)
    if file_suffix(path) in DICOM_SUFFIXES:
        return path.is_file()
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def is_dicom_input(path: str | os.PathLike) -> bool:
    """A scan given as a DICOM series: a folder (of one series; not one named like an image file, scan.nii.gz),
    or a DICOM file (the series it belongs to)."""
    path = Path(path)
    if file_suffix(path) in READABLE_SUFFIXES:
        return False
    return path.is_dir() or (path.is_file() and is_dicom_file(path))


def case_name(path: str | os.PathLike) -> str:
    """A scan's file name without its image suffix, or a DICOM series' folder name: the case's name in outputs."""
    path = Path(path)
    if path.is_dir():  # "." names its folder
        path = path.resolve()
    elif path.is_file() and is_dicom_input(path):
        path = path.resolve().parent
    name = path.name
    for suffix in READABLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# An untrusted name (model id, weights file, site, subject, session) as one path component: letters,
# digits and . _ - @ + only, starting with a letter or digit (so never "", "." or ".."), bounded length.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


def checked_name(value, what: str) -> str:
    """The one way an untrusted name becomes a path component, or InputError naming what is wrong."""
    if not isinstance(value, str):
        raise InputError(f"{what} must be a text name, not {type(value).__name__} ({str(value)[:40]!r}).")
    if not _SAFE_NAME.fullmatch(value) or ".." in value:
        raise InputError(f"{what} {value[:80]!r} is not a valid name: use 1-128 letters, digits, '.', '_', '-', "
                         "'@' or '+', starting with a letter or digit (no '/', no '..').")
    return value


def child_path(owner: str | os.PathLike, name, what: str) -> Path:
    """owner / name for an untrusted name, after checked_name: always a direct child of owner."""
    return Path(owner) / checked_name(name, what)


def is_inside(path: Path, owner: Path) -> bool:
    """path lies below owner (not owner itself), after resolving '..' and links of their parents."""
    resolved = path.parent.resolve() / path.name
    root = owner.resolve()
    return path.name not in ("", ".", "..") and resolved != root and resolved.is_relative_to(root)


def file_suffix(path: Path) -> str:
    """'.nii.gz' for gzipped NIfTI, else the last suffix, lower-case."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()
