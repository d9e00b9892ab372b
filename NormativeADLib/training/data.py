"""Healthy cohorts for training and calibration: subject splits and a cache of model-space scans.

Registration takes seconds per scan, so every scan is prepared once and cached as a compressed
.npz keyed by the grid and the intensity settings; epochs read the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import io
from ..core import locations, writes
from ..core.errors import ModelError
from ..core.grid import ModelGrid
from ..pipeline.preprocess import prepare, reproducible_registration

_SUBJECT = re.compile(r"^(IXI\d+)")
PREPROCESS_VERSION = 4  # bump when prepare() changes what it produces (4: reproducible registration)


NOT_RECORDED = "not recorded in the split"  # a split file that does not say its data or their licence


@dataclass(frozen=True)
class Split:
    """Disjoint subject lists: train the network, validate it, calibrate its thresholds; and, as the split
    file states them, the data the subjects come from and their licence (a model's card records both)."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    calibration: tuple[str, ...]
    # not part of the subject lists: two splits of the same subjects are the same split
    data: str = field(default=NOT_RECORDED, compare=False)
    licence: str = field(default=NOT_RECORDED, compare=False)

    def to_dict(self) -> dict:
        return {"train": list(self.train), "validation": list(self.validation),
                "calibration": list(self.calibration)}

    @classmethod
    def from_dict(cls, d: dict) -> "Split":
        # never a guessed licence: a split without one says so
        return cls(tuple(d["train"]), tuple(d["validation"]), tuple(d["calibration"]),
                   d.get("data") or NOT_RECORDED, d.get("licence") or NOT_RECORDED)


def subject_id(path: Path) -> str:
    match = _SUBJECT.match(path.name)
    return match.group(1) if match else path.name.split(".")[0]


def list_scans(folder: str | os.PathLike) -> dict[str, Path]:
    """Subject id -> scan path for every readable scan in a folder."""
    folder = Path(folder)
    scans = {subject_id(p): p for p in sorted(folder.iterdir())
             if p.name.lower().endswith(locations.READABLE_SUFFIXES)}
    if not scans:
        raise FileNotFoundError(f"no NIfTI/NRRD/MHA scans in {folder}")
    return scans


def split_subjects(subjects: Sequence[str], n_validation: int = 15, n_calibration: int = 25,
                   seed: int = 0) -> Split:
    """A reproducible subject-level split (order of the input does not matter)."""
    ordered = sorted(set(subjects))
    if len(ordered) < n_validation + n_calibration + 1:
        raise ValueError(f"{len(ordered)} subjects are too few for the split")
    order = np.random.default_rng(seed).permutation(len(ordered))
    shuffled = [ordered[i] for i in order]
    calibration = tuple(sorted(shuffled[:n_calibration]))
    validation = tuple(sorted(shuffled[n_calibration:n_calibration + n_validation]))
    train = tuple(sorted(shuffled[n_calibration + n_validation:]))
    return Split(train, validation, calibration)


def load_split(path: str | os.PathLike) -> Split:
    return Split.from_dict(json.loads(Path(path).read_text()))


def card_subjects(card) -> Split:
    """The subjects a model was trained, validated and calibrated on: its card's list, or (cards
    written before the list was recorded) the shipped split file it names."""
    if "subjects" in card.training:
        return Split.from_dict(card.training["subjects"])
    name = card.training.get("split_file", "")
    path = locations.resources_dir() / name.removeprefix("Resources/") if name.startswith("Resources/") else Path(name)
    if not name or not path.is_file():
        raise ModelError(f"model {card.id}: its card records no training subjects; a report could restore "
                         "scans it was trained on. Retrain it with this version of normativead train.")
    return load_split(path)


def cache_key(grid: ModelGrid, percentiles: tuple[float, float], bias_correction: bool = False) -> str:
    settings = [grid.to_dict(), list(percentiles), PREPROCESS_VERSION] + (["n4"] if bias_correction else [])
    text = json.dumps(settings, sort_keys=True)  # without N4 the key is the one earlier caches were written under
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_scan(path: Path, cache_dir: Path, grid: ModelGrid, percentiles: tuple[float, float],
                bias_correction: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(image, brain) of one scan in model space, prepared once and then read from the cache."""
    target = cache_dir / cache_key(grid, percentiles, bias_correction) / f"{subject_id(path)}.npz"
    if target.is_file():
        with np.load(target) as data:
            return data["image"].astype(np.float32), data["brain"]
    with reproducible_registration():  # a cache prepared again holds the same scans (and synthetic anomalies)
        prepared = prepare(io.read_scan(path), grid, percentiles=percentiles, bias_correction=bias_correction)
    target.parent.mkdir(parents=True, exist_ok=True)
    writes.write_file_atomic(
        target,
        lambda tmp: np.savez_compressed(tmp, image=prepared.image.astype(np.float16), brain=prepared.brain),
        overwrite=True,
    )
    return prepared.image.astype(np.float16).astype(np.float32), prepared.brain


def load_cohort(paths: Sequence[Path], cache_dir: Path, grid: ModelGrid, percentiles: tuple[float, float],
                progress: Callable[[int, int], None] | None = None, bias_correction: bool = False):
    """Lists of (image, brain) arrays, one per scan, through the cache."""
    images, brains = [], []
    for i, path in enumerate(paths):
        image, brain = cached_scan(path, cache_dir, grid, percentiles, bias_correction)
        images.append(image)
        brains.append(brain)
        if progress:
            progress(i + 1, len(paths))
    return images, brains
