"""Model families by the id their cards name in `family`.

A family's module is imported when a card first asks for it: the intensity baselines need neither
MONAI nor the diffusion code (about 2 s of imports a run would otherwise pay for nothing).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module

from .base import Family

_WHERE = {"ae": ("autoencoder", "SpatialAE"), "vae": ("autoencoder", "VAE"),
          "ddpm": ("diffusion_families", "AnoDDPM"), "pddpm": ("diffusion_families", "PatchedDDPM"),
          "cddpm": ("diffusion_families", "ConditionedDDPM"), "autoddpm": ("diffusion_families", "AutoDDPM"),
          "intensity": ("intensity", "IntensityBaseline"), "sadm": ("sadm", "SADM"), "dae": ("denoising", "DenoisingAE"),
          "study": ("study", "StudySADM")}


class _Families(Mapping):
    """{family id: Family}, each made on first use."""

    def __init__(self):
        self._made: dict[str, Family] = {}

    def __getitem__(self, name: str) -> Family:
        if name not in self._made:
            module, cls = _WHERE[name]  # KeyError for an unknown id, as a dict would
            self._made[name] = getattr(import_module(f".{module}", __name__), cls)()
        return self._made[name]

    def __contains__(self, name) -> bool:
        return name in _WHERE

    def __iter__(self) -> Iterator[str]:
        return iter(_WHERE)

    def __len__(self) -> int:
        return len(_WHERE)


FAMILIES: Mapping[str, Family] = _Families()

__all__ = ["FAMILIES", "Family"]
