"""What a long-lived process keeps between runs: loaded models and scans brought into model space.

A one-shot `normativead restore` loads its model and registers its scan once, so nothing here is on.
The analysis worker (worker.py) turns it on with keep(): then a second model on the same scan reuses
the scan's registration and brain mask, and a model used again is not rebuilt. Entries are keyed by
what they were made from (file path, size and modification time; the grid and intensity settings),
so a changed file or model is prepared or loaded afresh; the least recently used entry goes first.
Cached arrays are read-only: a step that wrote into a shared scan would fail loudly, not corrupt the
next run.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from .card import CARD_FILE

_models: OrderedDict | None = None
_scans: OrderedDict | None = None
_limits = {"models": 0, "scans": 0}


def keep(models: int = 3, scans: int = 2) -> None:
    """Keep up to `models` loaded models and `scans` prepared scans from now on in this process."""
    global _models, _scans
    _models, _scans = OrderedDict(), OrderedDict()
    _limits.update(models=models, scans=scans)


def forget() -> None:
    """Keep nothing (the default of a one-shot run)."""
    global _models, _scans
    _models = _scans = None


def model(model_id: str, card_folder: Path | None, weights: Path | None, load: Callable):
    """load() once per model file state while keeping is on; load() every time otherwise."""
    if _models is None or card_folder is None:
        return load()
    return _cached(_models, lambda: (model_id, _stat(card_folder / CARD_FILE), _stat(weights) if weights else None),
                   load, _limits["models"])


def prepared(files: tuple, settings: tuple, prepare: Callable):
    """prepare() once per (scan and mask files as they are now, model-space settings) while keeping is on."""
    if _scans is None:
        return prepare()
    return _cached(_scans, lambda: (tuple(_stat(Path(f)) if f else None for f in files), settings),
                   lambda: _read_only(prepare()), _limits["scans"])


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


def _stat(path: Path) -> tuple:
    info = os.stat(path)
    return (str(Path(path).resolve()), info.st_size, info.st_mtime_ns)


def _read_only(prepared):
    prepared.image.flags.writeable = False
    prepared.brain.flags.writeable = False
    return prepared
