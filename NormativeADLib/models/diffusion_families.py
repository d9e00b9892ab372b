"""Diffusion families of METHODS.md: ddpm (AnoDDPM), pddpm (patched), cddpm (conditioned), autoddpm.

Each builds a DiffusionNet from the card's `network` = {"unet": MONAI DiffusionModelUNet settings,
"diffusion": NoiseProcess settings, "encoder": ... (cddpm)} and restores with the inferers of
inferers.py as the card's `restoration` settings say. Slices come and go in [0, 1]; the process
works in [-1, 1].
"""

from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from . import inferers
from .base import Family
from .conditioned import ConditionedUNet, build_encoder, unet_settings
from .diffusion import DiffusionNet, NoiseProcess


# The U-Nets' activations at batch 16 outgrow the CPU caches: on the 2-core CPU a volume restores
# 1.26x faster in batches of 4 (AnoDDPM small: 9.6 s against 12.1 s; the autoencoders prefer 16).
CPU_BATCH = 4


def _to_process(x: torch.Tensor) -> torch.Tensor:
    return x.float() * 2 - 1


def _to_image(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2).clamp(0, 1)


def _unet(network: dict) -> DiffusionModelUNet:
    return DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, **unet_settings(network))


class AnoDDPM(Family):
    """Noise to t (gaussian or simplex, as trained), then denoise back to 0.

    restoration: {"t": 250, "sampler": "ddpm" (every timestep, stochastic) or "ddim" (deterministic),
    "steps": number of network calls for ddim (1 = single-step x0 prediction)}.
    """

    name = "ddpm"
    cpu_batch = CPU_BATCH

    def build(self, network: dict) -> nn.Module:
        return DiffusionNet(_unet(network), NoiseProcess.from_dict(network.get("diffusion")))

    def loss(self, net: DiffusionNet, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return net.training_loss(x, _loss_generator(x, generator))

    def restore(self, net: DiffusionNet, x: torch.Tensor, settings: dict,
                generator: torch.Generator | None) -> torch.Tensor:
        return _to_image(_iterative(net, _to_process(x), settings, generator, t_default=250))


def _iterative(net: DiffusionNet, x0: torch.Tensor, settings: dict, generator, t_default: int) -> torch.Tensor:
    t = int(settings.get("t", t_default))
    sampler = settings.get("sampler", "ddpm")
    if sampler == "ddpm":
        return inferers.denoise(net, x0, t, steps=t, generator=generator, eta=1.0)
    if sampler == "ddim":
        return inferers.denoise(net, x0, t, steps=int(settings.get("steps", 10)), generator=generator,
                                eta=float(settings.get("eta", 0.0)))
    raise ValueError(f"restoration sampler must be ddpm or ddim, not {sampler!r}")


class PatchedDDPM(Family):
    """pDDPM: trained to restore one noised patch from its clean surroundings (x0 prediction, loss on
    the patch); restores every box of a grid in turn and pastes them.

    network["patch"]: training patch size in pixels. restoration: {"t": 500, "patch": 48, "stride": 48}.
    """

    name = "pddpm"
    cpu_batch = CPU_BATCH

    def build(self, network: dict) -> nn.Module:
        net = DiffusionNet(_unet(network), NoiseProcess.from_dict(network.get("diffusion")))
        net.patch = int(network.get("patch", 48))
        return net

    def loss(self, net: DiffusionNet, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        generator = _loss_generator(x, generator)
        b, _, h, w = x.shape
        p = min(getattr(net, "patch", 48), h, w)
        rows = torch.randint(0, h - p + 1, (b,), generator=generator, device=x.device)
        cols = torch.randint(0, w - p + 1, (b,), generator=generator, device=x.device)
        r = torch.arange(h, device=x.device).view(1, h, 1)
        c = torch.arange(w, device=x.device).view(1, 1, w)
        region = ((r >= rows.view(b, 1, 1)) & (r < rows.view(b, 1, 1) + p)
                  & (c >= cols.view(b, 1, 1)) & (c < cols.view(b, 1, 1) + p)).unsqueeze(1)
        return net.training_loss(x, generator, region=region)

    def restore(self, net: DiffusionNet, x: torch.Tensor, settings: dict,
                generator: torch.Generator | None) -> torch.Tensor:
        patch = int(settings.get("patch", getattr(net, "patch", 48)))
        boxes = inferers.grid_boxes(tuple(x.shape[-2:]), patch, int(settings.get("stride", patch)))
        return _to_image(inferers.restore_patches(net, _to_process(x), boxes, int(settings.get("t", 500)), generator))


class ConditionedDDPM(Family):
    """cDDPM: x0 prediction conditioned (FiLM) on an encoding of the clean slice.

    restoration: {"t": [500]} single step, or {"t": [250, 500, 750]} the noise ensemble (mean).
    """

    name = "cddpm"
    cpu_batch = CPU_BATCH

    def build(self, network: dict) -> nn.Module:
        encoder, dim = build_encoder(network.get("encoder", {}))
        unet = ConditionedUNet(2, 1, 1, encoder=encoder, encoder_dim=dim,
                               condition_dim=int(network.get("condition_dim", 512)), **unet_settings(network))
        return DiffusionNet(unet, NoiseProcess.from_dict(network.get("diffusion")), conditioned=True)

    def loss(self, net: DiffusionNet, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return net.training_loss(x, _loss_generator(x, generator))

    def restore(self, net: DiffusionNet, x: torch.Tensor, settings: dict,
                generator: torch.Generator | None) -> torch.Tensor:
        ts = settings.get("t", [500])
        ts = [int(t) for t in (ts if isinstance(ts, (list, tuple)) else [ts])]
        x0 = _to_process(x)
        return _to_image(inferers.ensemble(net, x0, ts, generator, condition=x0))


class AutoDDPM(AnoDDPM):
    """AutoDDPM: restore (noise to t, denoise), mask the largest residuals, inpaint the mask with
    RePaint from a small t, keeping the rest of the slice from the input. Network and training
    are AnoDDPM's; only the restoration differs.

    restoration: {"t": 300, "sampler": "ddim", "steps": 3, "mask_quantile": 0.95, "mask_dilation": 3,
    "mask_weight": "ssim", "inpaint_t": 50, "inpaint_steps": 2, "resamples": 5}.
    """

    name = "autoddpm"

    def restore(self, net: DiffusionNet, x: torch.Tensor, settings: dict,
                generator: torch.Generator | None) -> torch.Tensor:
        x0 = _to_process(x)
        first = _iterative(net, x0, settings, generator, t_default=300)
        mask = inferers.residual_mask(x.float(), _to_image(first), float(settings.get("mask_quantile", 0.95)),
                                      int(settings.get("mask_dilation", 3)), str(settings.get("mask_weight", "ssim")))
        out = inferers.repaint(net, x0, mask, int(settings.get("inpaint_t", 50)),
                               int(settings.get("inpaint_steps", 50)), int(settings.get("resamples", 5)),
                               generator, start=first)
        return _to_image(out)


def _loss_generator(x: torch.Tensor, generator: torch.Generator | None) -> torch.Generator:
    """The training loop's generator, or a fixed one (validation passes None): the validation loss of
    a diffusion model then uses the same timesteps and noise every epoch and epochs compare fairly."""
    return generator if generator is not None else torch.Generator(device=x.device).manual_seed(0)
