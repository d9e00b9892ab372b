"""What a long-lived process keeps between runs: loaded models and scans brought into model space.

A one-shot `normativead restore` loads its model and registers its scan once, so nothing here is on.
The analysis worker (cli/worker.py) turns it on with keep(): then a second model on the same scan reuses
the scan's registration and brain mask, and a model used again is not rebuilt. Entries are keyed by
what they were made from (a scan's content; a model's file path, size and modification time; the
grid and intensity settings), so a changed file or model is prepared or loaded afresh; the least
recently used entry goes first.
Cached arrays are read-only: a step that wrote into a shared scan would fail loudly, not corrupt the
next run.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from .card import CARD_FILE

_models: OrderedDict | None = None
_scans: OrderedDict | None = None
_files: OrderedDict | None = None
_limits = {"models": 0, "scans": 0}


def keep(models: int = 3, scans: int = 2) -> None:
    """Keep up to `models` loaded models and `scans` prepared scans from now on in this process."""
    global _models, _scans, _files
    _models, _scans, _files = OrderedDict(), OrderedDict(), OrderedDict()
    _limits.update(models=models, scans=scans)


def forget() -> None:
    """Keep nothing (the default of a one-shot run)."""
    global _models, _scans, _files
    _models = _scans = _files = None


def model(model_id: str, card_folder: Path | None, weights: Path | None, load: Callable):
    """load() once per model file state while keeping is on; load() every time otherwise."""
    if _models is None or card_folder is None:
        return load()
    return _cached(_models, lambda: (model_id, _stat(card_folder / CARD_FILE), _stat(weights) if weights else None),
                   load, _limits["models"])


def prepared(files: tuple, settings: tuple, prepare: Callable):
    """prepare() once per (scan and mask files as they are now, model-space settings) while keeping is on.

    prepare() returns (Prepared, anything derived from it alone, such as its registration QC)."""
    if _scans is None:
        return prepare()
    return _cached(_scans, lambda: (tuple(_content(Path(f)) if f else None for f in files), settings),
                   lambda: _read_only(prepare()), _limits["scans"])


def read(kind: str, path, read_file: Callable):
    """read_file() once per (kind, file as it is now) while keeping is on: the worker checks a scan and
    then analyses it, and a second model reads it again (a quarter of a second each on the sample)."""
    if _files is None:
        return read_file()
    return _cached(_files, lambda: (kind, _content(Path(path))), read_file, _limits["scans"])


def _cached(store: OrderedDict, key_of: Callable, make: Callable, limit: int):
    try:
        key = key_of()
    except OSError:  # a file missing or unreadable: no entry; make() says what is wrong
        return make()
    if key in store:
        store.move_to_end(key)
        return store[key]
    value = make()
    store[key] = value
    while len(store) > limit:
        store.popitem(last=False)
    return value


_digests: OrderedDict = OrderedDict()  # file state (_stat) -> digest: a run looks a scan up more than once


def _content(path: Path) -> tuple:
    """What a scan file holds (its size and digest), not where it is: the Slicer module exports the volume
    to a new file for every Apply, and the same volume must find its registration again (0.05 s for a
    30 MB scan against 4 s of registration). Read once per file state."""
    state = _stat(path)
    if state not in _digests:
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _digests[state] = digest.hexdigest()
        while len(_digests) > 8:
            _digests.popitem(last=False)
    return state[1], _digests[state]


def _stat(path: Path) -> tuple:
    info = os.stat(path)
    return (str(Path(path).resolve()), info.st_size, info.st_mtime_ns)


def _read_only(made: tuple):
    prepared = made[0]
    prepared.image.flags.writeable = False
    prepared.brain.flags.writeable = False
    return made
