"""Where NormativeAD's files live, and how they are written so that none is ever half-written.

Standard library only: the Slicer module lists models and checks an output folder through this
module before any of the heavy packages (torch, SimpleITK, nibabel) is installed or imported.
"""

from __future__ import annotations

import csv
import importlib.resources
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError, OutputError

READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def home() -> Path:
    """The user's NormativeAD folder: imported and trained models, caches (NORMATIVEAD_HOME moves it)."""
    return Path(os.environ.get("NORMATIVEAD_HOME", Path.home() / ".cache" / "normativead"))


def resources_dir() -> Path:
    """Shipped resources: beside the library in a checkout or Slicer, or inside an installed wheel."""
    override = os.environ.get("NORMATIVEAD_RESOURCES")
    if override:
        return Path(override)
    sibling = Path(__file__).resolve().parent.parent / "Resources"
    if sibling.is_dir():
        return sibling
    return Path(str(importlib.resources.files("NormativeADLib._shipped")))


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


def check_input_file(path: str | os.PathLike, what: str = "scan") -> Path:
    """The path of an image file to read, or InputError saying what is wrong (before any heavy work)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give the image file inside it.")
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}. Check the path.")
    if file_suffix(path) not in READABLE_SUFFIXES:
        raise InputError(f"{what} {path.name}: unsupported format; use one of {', '.join(READABLE_SUFFIXES)}.")
    return path


def case_name(path: str | os.PathLike) -> str:
    """A scan's file name without its image suffix: the case's name in outputs."""
    name = Path(path).name
    for suffix in READABLE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def write_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    """Rows as CSV, columns in first-seen order, None as an empty cell (the one CSV writer)."""
    path = Path(path)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return path


def file_suffix(path: Path) -> str:
    """'.nii.gz' for gzipped NIfTI, else the last suffix, lower-case."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def check_writable(out_dir: Path, names: Iterable[str], overwrite: bool) -> None:
    """Raise OutputError now, before any work, if outputs could not be written into out_dir."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} is a file; give a folder.")
    existing = [n for n in names if (out_dir / n).exists()]
    if existing and not overwrite:
        raise OutputError(
            f"{out_dir / existing[0]} already exists; choose another --out folder or pass --overwrite."
        )
    ancestor = out_dir
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {out_dir} ({ancestor} is not a writable folder); choose another --out.")
    try:  # a real probe: permission bits say yes to root on read-only or virtual file systems (/proc)
        os.rmdir(tempfile.mkdtemp(prefix=".normativead-probe-", dir=ancestor))
    except OSError as err:
        raise OutputError(f"cannot write to {out_dir} ({ancestor}: {err.strerror}); choose another --out.") from None


@contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, names: Iterable[str], overwrite: bool = False):
    """Yield a temporary folder to write into; on success move its files into out_dir.

    Refuses up front when a target exists (unless overwrite), so a run never ends half-written;
    on any error, or a cancel, the temporary folder is removed and out_dir is left as it was.
    """
    out_dir = Path(out_dir)
    names = list(names)
    check_writable(out_dir, names, overwrite)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".normativead-", dir=out_dir))
    except OSError as err:
        raise OutputError(f"cannot write to {out_dir}: {err.strerror}; choose a writable --out folder.") from None
    try:
        yield staging
        for name in names:
            if not (staging / name).exists():
                raise OutputError(f"internal: output {name} was not produced")
        for name in names:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_file_atomic(path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False) -> None:
    """Write one file through a temporary sibling and a rename."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=file_suffix(path), dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
