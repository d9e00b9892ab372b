"""The classical baseline: a case-internal robust z-score of intensity (no network, no weights).

A voxel is anomalous when its intensity lies far from the case's own brain: z = (x - median) /
(1.4826 MAD), both over the case's brain in model space. The direction depends on the contrast
(lesions are bright on FLAIR and T2; on T1 and T1c they may be dark or bright). It is a family like
the others so that every results table shows where a generative model beats plain intensity and
where it does not (on FLAIR, intensity alone is a strong detector; Meissen et al. were caught out).

As a "restoration", each voxel beyond the median in the anomalous direction is restored to the
median; the card's post-processing divides the residual by the case's robust standard deviation
(PostProcess.normalise = "robust_sd"), so the score is the z-score itself.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.errors import ModelError
from .base import Family

DIRECTIONS = ("bright", "dark", "both")


class IntensityBaseline(Family):
    name = "intensity"
    cpu_batch = 1
    whole_volume = True  # restores a whole volume at once: it needs the case's own statistics
    has_weights = False

    def build(self, network: dict) -> nn.Module:
        return nn.Identity()

    def loss(self, net: nn.Module, x: torch.Tensor, generator=None) -> torch.Tensor:
        raise ModelError("the intensity baseline has no network to train.")

    def restore(self, net: nn.Module, x: torch.Tensor, settings: dict, generator=None) -> torch.Tensor:
        raise ModelError("the intensity baseline restores whole volumes (restore_volume), not slices.")

    def restore_volume(self, image: np.ndarray, brain: np.ndarray, settings: dict) -> np.ndarray:
        """The volume with every brain voxel beyond the brain's median (in the card's direction) set to it."""
        direction = settings.get("direction", "bright")
        if direction not in DIRECTIONS:
            raise ModelError(f"intensity direction '{direction}' is none of {', '.join(DIRECTIONS)}.")
        median = float(np.median(image[brain])) if brain.any() else 0.0
        restored = image.copy()
        if direction in ("bright", "both"):
            restored = np.where(brain, np.minimum(restored, median), restored)
        if direction in ("dark", "both"):
            restored = np.where(brain, np.maximum(restored, median), restored)
        return restored.astype(np.float32)
