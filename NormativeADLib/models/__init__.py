"""Model families by the id their cards name in `family`."""

from .autoencoder import VAE, SpatialAE
from .base import Family

FAMILIES: dict[str, Family] = {f.name: f for f in (SpatialAE(), VAE())}

__all__ = ["FAMILIES", "Family"]
