"""What a Dask worker does for one scan: `analysis.analyse` and `analysis.write_outputs` for each model,
into a staging folder that the batch's own process later moves into place.

Per worker process, once: the library thread pools (torch, ITK) sized so that workers do not
oversubscribe their machine, and each model loaded once and kept. Per scan: a registration found
in the registration cache is reused (`restore --transform` does the same), a new one is stored
there. A failure of one model on one scan becomes that outcome's one-line error; nothing is raised.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .inputs import Case
from .outputs import make_public
from ..core.errors import Cancelled, NormativeADError

CANCEL_POLL_S = 1.0  # how often a worker asks the scheduler whether the batch was cancelled


@dataclass(frozen=True)
class ScanTask:
    """Everything a worker needs for one scan (picklable: it travels to the worker)."""

    case: Case
    models: tuple[str, ...]  # run in this order: the first one's registration serves the others
    staging_root: str  # OUT/.normativead-staging: each outcome's files go into a folder below it
    threshold: str | None
    device: str
    seed: int
    fmt: str
    registration_cache: str | None  # folder of <key>.tfm files, None: always register
    library_threads: dict[str, int]  # worker address (or "*") -> torch/ITK threads
    cancel_event: str | None  # name of the distributed.Event that a cancelled batch sets


_lock = threading.Lock()
_process = {"configured": False, "models": {}, "loads": 0}


def run_scan(task: ScanTask) -> list[dict]:
    """One outcome per model: {model, status: done | failed | cancelled, error, staging, worker, ...}."""
    worker = _configure(task.library_threads)
    cancel = ClusterCancel(task.cancel_event)
    outcomes = []
    # the scan is read for its digest once, not once per model
    digest = scan_digest(task.case) if task.registration_cache is not None else None
    for model_id in task.models:
        started = time.perf_counter()
        outcome = _run_model(task, model_id, cancel, digest)
        outcome.update(worker=worker, seconds=round(time.perf_counter() - started, 2),
                       worker_peak_mb=peak_memory_mb(), model_loads=_process["loads"])
        outcomes.append(outcome)
    return outcomes


def _run_model(task: ScanTask, model_id: str, cancel: "ClusterCancel", digest: str | None) -> dict:
    from ..pipeline import analysis

    case = task.case
    staging = None
    try:
        model = loaded_model(model_id)
        transform, cache_file = _cached_registration(task, model.card, digest)
        result = analysis.analyse(case.scan, model, case.mask, case.reference, task.threshold, task.device,
                                  seed=task.seed, transform_path=transform, cancel=cancel, contrast=case.contrast)
        if cache_file is not None and transform is None:
            _store_registration(result.prepared.transform, cache_file)
        if cancel.is_set():
            raise Cancelled("batch cancelled")
        folder = Path(task.staging_root) / model_id
        folder.mkdir(parents=True, exist_ok=True)
        staging = make_public(Path(tempfile.mkdtemp(prefix=f"{case.id}-", dir=folder)))
        analysis.write_outputs(result, staging, task.fmt, overwrite=True)
        return {"model": model_id, "status": "done", "error": None, "staging": str(staging)}
    except Cancelled:
        _remove(staging)
        return {"model": model_id, "status": "cancelled", "error": "cancelled", "staging": None}
    except Exception as err:  # one case's failure is its row's error; the batch goes on
        _remove(staging)
        return {"model": model_id, "status": "failed", "error": one_line(err), "staging": None}


def one_line(err: BaseException) -> str:
    """An error as the one line a cohort table holds: ours say what to do; others name their type."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else "no message"
    if isinstance(err, (NormativeADError, FileNotFoundError)):
        return text
    return f"{type(err).__name__}: {text}"


def _remove(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Once per worker process

def _configure(library_threads: dict[str, int]) -> str:
    """Size the thread pools of this worker process (once) and return its name for the outcome."""
    address = _worker_address()
    with _lock:
        if not _process["configured"]:
            threads = library_threads.get(address) or library_threads.get("*") or 1
            import SimpleITK as sitk
            import torch

            torch.set_num_threads(threads)
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
            _process["configured"] = True
    return address


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):  # called outside a Dask worker (a plain loop)
        return f"{socket.gethostname()}:{os.getpid()}"


def loaded_model(model_id: str):
    """The model, loaded the first time this worker process needs it and kept for every later scan."""
    from ..models.registry import load_model

    with _lock:
        if model_id not in _process["models"]:
            _process["models"][model_id] = load_model(model_id)
            _process["loads"] += 1
        return _process["models"][model_id]


def peak_memory_mb() -> float:
    """This process's peak resident memory so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20) if sys.platform == "darwin" else peak / 1024, 1)  # bytes on macOS, KiB on Linux


# ----------------------------------------------------------------------------------------------
# Registration cache: a scan's registration to the template, kept between models and between runs

def scan_digest(case: Case) -> str:
    """The scan's and its mask's bytes (sha256 each): what its registration depends on besides the grid."""
    from ..core.card import sha256

    return "|".join(sha256(Path(path)) if path is not None else "" for path in (case.scan, case.mask))


def registration_key(digest: str, grid_dict: dict) -> str:
    """A scan_digest and the model grid. Models sharing a grid share the registration, as
    `restore --transform` lets them."""
    return hashlib.sha256(f"{sorted(grid_dict.items())!r}|{digest}".encode()).hexdigest()[:32]


def _cached_registration(task: ScanTask, card, digest: str | None):
    """(the cached transform or None, the cache file to fill or None)."""
    if digest is None:
        return None, None
    from .. import io

    cache_file = Path(task.registration_cache) / f"{registration_key(digest, card.grid.to_dict())}.tfm"
    if not cache_file.is_file():
        return None, cache_file
    try:
        return io.read_transform(cache_file), cache_file
    except (NormativeADError, RuntimeError):  # a damaged cache entry: register again and replace it
        return None, cache_file


def _store_registration(transform, cache_file: Path) -> None:
    import SimpleITK as sitk

    from ..core.writes import write_file_atomic

    def write(tmp: Path) -> None:
        sitk.WriteTransform(transform, str(tmp))
        make_public(tmp)

    write_file_atomic(cache_file, write, overwrite=True)


# ----------------------------------------------------------------------------------------------
# Cancellation across the cluster

class ClusterCancel:
    """The batch's cancel as the pipeline's cancel event: is_set() asks the scheduler's named
    distributed.Event, at most once a second (the pipeline asks between steps and batches)."""

    def __init__(self, name: str | None):
        self.name = name
        self._set = False
        self._asked = 0.0

    def is_set(self) -> bool:
        if self._set or self.name is None:
            return self._set
        now = time.monotonic()
        if now - self._asked >= CANCEL_POLL_S:
            self._asked = now
            try:
                from distributed import Event

                self._set = Event(self.name).is_set()
            except Exception:  # no scheduler reachable (a plain loop, a closing cluster): not cancelled by it
                pass
        return self._set
