"""What a model family provides: its network, its training loss and its restoration.

A family is the seam between the generic engine (batching, devices, training loop, calibration)
and a method of METHODS.md. Single-pass families (ae, vae) and diffusion families (iterative,
patched, conditioned, inpainting) all fit: restoration gets the card's settings and a seeded
generator, so stochastic restorations are reproducible.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class Family(Protocol):
    name: str
    cpu_batch: int  # slices per batch on a CPU, where larger batches stop paying (see restore.batch_size_for)

    def build(self, network: dict) -> nn.Module:
        """The network, from the card's `network` settings."""

    def loss(self, net: nn.Module, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Training loss on a batch of healthy slices x (B, 1, H, W) in [0, 1]."""

    def restore(self, net: nn.Module, x: torch.Tensor, settings: dict,
                generator: torch.Generator | None) -> torch.Tensor:
        """Pseudo-healthy counterparts of x (B, 1, H, W) in [0, 1], same shape."""


class SliceGenerators(list):
    """One torch.Generator per slice of a batch, passed where a generator goes.

    Noise drawn through it (DiffusionNet.noise_like) is drawn slice by slice, so a slice's
    restoration depends on its own seed only, not on which slices share its batch: a volume restores
    the same at any batch size, on any device memory.
    """
