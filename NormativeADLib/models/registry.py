"""Loading a model: its network built from the card, its verified weights loaded (torch).

Which models exist, and their cards, is catalogue.py's job (standard library only).
"""

from __future__ import annotations

from dataclasses import dataclass

from safetensors.torch import load_file
from torch import nn

from ..core.card import ModelCard, verify_weights
from ..core.catalogue import get_card
from ..core.errors import ModelError
from . import FAMILIES


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
    family = FAMILIES[card.family]
    if family.builds_on_models:  # SADM: a frozen restorer, loaded through this registry
        return family.build(card.network, load_model)
    return family.build(card.network)


def load_model(model: str | ModelCard) -> LoadedModel:
    """Build the network from the card and load its verified weights (on the CPU, in eval mode)."""
    card = get_card(model) if isinstance(model, str) else model
    network = build_network(card)
    if not FAMILIES[card.family].has_weights:  # the intensity baseline
        return LoadedModel(card, network.eval())
    path = verify_weights(card)
    try:
        network.load_state_dict(load_file(str(path)))
    except RuntimeError as err:
        raise ModelError(f"weights of model {card.id} do not fit its network ({str(err)[:200]})") from None
    return LoadedModel(card, network.eval())
