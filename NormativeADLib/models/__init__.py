"""Model families by the id their cards name in `family`."""

from .autoencoder import VAE, SpatialAE
from .base import Family
from .denoising import DenoisingAE
from .diffusion_families import AnoDDPM, AutoDDPM, ConditionedDDPM, PatchedDDPM
from .intensity import IntensityBaseline
from .sadm import SADM

FAMILIES: dict[str, Family] = {
    f.name: f for f in (SpatialAE(), VAE(), AnoDDPM(), PatchedDDPM(), ConditionedDDPM(), AutoDDPM(),
                        IntensityBaseline(), SADM(), DenoisingAE())
}

__all__ = ["FAMILIES", "Family"]
