"""A denoiser bundled with its noise process: schedule, noise kind, what the network predicts.

`DiffusionNet` is the `nn.Module` a diffusion family builds: the network (MONAI's
DiffusionModelUNet or the FiLM-conditioned subclass of conditioned.py) plus the fixed process it was
trained with, so the training loss and every restoration (inferers.py) read the same settings from
one place. The schedule comes from MONAI's DDPMScheduler; the forward noising and the jump from
timestep t to any earlier s are written here because partial noising starts at an arbitrary t (250,
300, 500) and MONAI's DDIM step assumes uniform strides from T-1.

Images are in [0, 1] outside this module and in [-1, 1] inside the process (METHODS.md).
Timestep -1 stands for the clean image (alpha-bar 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from monai.networks.schedulers import DDPMScheduler
from torch import nn

from .simplex import SimplexSettings, simplex_noise
from .base import SliceGenerators


@dataclass(frozen=True)
class NoiseProcess:
    """The diffusion process a network is trained for (the card's network["diffusion"])."""

    timesteps: int = 1000
    schedule: str = "linear_beta"  # a MONAI NoiseSchedules name: linear_beta, cosine, ...
    prediction: str = "epsilon"  # epsilon (AnoDDPM, AutoDDPM) or sample (x0: pDDPM, cDDPM)
    loss: str = "l2"  # l2 or l1
    noise: str = "gaussian"  # gaussian or simplex
    simplex: SimplexSettings = field(default_factory=SimplexSettings)

    @classmethod
    def from_dict(cls, d: dict | None) -> "NoiseProcess":
        d = dict(d or {})
        process = cls(
            timesteps=int(d.get("timesteps", 1000)), schedule=str(d.get("schedule", "linear_beta")),
            prediction=str(d.get("prediction", "epsilon")), loss=str(d.get("loss", "l2")),
            noise=str(d.get("noise", "gaussian")), simplex=SimplexSettings.from_dict(d.get("simplex")),
        )
        if process.prediction not in ("epsilon", "sample"):
            raise ValueError(f"diffusion prediction must be epsilon or sample, not {process.prediction!r}")
        if process.noise not in ("gaussian", "simplex"):
            raise ValueError(f"diffusion noise must be gaussian or simplex, not {process.noise!r}")
        if process.loss not in ("l1", "l2"):
            raise ValueError(f"diffusion loss must be l1 or l2, not {process.loss!r}")
        return process


class DiffusionNet(nn.Module):
    """Network + process. `predict(x_t, t)` gives (x0, eps) whatever the network was trained to predict.

    The network is called as network(x_t, timesteps) or, when conditioned, network(x_t, timesteps,
    condition) with condition the clean slice in [-1, 1].
    """

    def __init__(self, network: nn.Module, process: NoiseProcess, conditioned: bool = False) -> None:
        super().__init__()
        self.network = network
        self.process = process
        self.conditioned = conditioned
        schedule = DDPMScheduler(num_train_timesteps=process.timesteps, schedule=process.schedule)
        # not persistent: rebuilt from the card, so the weights file holds the network only
        self.register_buffer("alphas_cumprod", schedule.alphas_cumprod.float().clone(), persistent=False)

    # --- the process -------------------------------------------------------------------------
    def alpha_bar(self, t: torch.Tensor | int) -> torch.Tensor:
        """alpha-bar at integer timesteps t (tensor (B,) or int), 1 where t < 0; shaped to broadcast."""
        t = torch.as_tensor(t, device=self.alphas_cumprod.device).long()
        ab = torch.where(t >= 0, self.alphas_cumprod[t.clamp(min=0)], torch.ones((), device=t.device))
        return ab.view(-1, 1, 1, 1) if ab.ndim else ab

    def noise_like(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Unit noise of the process's kind, drawn from generator on x's device, float32."""
        if isinstance(generator, SliceGenerators):
            return torch.cat([self.noise_like(x[i:i + 1], g) for i, g in enumerate(generator)])
        if self.process.noise == "simplex":
            return simplex_noise(tuple(x.shape), generator, self.process.simplex, device=x.device)
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        """x0 noised to timestep t: sqrt(ab) x0 + sqrt(1 - ab) noise."""
        ab = self.alpha_bar(t)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def clamp_t(self, t: int) -> int:
        return max(0, min(int(t), self.process.timesteps - 1))

    # --- the network -------------------------------------------------------------------------
    def forward(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditioned:
            if condition is None:
                raise ValueError("a conditioned denoiser needs the clean slice as its condition")
            return self.network(x_t, t, condition)
        return self.network(x_t, t)

    def predict(self, x_t: torch.Tensor, t: torch.Tensor | int, condition: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) predicted at timestep t, in float32; x0 clipped to [-1, 1]."""
        t = torch.as_tensor(t, device=x_t.device).long().expand(x_t.shape[0])
        out = self(x_t, t, condition).float()
        ab = self.alpha_bar(t)
        if self.process.prediction == "epsilon":
            x0 = (x_t - (1 - ab).sqrt() * out) / ab.sqrt()
        else:
            x0 = out
        x0 = x0.clamp(-1, 1)
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt().clamp(min=1e-8)
        return x0, eps

    def jump(self, x0: torch.Tensor, eps: torch.Tensor, t: int, s: int, eta: float = 0.0,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        """The sample at an earlier timestep s < t from the predictions at t (DDIM, Song et al. eq. 12).

        eta=0 is deterministic (DDIM); eta=1 with s = t-1 is the DDPM posterior sample. s < 0 returns x0.
        """
        if s < 0:
            return x0
        ab_t, ab_s = self.alpha_bar(t), self.alpha_bar(s)
        sigma = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).clamp(min=0).sqrt()
        x_s = ab_s.sqrt() * x0 + (1 - ab_s - sigma ** 2).clamp(min=0).sqrt() * eps
        if eta > 0:
            x_s = x_s + sigma * noise
        return x_s

    def renoise(self, x_s: torch.Tensor, s: int, t: int, noise: torch.Tensor) -> torch.Tensor:
        """Forward from timestep s to a later t: q(x_t | x_s) (RePaint's resampling jump)."""
        ratio = self.alpha_bar(t) / self.alpha_bar(s)
        return ratio.sqrt() * x_s + (1 - ratio).sqrt() * noise

    # --- training ----------------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor, generator: torch.Generator | None,
                      region: torch.Tensor | None = None) -> torch.Tensor:
        """Denoising loss on clean slices x (B, 1, H, W) in [0, 1] at uniformly drawn timesteps.

        region (B, 1, H, W) bool, optional: only these pixels are noised, and the loss is taken there
        (pDDPM's patch training); the rest of the slice is given clean as context.
        """
        x0 = x.float() * 2 - 1
        t = torch.randint(0, self.process.timesteps, (x.shape[0],), generator=generator, device=x.device)
        noise = self.noise_like(x0, generator)
        x_t = self.q_sample(x0, t, noise)
        if region is not None:
            x_t = torch.where(region, x_t, x0)
        out = self(x_t, t, x0 if self.conditioned else None).float()
        target = noise if self.process.prediction == "epsilon" else x0
        error = (out - target).abs() if self.process.loss == "l1" else (out - target) ** 2
        if region is None:
            return error.mean()
        weight = region.float()
        return (error * weight).sum() / weight.sum().clamp(min=1.0)


def timestep_sequence(t_start: int, steps: int) -> list[int]:
    """`steps` descending timesteps t_start * (steps - i) / steps, i = 0..steps-1 (the step after the
    last one lands on the clean image). steps=1 is the single-step x0 prediction; steps=t_start visits
    every timestep from t_start down to 1 (the full DDPM chain)."""
    steps = max(1, min(int(steps), int(t_start))) if t_start > 0 else 1
    return [int(round(t_start * (steps - i) / steps)) for i in range(steps)]
