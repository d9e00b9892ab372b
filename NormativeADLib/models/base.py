"""What a model family provides: its network, its training loss and its restoration.

A family is the seam between the generic engine (batching, devices, training loop, calibration)
and a method of METHODS.md. Single-pass families (ae, vae) and diffusion families (iterative,
patched, conditioned, inpainting) all fit: restoration gets the card's settings and a seeded
generator, so stochastic restorations are reproducible.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn


class Family:
    """What the engine asks of a family. Every family subclasses it; a capability beyond build, loss and
    restore is declared here with its default, so callers read a flag (`family.segments`) instead of
    probing for a method, and a family states what it adds by setting the flag and the method together
    (Testing/library/test_families.py checks they agree)."""

    name: str = ""
    cpu_batch: int = 16  # slices per batch on a CPU, where larger batches stop paying (see restore.batch_size_for)
    whole_volume = False  # restores a whole volume at once: it needs the case's own statistics (intensity rule)
    has_weights = True  # False: a rule with nothing to train or load
    builds_on_models = False  # build(network, load_model): its network names another model (SADM's restorer)
    makes_batches = False  # training_volumes() and training_batch() make its training data (synthetic anomalies)
    segments = False  # scores a scan with probability() instead of its residual (SADM)
    reads_study = False  # probability_study(): reads several contrasts of one study together

    def build(self, network: dict, load_model: Callable | None = None) -> nn.Module:
        """The network, from the card's `network` settings (and the registry's load_model where
        builds_on_models)."""
        raise NotImplementedError

    def loss(self, net: nn.Module, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Training loss on a batch of healthy slices x (B, C, H, W) in [0, 1]."""
        raise NotImplementedError

    def restore(self, net: nn.Module, x: torch.Tensor, settings: dict,
                generator: torch.Generator | None) -> torch.Tensor:
        """Pseudo-healthy counterparts of x (B, 1, H, W) in [0, 1], same shape."""
        raise NotImplementedError

    def complete_network(self, network: dict, load_model: Callable) -> dict:
        """The card's `network` settings completed before training (SADM pins its restorer's version and hash)."""
        return network

    def input_channels(self, network: dict) -> tuple[str, ...]:
        """The named input channels of a network, which a warm start may widen (train --init-from); () where
        the inputs are fixed."""
        return ()

    def slice_context(self, network: dict) -> int:
        """The slices each side of a slice that its network reads (a 2.5D input); 0: the slice alone."""
        return 0

    def training_volumes(self, images: list[np.ndarray], brains: list[np.ndarray], options: dict) -> list[np.ndarray]:
        """makes_batches: the training volumes with the channels training_batch needs."""
        raise NotImplementedError(f"family {self.name} does not make its own batches")

    def training_batch(self, slices: torch.Tensor, rng: np.random.Generator, options: dict):
        """makes_batches: a training batch drawn from healthy slices (synthetic anomalies, contrasts)."""
        raise NotImplementedError(f"family {self.name} does not make its own batches")

    def probability(self, net: nn.Module, x: torch.Tensor, restored: torch.Tensor,
                    brain: torch.Tensor) -> torch.Tensor:
        """segments: the anomaly probability of each voxel of x beside its restoration."""
        raise NotImplementedError(f"family {self.name} scores by its residual")

    def probability_study(self, net: nn.Module, x: torch.Tensor, restored: torch.Tensor, brain: torch.Tensor,
                          present: torch.Tensor) -> torch.Tensor:
        """reads_study: probability() over the contrasts of one study, `present` saying which are there."""
        raise NotImplementedError(f"family {self.name} reads one contrast")


class SliceGenerators(list):
    """One torch.Generator per slice of a batch, passed where a generator goes.

    Noise drawn through it (DiffusionNet.noise_like) is drawn slice by slice, so a slice's
    restoration depends on its own seed only, not on which slices share its batch: a volume restores
    the same at any batch size, on any device memory.
    """
