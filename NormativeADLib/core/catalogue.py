"""The models installed: their cards, read with the standard library alone.

A model is a folder holding card.json and its safetensors weights, in the user's folder
(NORMATIVEAD_HOME/models: imported and trained models) or shipped in Resources/Models; a user
model shadows a shipped one of the same id. Listing needs no torch, numpy or SimpleITK, so the
Slicer panel can show the models before those packages are installed (registry.py loads them).
A card that cannot be read is listed as broken and does not hide the others.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .card import CARD_FILE, ModelCard, read_card, verify_weights
from .errors import InputError, ModelError
from .options import CONTRASTS, STUDY_FAMILY, SYNTHETIC_VALIDATION_VERSION
from .locations import child_path, home, model_roots
from .writes import write_folder_atomic

DEFAULT_MODEL = "ae-ixi-t1"  # only when no installed model has synthetic-validation figures (see default_model)
# The demo runs the shipped FLAIR sample with the intensity baseline, the model the results table (docs/results.md)
# shows finding its MS lesions (the demo's own summary prints the figures of the run).
DEMO_MODEL = "intensity-flair"
RESTORER_DICE_SHARE = 0.5  # a restoring default may detect less than the best model, but not less than half


@dataclass(frozen=True)
class BrokenModel:
    """A model folder whose card cannot be read: listed with the reason, never loaded."""

    folder: Path
    reason: str


def scan_models() -> tuple[list[ModelCard], list[BrokenModel]]:
    """Every readable model (user models first, ids unique) and every broken folder."""
    cards: dict[str, ModelCard] = {}
    broken = []
    for root in model_roots():
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if not (folder / CARD_FILE).is_file():
                continue
            try:
                card = read_card(folder)
            except ModelError as err:
                broken.append(BrokenModel(folder, str(err)))
                continue
            cards.setdefault(card.id, card)
    return list(cards.values()), broken


def synthetic_dice(card: ModelCard, contrast: str, policy: str | None = None) -> float | None:
    """Mean Dice at `policy` (None: the card's default policy for that contrast) on healthy validation scans
    carrying synthetic anomalies in that contrast (synthetic_validation, recorded by train and calibrate), or None when not
    measured or measured under another SYNTHETIC_VALIDATION_VERSION (other scans or anomalies: no comparison)."""
    record = card.figures.get("synthetic_validation") or {}
    if record.get("version", 1) != SYNTHETIC_VALIDATION_VERSION:
        return None
    per_contrast = record.get("per_contrast") or {}
    figures = next((f for c, f in per_contrast.items() if c.lower() == contrast.lower()), None)
    return None if figures is None else figures.get("dice", {}).get(policy or card.default_for(contrast))


def default_model(contrast: str | None = None) -> str:
    """The model a run takes when none is named: for a scan of known contrast, the installed model trained
    for it with the best Dice on healthy validation scans carrying synthetic anomalies in that contrast, at
    its default policy; for a scan of unknown contrast, the best mean over the four contrasts among the
    models trained for and measured in all of them (a FLAIR/T2 model does not run a scan that may be T1).
    Models that restore (card.restores: they pass the restorer checks) come first, the product's promise
    being the pseudo-healthy image, as long as one detects at least RESTORER_DICE_SHARE of the best
    model's Dice (a restorer that finds nothing is no default).
    DEFAULT_MODEL when nothing is measured. Chosen without lesion labels: the development cases only
    measure the choice. A better model that is installed and measured takes over by itself."""
    contrasts = CONTRASTS if contrast is None else (contrast,)
    measured = [(sum(per) / len(per), card.id, card.restores) for card in list_models()
                if all(card.accepts(c) for c in contrasts)  # unknown contrast: the run takes default_threshold
                for per in [[synthetic_dice(card, c, None if contrast else card.default_threshold) for c in contrasts]]
                if None not in per]
    best = max((m[0] for m in measured), default=0.0)
    candidates = [m for m in measured if m[2] and m[0] >= RESTORER_DICE_SHARE * best] or measured
    return max(candidates, key=lambda m: (m[0], m[1] == DEFAULT_MODEL))[1] if candidates else DEFAULT_MODEL


def default_study_model() -> str:
    """The model a study run (restore --with) takes when none is named: the installed study model with
    the best mean Dice on synthetic anomalies over the contrasts it was measured in."""
    measured = []
    for card in list_models():
        if card.family != STUDY_FAMILY:
            continue
        dice = [d for d in (synthetic_dice(card, c) for c in card.trained_contrasts) if d is not None]
        measured.append((sum(dice) / len(dice) if dice else -1.0, card.id))
    if not measured:
        raise ModelError("no study model is installed: --with needs a model that reads several contrasts "
                         "together (family study); install one with normativead models import.")
    return max(measured)[1]


def list_models() -> list[ModelCard]:
    """Every readable model, user models first; ids are unique (user shadows shipped)."""
    return scan_models()[0]


def get_card(model_id: str) -> ModelCard:
    cards, broken = scan_models()
    for card in cards:
        if card.id == model_id:
            return card
    for entry in broken:
        if entry.folder.name == model_id:
            raise ModelError(entry.reason)
    known = ", ".join(c.id for c in cards) or "none"
    raise ModelError(f"unknown model '{model_id}' (known: {known}); see `normativead models`.")


def import_model(folder: str | os.PathLike, overwrite: bool = False) -> ModelCard:
    """Copy a model folder (card.json + weights) into the user's models after verifying it: the card
    against its schema (its id and weights file are plain names), the weights against its sha256, both
    regular files inside the folder (links are refused, not followed)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"model folder {folder} not found: give the folder holding card.json and the weights.")
    card_file = _regular_file(folder, CARD_FILE, "card")
    source = read_card(folder)
    if source.weights:
        _regular_file(folder, source.weights["file"], "weights")
        verify_weights(source)
    owner = home() / "models"
    target = child_path(owner, source.id, "model id")
    if target.exists() and not overwrite:
        raise ModelError(f"model {source.id} is already imported at {target}; pass --overwrite to replace it.")

    def fill(staging: Path) -> None:
        shutil.copyfile(card_file, staging / CARD_FILE)
        if source.weights:
            shutil.copyfile(source.weights_path, staging / source.weights["file"])

    write_folder_atomic(target, fill, owner=owner)
    return read_card(target)


def _regular_file(folder: Path, name: str, what: str) -> Path:
    """folder / name when it is a regular file directly inside folder, not a link."""
    path = folder / name
    if path.is_symlink():
        raise ModelError(f"the model's {what} file {path} is a symbolic link; import a folder holding the files "
                         "themselves.")
    if not path.is_file():
        raise ModelError(f"the model's {what} file {path} is missing or not a regular file.")
    return path
