"""Where models live and how they are loaded.

A model is a folder holding card.json and its safetensors weights. Folders are looked up in the
user cache (NORMATIVEAD_HOME/models, default ~/.cache/normativead/models), where imported and
trained models go, then in the shipped Resources/Models. A user model shadows a shipped one of
the same id.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from .card import CARD_FILE, ModelCard, read_card, verify_weights
from .errors import ModelError
from .models import FAMILIES

DEFAULT_MODEL = "ae-ixi-t1"


def home() -> Path:
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
    return [home() / "models", resources_dir() / "Models"]


def list_models() -> list[ModelCard]:
    """Every model found, user models first; ids are unique (user shadows shipped)."""
    cards: dict[str, ModelCard] = {}
    for root in model_roots():
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if (folder / CARD_FILE).is_file():
                card = read_card(folder)
                cards.setdefault(card.id, card)
    return list(cards.values())


def get_card(model_id: str) -> ModelCard:
    for card in list_models():
        if card.id == model_id:
            return card
    known = ", ".join(c.id for c in list_models()) or "none"
    raise ModelError(f"unknown model '{model_id}' (known: {known}); see `normativead models`.")


@dataclass
class LoadedModel:
    card: ModelCard
    network: nn.Module

    @property
    def family(self):
        return FAMILIES[self.card.family]


def build_network(card: ModelCard) -> nn.Module:
    if card.family not in FAMILIES:
        raise ModelError(f"model {card.id}: family '{card.family}' is not supported by this version.")
    return FAMILIES[card.family].build(card.network)


def load_model(model: str | ModelCard) -> LoadedModel:
    """Build the network from the card and load its verified weights (on the CPU, in eval mode)."""
    card = get_card(model) if isinstance(model, str) else model
    path = verify_weights(card)
    network = build_network(card)
    try:
        network.load_state_dict(load_file(str(path)))
    except RuntimeError as err:
        raise ModelError(f"weights of model {card.id} do not fit its network ({str(err)[:200]})") from None
    return LoadedModel(card, network.eval())


def import_model(folder: str | os.PathLike, overwrite: bool = False) -> ModelCard:
    """Copy a model folder (card.json + weights) into the user cache after verifying it."""
    source = read_card(Path(folder))
    verify_weights(source)
    target = home() / "models" / source.id
    if target.exists() and not overwrite:
        raise ModelError(f"model {source.id} is already imported at {target}; pass --overwrite to replace it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{source.id}-", dir=target.parent))
    try:
        shutil.copy2(source.folder / CARD_FILE, staging / CARD_FILE)
        shutil.copy2(source.weights_path, staging / source.weights["file"])
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return read_card(target)
