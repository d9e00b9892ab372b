"""Where NormativeAD's files live, and how they are written so that none is ever half-written.

Standard library only: the Slicer module lists models and checks an output folder through this
module before any of the heavy packages (torch, SimpleITK, nibabel) is installed or imported.
"""

from __future__ import annotations

import csv
import errno
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

from .errors import InputError, OutputError

T = TypeVar("T")
READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def home() -> Path:
    """The user's NormativeAD folder: imported and trained models, caches (NORMATIVEAD_HOME moves it)."""
    return Path(os.environ.get("NORMATIVEAD_HOME", Path.home() / ".cache" / "normativead"))


def resources_dir() -> Path:
    """Shipped resources: beside the library in a checkout or Slicer, or inside an installed wheel."""
    override = os.environ.get("NORMATIVEAD_RESOURCES")
    if override:
        return Path(override)
    library = Path(__file__).resolve().parents[1]  # NormativeADLib/, this file being core/paths.py
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


def write_folder_atomic(target: Path, fill: Callable[[Path], T], owner: Path | None = None) -> T:
    """Fill a staging folder beside target, then put it in target's place (replacing it) in one rename;
    on any error nothing of it is left and target is as it was. Returns what fill returns.
    A target that replaces must lie inside the folder that owns it (owner, by default its parent):
    nothing is ever deleted outside it, and never the owner itself."""
    owner = Path(owner) if owner is not None else target.parent
    if not is_inside(target, owner):
        raise OutputError(f"refusing to write {target}: it is not inside {owner}, the folder it belongs to.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        value = fill(staging)
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
        return value
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def is_inside(path: Path, owner: Path) -> bool:
    """path lies below owner (not owner itself), after resolving '..' and links of their parents."""
    resolved = path.parent.resolve() / path.name
    root = owner.resolve()
    return path.name not in ("", ".", "..") and resolved != root and resolved.is_relative_to(root)


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


def check_writable(out_dir: Path, names: Iterable[str], overwrite: bool, need_bytes: int = 0) -> None:
    """Raise OutputError now, before any work, if outputs could not be written into out_dir, or if
    its disk has less free space than need_bytes (a lower bound of what the outputs take)."""
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
        with interrupts_held():  # a Ctrl-C between the two calls would leave the probe folder behind
            os.rmdir(tempfile.mkdtemp(prefix=".normativead-probe-", dir=ancestor))
    except OSError as err:
        raise OutputError(f"cannot write to {out_dir} ({ancestor}: {err.strerror}); choose another --out.") from None
    free = _free_bytes(ancestor)
    if free is not None and free < need_bytes:
        raise OutputError(f"no space left on the device of {out_dir}: the outputs need at least "
                          f"{_megabytes(need_bytes)}, {_megabytes(free)} free; free space there or choose "
                          "another --out. Nothing was written.")


# ----------------------------------------------------------------------------------------------
# Cancelling at any moment without half-written files
#
# The command line turns SIGINT/SIGTERM into KeyboardInterrupt wherever the run is (cli._cancel_on_signals).
# Its handler first asks hold_interrupt(): inside an interrupts_held() block (making a folder and its
# lock, moving finished outputs into place, cleaning up) the signal is only noted, and acted on when
# the block ends, so a cancel can never leave half of such a step behind.

_held = {"depth": 0, "pending": False}


@contextmanager
def interrupts_held(reraise: bool = True):
    """Run a block that a Ctrl-C or SIGTERM must not cut in half; a signal noted inside it is raised
    as KeyboardInterrupt when the outermost block ends (reraise: the cancel wins over an error of the
    block), or left to the caller, which sees its cancel event set (reraise=False: the commit of
    finished outputs, which a cancel must neither interrupt nor undo). Python runs signal handlers in
    the main thread, so only its blocks count."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held["depth"] += 1
    try:
        yield
    finally:
        _held["depth"] -= 1
        if _held["depth"] == 0 and _held["pending"]:
            _held["pending"] = False
            if reraise:  # the cancel wins over an error the block may have raised meanwhile
                raise KeyboardInterrupt


def hold_interrupt() -> bool:
    """For a signal handler: True, and the signal noted, while an interrupts_held() block runs."""
    if _held["depth"] > 0:
        _held["pending"] = True
        return True
    return False


# ----------------------------------------------------------------------------------------------
# One run per output folder

LOCK_FILE = ".normativead.lock"
_claims: dict[str, int] = {}  # folders this process holds -> depth (claims nest within a process)
_claims_guard = threading.Lock()

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def _lock_fd(fd: int) -> bool:
    """Lock an open file without waiting; False when another process holds it. The OS drops the
    lock when its holder ends, however it ends, so a killed run leaves no stale claim."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
            return False
        return True  # a file system without locks (some network mounts): do not block the run


def _make_dirs(folder: Path) -> list[Path]:
    """mkdir -p; the folders it created, outermost first (removed again if the run writes nothing)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
            created.append(path)
        except FileExistsError:
            pass
    return created


def _remove_if_empty(folders: list[Path]) -> None:
    for path in reversed(folders):
        try:
            path.rmdir()
        except OSError:
            break


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        pid = os.read(fd, 64).decode(errors="replace").split()[0]
        return f" (pid {int(pid)})"
    except (OSError, IndexError, ValueError):
        return ""


@contextmanager
def claim_output_dir(out_dir: str | os.PathLike):
    """Hold out_dir for this run: another process claiming it meanwhile gets OutputError (exit 4)
    instead of both writing there and the second silently replacing the first one's outputs.

    The claim is a lock on out_dir/.normativead.lock (created, and the folder too if missing; both
    removed again when the claim ends, the folder only if it stayed empty). Claims nest within a process.
    """
    out_dir = Path(out_dir)
    key = os.path.abspath(out_dir)
    with _claims_guard:
        if key in _claims:
            _claims[key] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield out_dir
        finally:
            with _claims_guard:
                _claims[key] -= 1
        return
    with interrupts_held():
        fd, created = _acquire(out_dir)
        with _claims_guard:
            _claims[key] = 1
    try:
        yield out_dir
    finally:
        with interrupts_held():
            with _claims_guard:
                _claims.pop(key, None)
            _release(fd, out_dir, created)


def _acquire(out_dir: Path) -> tuple[int, list[Path]]:
    lock = out_dir / LOCK_FILE
    created: list[Path] = []
    for _ in range(20):
        try:
            created += _make_dirs(out_dir)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # removed by a run releasing it just now: make it again
            continue
        except OSError as err:
            _remove_if_empty(created)
            raise _output_error(err, out_dir) from None
        if not _lock_fd(fd):
            holder = _holder(fd)
            os.close(fd)
            _remove_if_empty(created)
            raise OutputError(f"another normativead run{holder} is writing to {out_dir}; wait for it to finish "
                              "or choose another --out.")
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except OSError:
            same = False
        if same:
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError:
                pass  # the pid is only for the message of a refused run
            return fd, created
        os.close(fd)  # its holder removed the file as we opened it: lock the new one
    raise OutputError(f"could not lock {out_dir} for this run (other runs keep claiming it); try again.")


def _release(fd: int, out_dir: Path, created: list[Path]) -> None:
    lock = out_dir / LOCK_FILE
    if os.name == "nt":  # an open file cannot be removed there
        os.close(fd)
    try:
        os.remove(lock)  # still locked (POSIX): whoever opens it meanwhile sees it replaced and retries
    except OSError:
        pass
    if os.name != "nt":
        os.close(fd)
    _remove_if_empty(created)


# ----------------------------------------------------------------------------------------------
# Output errors: a full disk says so, with the space needed

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_CANNOT_WRITE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO}
_expected_bytes: ContextVar[int | None] = ContextVar("normativead_expected_output_bytes", default=None)


@contextmanager
def expected_output_size(nbytes: int):
    """What the outputs written inside this block need at most: a full disk's message says it."""
    token = _expected_bytes.set(int(nbytes))
    try:
        yield
    finally:
        _expected_bytes.reset(token)


def _megabytes(nbytes: float) -> str:
    mb = nbytes / 1e6
    return f"{mb:.1f} MB" if mb < 10 else f"{mb:.0f} MB"


def _free_bytes(folder: Path) -> int | None:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _tree_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:
            pass
    return total


def no_space_error(out_dir: Path, written: int = 0) -> OutputError:
    """The one-line error of a full disk: the folder, the space the outputs need and the space free."""
    free = _free_bytes(out_dir)
    expected = _expected_bytes.get()
    need = f"the outputs need up to {_megabytes(expected)}" if expected else \
        f"the outputs need more than the {_megabytes(written)} written before it filled"
    have = "" if free is None else f", {_megabytes(free)} free"
    return OutputError(f"no space left on the device of {out_dir}: {need}{have}; free space there or choose "
                       "another --out. Nothing was written.")


def _output_error(err: OSError, out_dir: Path, written: int = 0) -> OutputError:
    if err.errno in _NO_SPACE:
        return no_space_error(out_dir, written)
    return OutputError(f"cannot write to {out_dir}: {err.strerror or err}; choose a writable --out folder.")


def _disk_full(folder: Path) -> bool:
    free = _free_bytes(folder)
    return free is not None and free < 1 << 20


@contextmanager
def atomic_output_dir(out_dir: str | os.PathLike, names: Iterable[str], overwrite: bool = False,
                      later: Iterable[str] = ()):
    """Yield a temporary folder to write into; on success move its files into out_dir.

    later: files the caller writes after these (the figures): checked up front like them, and an
    old one removed as these move in, so that out_dir never mixes this run's files with an older run's.

    Refuses up front when a target exists (unless overwrite), or when another run holds out_dir
    (claim_output_dir), so a run never ends half-written or mixed with another run's files; on any
    error, a full disk or a cancel (Ctrl-C, SIGTERM) the temporary folder is removed and out_dir is
    left as it was (a folder this run created is removed again).
    """
    out_dir = Path(out_dir)
    names, later = list(names), list(later)
    check_writable(out_dir, names + later, overwrite)
    with claim_output_dir(out_dir):
        staging = None
        try:
            with interrupts_held():  # a cancel noted here is raised as the block ends: staging exists then
                staging = Path(tempfile.mkdtemp(prefix=".normativead-", dir=out_dir))
            yield staging
            for name in names:
                if not (staging / name).exists():
                    raise OutputError(f"internal: output {name} was not produced")
        except BaseException as err:
            if staging is None:  # mkdtemp itself failed
                if isinstance(err, OSError):
                    raise _output_error(err, out_dir) from None
                raise
            with interrupts_held():
                written = _tree_bytes(staging)
                full = not isinstance(err, (OutputError, KeyboardInterrupt)) and _disk_full(staging)
                shutil.rmtree(staging, ignore_errors=True)
            if isinstance(err, OSError) and err.errno in _NO_SPACE or full:
                # image writers report a full disk in their own ways (ITK: RuntimeError or nothing)
                raise no_space_error(out_dir, written) from None
            if isinstance(err, OSError) and err.errno in _CANNOT_WRITE:
                raise _output_error(err, out_dir) from None
            raise
        with interrupts_held(reraise=False):  # a cancel now finds the outputs complete, not half moved
            try:
                for name in later:
                    (out_dir / name).unlink(missing_ok=True)
                for name in names:
                    os.replace(staging / name, out_dir / name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)


def write_file_atomic(path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False) -> None:
    """Write one file through a temporary sibling and a rename (a cancel or a full disk leaves the
    old file, or none, never a part of the new one)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with interrupts_held():
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=file_suffix(path), dir=path.parent)
            os.close(fd)
    except OSError as err:
        raise _output_error(err, path.parent) from None
    try:
        write(Path(tmp))
        with interrupts_held(reraise=False):
            os.replace(tmp, path)
    except OSError as err:
        if err.errno in _NO_SPACE:
            raise no_space_error(path.parent) from None
        raise
    finally:
        with interrupts_held():
            if os.path.exists(tmp):
                os.remove(tmp)
