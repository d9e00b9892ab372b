"""How outputs are written so that none is ever half-written: atomic files and folders, one run per
output folder, and disk-full and permission errors that say what to do.

Standard library only: the Slicer module checks an output folder through it before the heavy packages.
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

from .errors import OutputError
from .interrupts import interrupts_held
from .locations import file_suffix, is_inside

T = TypeVar("T")


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


def write_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    """Rows as CSV, columns in first-seen order, None as an empty cell (the one CSV writer)."""
    path = Path(path)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return path


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
