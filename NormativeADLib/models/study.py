"""A whole study at once: SADM (Behrendt et al., MIDL 2024) reading any subset of T1, T1c, T2 and FLAIR.

Each contrast of the study is restored by the same frozen restorer (one that restores any contrast,
`network.restorer`, pinned by sha256 as in sadm.py); a MONAI U-Net reads, per contrast, the scan, its
restoration, their residual and its robust z-score, each zeroed where the study lacks that contrast,
plus one presence map per contrast, and outputs the probability that each voxel is anomalous.
It learns from synthetic studies (synth_study.py): one healthy anatomy in every contrast, the same
anomalies in each, contrasts dropped at random so that any subset works.

The volumes of a study reach the family stacked as channels in STUDY_CONTRASTS order, (B, K, H, W),
with `present` (B, K) saying which are real; restore() restores one contrast's slices (B, 1, H, W).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from monai.networks.nets import UNet
from torch import nn

from ..core.errors import ModelError
from ..synthesis import synth_contrast
from ..synthesis.synth_study import STUDY_CONTRASTS, draw
from . import synthetic_batches
from .sadm import SADM, SADMNet, _loss_fn, load_restorer, robust_zscore

PER_CONTRAST = ("scan", "restoration", "residual", "zscore")


class StudyNet(SADMNet):
    """SADMNet over the channels of a study: per contrast PER_CONTRAST, then the presence maps."""

    def __init__(self, unet: nn.Module, features: int, restorer, contrasts: tuple[str, ...]):
        super().__init__(unet, features, restorer, PER_CONTRAST)
        self.contrasts = contrasts

    def restore_study(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Restorations (B, K, H, W) of the present contrasts (zero where absent), in one restorer batch."""
        out = torch.zeros_like(x)
        where = present > 0
        if where.any():
            out[where] = self.restore(x[where][:, None])[:, 0]
        return out

    def forward(self, x: torch.Tensor, restored: torch.Tensor, brain: torch.Tensor,
                present: torch.Tensor) -> torch.Tensor:
        """Anomaly logits (B, 1, H, W) of studies x (B, K, H, W), restorations alike, brains (B, 1, H, W)
        and presence (B, K)."""
        shown = present[:, :, None, None].expand_as(x)
        z = torch.cat([robust_zscore(x[:, k:k + 1], brain) for k in range(x.shape[1])], dim=1)
        channels = [x, restored, (x - restored).abs(), z]
        return self.unet(torch.cat([c * shown for c in channels] + [shown], dim=1))


class StudySADM(SADM):
    name = "study"
    cpu_batch = 16
    reads_study = True

    def input_channels(self, network: dict) -> tuple[str, ...]:
        return ()  # per contrast, fixed (StudyNet); no warm start widens them

    def slice_context(self, network: dict) -> int:
        return 0  # one slice of each contrast; a 2.5D study input is not built

    def build(self, network: dict, load_model: Callable) -> nn.Module:
        restorer = load_restorer(network, load_model)
        if restorer is None:
            raise ModelError("a study model needs a restorer (network.restorer): it restores every contrast.")
        contrasts = STUDY_CONTRASTS
        features = int(network["channels"][0])
        unet = UNet(
            spatial_dims=2, in_channels=len(contrasts) * (len(PER_CONTRAST) + 1), out_channels=features,
            channels=tuple(network["channels"]), strides=tuple(network["strides"]),
            num_res_units=int(network.get("num_res_units", 1)), norm=network.get("norm", "batch"),
        )
        return StudyNet(unet, features, restorer, contrasts)

    # --- training -------------------------------------------------------------------------------

    def training_volumes(self, images, brains, options: dict) -> list[np.ndarray]:
        return synthetic_batches.training_volumes(images, brains, {**options, "contrast_prob": 1.0})

    def training_batch(self, slices: torch.Tensor, rng: np.random.Generator, options: dict):
        """(x (B, K, H, W), present (B, K), brain, target) of synthetic studies of the slices."""
        xs, present, brains, masks = [], [], [], []
        settings = dict(anomaly_prob=float(options.get("anomaly_prob", 0.7)),  # read once a batch, not once a slice
                        max_anomalies=int(options.get("max_anomalies", 3)),
                        keep_prob=float(options.get("keep_prob", 0.5)),
                        intensity_prob=float(options.get("from_intensities", 0.0)),
                        pure_tissue=synth_contrast.training_band(options))
        for s in slices.numpy():
            brain = s[synthetic_batches.BRAIN] > 0
            labels = s[synthetic_batches.LABELS].astype(np.uint8)
            study = draw(s[synthetic_batches.IMAGE], brain, labels, rng, **settings)
            xs.append([study.anomalous[c] if study.anomalous[c] is not None else np.zeros(brain.shape, np.float32)
                       for c in STUDY_CONTRASTS])
            present.append([c in study.present for c in STUDY_CONTRASTS])
            brains.append(brain[None])
            masks.append(study.mask[None])
        tensor = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
        return tensor(xs), tensor(present), tensor(brains), tensor(masks)

    def loss(self, net: StudyNet, batch, generator=None) -> torch.Tensor:
        x, present, brain, target = batch
        restored = net.restore_study(x, present) * brain
        return _loss_fn()(net(x, restored, brain, present), target)

    # --- inference ------------------------------------------------------------------------------

    def probability_study(self, net: StudyNet, x: torch.Tensor, restored: torch.Tensor, brain: torch.Tensor,
                          present: torch.Tensor) -> torch.Tensor:
        """Anomaly probability (B, 1, H, W) of studies (B, K, H, W) given restorations, brains and presence."""
        return torch.sigmoid(net(x, restored, brain, present).float())
