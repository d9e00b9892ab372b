"""SADM (Behrendt et al., MIDL 2024): a supervised anomaly segmenter on top of a frozen restorer.

A shipped restoration model (any family, `network.restorer` names it; "none" for the scan alone)
turns a slice into its pseudo-healthy counterpart; a small MONAI U-Net takes the scan, that
restoration and their absolute residual and outputs the probability that each voxel is anomalous.
`network.inputs` may add "zscore": the slice's robust z-score against its own brain (median and MAD),
the cue of the intensity baseline in a form that does not depend on the scanner's intensity scale.
`network.context` k > 0 (2.5D input) gives the U-Net the scan and z-score of the k slices each side
too, drawn in training as 3D slabs (synthetic_batches.draw); the restoration and residual stay the
slice's own, so the restorer still runs once a slice.
The U-Net learns from healthy slices carrying synthetic anomalies (synthetic.py) and, for a model
trained on synthetic contrasts, slices redrawn in a random contrast from their tissue labels
(synth_contrast.py) first. The restorer stays frozen and is never copied: the card names it with
its version and weights hash, and build() refuses a restorer whose weights changed since.

In the pipeline, restore() is the restorer's pseudo-healthy image (the restoration a user sees)
and probability() is the heatmap (restore.score_volume post-processes it like a residual).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch import nn

from ..core.errors import ModelError
from . import synthetic_batches
from .base import Family

NO_RESTORER = "none"
# Anomalies cover about 1 % of the training voxels: the logit head starts at that prior (Lin et al.
# 2017), so training does not spend its first hundreds of steps lowering every logit from 0.
PRIOR = 0.01
INPUTS = ("scan", "restoration", "residual", "zscore")
CONTEXT_INPUTS = ("scan", "zscore")  # the inputs that come with their neighbouring slices (network.context)
Z_CLIP = 5.0  # the z-score channel is clipped to +-Z_CLIP and scaled to [-1, 1]
MAD_TO_SD = 1.4826


def network_inputs(network: dict) -> tuple[str, ...]:
    """The U-Net's input channels a card names; without `inputs`, those of the first SADM models."""
    default = ("scan",) if network.get("restorer", NO_RESTORER) == NO_RESTORER else INPUTS[:3]
    inputs = tuple(network.get("inputs", default))
    unknown = set(inputs) - set(INPUTS)
    if unknown or not inputs:
        raise ModelError(f"SADM inputs {list(inputs)}: each must be one of {', '.join(INPUTS)}.")
    if network.get("restorer", NO_RESTORER) == NO_RESTORER and {"restoration", "residual"} & set(inputs):
        raise ModelError("a SADM model without a restorer cannot read a restoration or residual.")
    return inputs


def context(network: dict) -> int:
    """The slices each side of a slice the U-Net reads (network.context; 0: the slice alone)."""
    k = int(network.get("context", 0))
    if not 0 <= k <= 3:
        raise ModelError(f"SADM context {k}: the slices read each side of a slice must be 0 to 3.")
    return k


def channel_names(network: dict) -> tuple[str, ...]:
    """The U-Net's input channels in order: each input, and for CONTEXT_INPUTS with a context of k slices
    its 2k + 1 slices ("scan-1", "scan", "scan+1"); the names let a warm start widen a model's inputs."""
    k = context(network)
    return tuple(f"{name}{d:+d}" if d else name
                 for name in network_inputs(network)
                 for d in (range(-k, k + 1) if name in CONTEXT_INPUTS else (0,)))


