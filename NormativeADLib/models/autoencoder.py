"""Autoencoder families: a spatial-bottleneck AE ([B25] AE-S) and a VAE, on MONAI's networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import AutoEncoder, VarAutoEncoder
from torch import nn

from .base import Family


class SpatialAE(Family):
    """Restoration is one forward pass. The output layer is linear (a sigmoid saturated and
    slowed training several-fold); the engine clamps restorations to [0, 1]."""

    name = "ae"
    cpu_batch = 16

    def build(self, network: dict) -> nn.Module:
        return AutoEncoder(
            spatial_dims=2, in_channels=1, out_channels=1,
            channels=tuple(network["channels"]), strides=tuple(network["strides"]),
            num_res_units=int(network.get("num_res_units", 1)),
            norm=network.get("norm", "batch"),
        )

    def loss(self, net: nn.Module, x: torch.Tensor, generator=None) -> torch.Tensor:
        return F.l1_loss(net(x), x)

    def restore(self, net: nn.Module, x: torch.Tensor, settings: dict, generator=None) -> torch.Tensor:
        return net(x)


class VAE(Family):
    """Restoration decodes the posterior mean; training adds a beta-weighted KL term.
    Linear output like the AE (MONAI's sigmoid option saturates); the engine clamps to [0, 1]."""

    name = "vae"
    cpu_batch = 16

    def build(self, network: dict) -> nn.Module:
        return VarAutoEncoder(
            spatial_dims=2, in_shape=(1, *network["slice_shape"]), out_channels=1,
            latent_size=int(network["latent_size"]), channels=tuple(network["channels"]),
            strides=tuple(network["strides"]), num_res_units=int(network.get("num_res_units", 1)),
            use_sigmoid=False,
        )

    def loss(self, net: nn.Module, x: torch.Tensor, generator=None, beta: float = 1e-3) -> torch.Tensor:
        mu, logvar = net.encode_forward(x)
        std = torch.exp(0.5 * logvar)
        z = mu + std * torch.randn(std.shape, generator=generator, device=std.device) if net.training else mu
        recon = net.decode_forward(z, use_sigmoid=False)
        kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
        return F.l1_loss(recon, x) + beta * kl

    def restore(self, net: nn.Module, x: torch.Tensor, settings: dict, generator=None) -> torch.Tensor:
        mu, _ = net.encode_forward(x)
        return net.decode_forward(mu, use_sigmoid=False)
