"""Denoising autoencoder with coarse noise (Kascenas et al., MIDL 2022), trained to restore healthy tissue.

A MONAI 2D U-Net with skip connections (no bottleneck that would blur every detail) maps a corrupted
slice to its clean healthy counterpart. The corruption is what makes it a restorer rather than an
identity: Gaussian noise drawn on a coarse lattice (`noise.resolution` cells per side) and
upsampled, so that whole regions of a few millimetres change at once, as a lesion does; and, beyond
the paper, synthetic anomalies (synthetic.py) whose removal is the target. Slices are first redrawn
in a random synthetic contrast from their tissue labels (synth_contrast.py), so one network restores
T1, T1c, T2 and FLAIR. Restoration is one forward pass on the uncorrupted scan.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch import nn

from . import synthetic_batches
from .base import Family

NOISE_STD = 0.2  # the paper's noise level for intensities in [0, 1]
NOISE_RESOLUTION = 16  # lattice cells per side (the paper: 16 on 128 px; here 6 px = 12 mm a cell)


class DenoisingAE(Family):
    name = "dae"
    cpu_batch = 16
    makes_batches = True

    def build(self, network: dict) -> nn.Module:
        return UNet(
            spatial_dims=2, in_channels=1, out_channels=1,
            channels=tuple(network["channels"]), strides=tuple(network["strides"]),
            num_res_units=int(network.get("num_res_units", 2)), norm=network.get("norm", "batch"),
        )

    # --- training -------------------------------------------------------------------------------

    def training_volumes(self, images, brains, options: dict) -> list[np.ndarray]:
        return synthetic_batches.training_volumes(images, brains, options)

    def training_batch(self, slices: torch.Tensor, rng: np.random.Generator, options: dict):
        """(corrupted, clean, weight): slices redrawn and given anomalies (synthetic_batches.draw), then
        coarse noise inside the brain; the target is the healthy slice before both. The loss weight is
        1 in the brain and 1 + `anomaly_weight` inside an anomaly: anomalies cover about 1 % of the
        brain, so without it the network learns to keep them (removal is the job it is trained for)."""
        drawn = synthetic_batches.draw(slices, rng, options)
        noise = options.get("noise", {})
        noisy = drawn.anomalous + coarse_noise(drawn.anomalous.shape, rng, float(noise.get("std", NOISE_STD)),
                                               int(noise.get("resolution", NOISE_RESOLUTION)))
        weight = drawn.brain * (1.0 + float(options.get("anomaly_weight", 0.0)) * drawn.mask)
        return (noisy * drawn.brain).clamp(0, 1), drawn.clean, weight

    def loss(self, net: nn.Module, batch, generator=None) -> torch.Tensor:
        """Weighted L1 between the restoration and the healthy slice, inside the brain (the background
        is 0 in both and would dilute the loss with easy voxels), per brain voxel."""
        corrupted, clean, weight = batch
        restored = net(corrupted)
        return (F.l1_loss(restored, clean, reduction="none") * weight).sum() / (weight > 0).sum().clamp(min=1)

    # --- inference ------------------------------------------------------------------------------

    def restore(self, net: nn.Module, x: torch.Tensor, settings: dict, generator=None) -> torch.Tensor:
        return net(x)


def coarse_noise(shape: tuple[int, ...], rng: np.random.Generator, std: float, resolution: int) -> torch.Tensor:
    """Gaussian noise of SD std drawn on a resolution x resolution lattice per slice, upsampled
    bilinearly to the slices' (H, W) (B, 1, H, W), at a random sub-cell offset."""
    b, c, h, w = shape
    lattice = torch.from_numpy(rng.normal(0.0, std, size=(b, c, resolution + 1, resolution + 1)).astype(np.float32))
    up = F.interpolate(lattice, size=(h + h // resolution, w + w // resolution), mode="bilinear", align_corners=False)
    dy, dx = (int(rng.integers(0, max(1, n // resolution))) for n in (h, w))
    return up[..., dy:dy + h, dx:dx + w]