def robust_zscore(x: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """Each slice's robust z-score against its own brain voxels, clipped and scaled to [-1, 1], 0 outside
    (x and brain (B, C, H, W): each of the C slices on its own)."""
    out = torch.zeros_like(x)
    for i, c in np.ndindex(*x.shape[:2]):
        inside = brain[i, c] > 0
        values = x[i, c][inside]
        if values.numel() < 2:
            continue
        median = values.median()
        sd = MAD_TO_SD * (values - median).abs().median() + 1e-3
        out[i, c][inside] = ((values - median) / sd).clamp(-Z_CLIP, Z_CLIP) / Z_CLIP
    return out


class SADMNet(nn.Module):
    """The trainable U-Net beside a frozen restorer; only the U-Net is in the state dict (the
    weights file), and the restorer stays in eval mode whatever mode the whole is put in."""

    def __init__(self, unet: nn.Module, features: int, restorer=None, inputs: tuple[str, ...] = INPUTS[:3],
                 context: int = 0):
        super().__init__()
        self.inputs = inputs
        self.context = context  # slices each side of the scored one in x and brain (score_volume reads it)
        self.unet = nn.Sequential(unet, nn.Conv2d(features, 1, kernel_size=1))
        nn.init.constant_(self.unet[1].bias, float(np.log(PRIOR / (1 - PRIOR))))
        self.restorer = restorer.network if restorer is not None else None
        self.restorer_card = restorer.card if restorer is not None else None
        self.restorer_family = restorer.family if restorer is not None else None
        if self.restorer is not None:
            self.restorer.requires_grad_(False)

    def train(self, mode: bool = True) -> "SADMNet":
        self.unet.train(mode)
        if self.restorer is not None:
            self.restorer.eval()
        self.training = mode
        return self

    def state_dict(self, *args, **kwargs):
        return self.unet.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.unet.load_state_dict(state_dict, strict=strict, assign=assign)

    def restore(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """The frozen restorer's pseudo-healthy slices, in [0, 1] (the scan itself without one)."""
        if self.restorer is None:
            return x
        with torch.no_grad():
            return self.restorer_family.restore(self.restorer, x, self.restorer_card.restoration, generator).clamp(0, 1)

    def forward(self, x: torch.Tensor, restored: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
        """Anomaly logits (B, 1, H, W) of slices x and brain masks (B, 2k + 1, H, W: the slice between its k
        neighbours each side) and the slices' restorations (B, 1, H, W)."""
        k = self.context
        channels = {"scan": lambda: x, "restoration": lambda: restored,
                    "residual": lambda: (x[:, k:k + 1] - restored).abs(), "zscore": lambda: robust_zscore(x, brain)}
        return self.unet(torch.cat([channels[name]() for name in self.inputs], dim=1))


class SADM(Family):
    name = "sadm"
    cpu_batch = 16
    # build() gets the registry's load_model for the frozen restorer (importing the registry here
    # would close an import cycle: the registry imports the families)
    builds_on_models = True
    makes_batches = True
    segments = True

    def build(self, network: dict, load_model: Callable) -> nn.Module:
        restorer = load_restorer(network, load_model)
        inputs = network_inputs(network)
        features = int(network["channels"][0])  # the U-Net's output features, read by a 1x1 logit head
        unet = UNet(
            spatial_dims=2, in_channels=len(channel_names(network)), out_channels=features,
            channels=tuple(network["channels"]), strides=tuple(network["strides"]),
            num_res_units=int(network.get("num_res_units", 1)), norm=network.get("norm", "batch"),
        )
        return SADMNet(unet, features, restorer, inputs, context(network))

    def complete_network(self, network: dict, load_model: Callable) -> dict:
        """The card's network settings with the restorer's version and weights hash, pinned at training."""
        restorer = load_restorer(network, load_model)
        if restorer is None:
            return dict(network)
        return {**network, "restorer_version": restorer.card.version,
                "restorer_sha256": restorer.card.weights.get("sha256"),
                "restorer_family": restorer.card.family}

    def input_channels(self, network: dict) -> tuple[str, ...]:
        return channel_names(network)

    def slice_context(self, network: dict) -> int:
        return context(network)

    # --- training -------------------------------------------------------------------------------

    def training_volumes(self, images, brains, options: dict) -> list[np.ndarray]:
        return synthetic_batches.training_volumes(images, brains, options)

    def training_batch(self, slices: torch.Tensor, rng: np.random.Generator, options: dict):
        """(x, brain, target) from training slices (B, 3 (2k + 1), H, W): synthetic_batches.draw's slices
        with anomalies and their brains (B, 2k + 1, H, W), and the anomalies' masks in the middle slice
        (B, 1, H, W; empty for the slices left healthy)."""
        drawn = synthetic_batches.draw(slices, rng, options)
        k = synthetic_batches.context_of(options)
        return drawn.anomalous, drawn.brain, drawn.mask[:, k:k + 1]

    def loss(self, net: SADMNet, batch, generator=None) -> torch.Tensor:
        """Dice + binary cross-entropy of the anomaly logits against the synthetic masks. Dice is
        pooled over the batch, so healthy slices (empty targets) count without a 0/0."""
        x, brain, target = batch
        k = net.context
        restored = net.restore(x[:, k:k + 1]) * brain[:, k:k + 1]
        logits = net(x, restored, brain)
        return _loss_fn()(logits, target)

    # --- inference ------------------------------------------------------------------------------

    def restore(self, net: SADMNet, x: torch.Tensor, settings: dict, generator=None) -> torch.Tensor:
        return net.restore(x, generator)

    def probability(self, net: SADMNet, x: torch.Tensor, restored: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
        """Anomaly probability (B, 1, H, W) in [0, 1] of slices x given their restorations and brain masks
        (x and brain with the net's context of neighbouring slices, SADMNet.forward)."""
        return torch.sigmoid(net(x, restored, brain).float())


def _loss_fn() -> nn.Module:
    return DiceCELoss(sigmoid=True, batch=True)


def load_restorer(network: dict, load_model: Callable):
    """The frozen restorer a SADM card names (None for "none") through load_model (registry.load_model),
    checked against the pinned hash."""
    name = network.get("restorer", NO_RESTORER)
    if name == NO_RESTORER:
        return None
    restorer = load_model(name)
    if restorer.card.family == SADM.name or restorer.family.whole_volume:
        raise ModelError(f"SADM restorer {name} ({restorer.card.family}) does not restore slices; name a "
                         "restoration model of a slice family.")
    pinned = network.get("restorer_sha256")
    if pinned and restorer.card.weights.get("sha256") != pinned:
        raise ModelError(f"SADM restorer {name} is not the one this model was trained on (weights sha256 "
                         f"{str(restorer.card.weights.get('sha256'))[:12]}... != {pinned[:12]}...); "
                         "install that version of it or retrain.")
    return restorer
