"""Restorations with a trained DiffusionNet: small functions over the network and its process.

All take and return slices (B, 1, H, W) in the process's range [-1, 1] and draw every random number
from the given generator, so a seed fixes the result.
- `denoise`: partial noising to t, then back to the clean image in `steps` jumps (AnoDDPM, AutoDDPM;
  steps=t with eta=1 is the full DDPM chain, a few steps with eta=0 is DDIM, one step is x0-prediction).
- `single_step` / `ensemble`: noise the whole slice to t and predict x0 at once (cDDPM), averaged
  over several t.
- `restore_patches`: noise one box at a time, the rest of the slice clean, predict x0, paste the box
  (pDDPM).
- `residual_mask`, `repaint`: AutoDDPM's mask from the restoration's residual and RePaint inpainting
  of that mask, the rest kept from the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .diffusion import DiffusionNet, timestep_sequence

Box = tuple[int, int, int, int]  # (row, col, height, width) in pixels


def denoise(net: DiffusionNet, x0: torch.Tensor, t: int, steps: int, generator: torch.Generator | None,
            eta: float = 0.0, condition: torch.Tensor | None = None) -> torch.Tensor:
    """Noise x0 to timestep t, then return to the clean image in `steps` jumps."""
    ts = timestep_sequence(net.clamp_t(t), steps)
    x = net.q_sample(x0, ts[0], net.noise_like(x0, generator))
    for i, t_now in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        x0_hat, eps = net.predict(x, t_now, condition)
        noise = net.noise_like(x0, generator) if eta > 0 and s >= 0 else None
        x = net.jump(x0_hat, eps, t_now, s, eta, noise)
    return x


def single_step(net: DiffusionNet, x0: torch.Tensor, t: int, generator: torch.Generator | None,
                condition: torch.Tensor | None = None) -> torch.Tensor:
    """Noise the whole slice to t and predict the clean slice in one network call."""
    t = net.clamp_t(t)
    x_t = net.q_sample(x0, t, net.noise_like(x0, generator))
    return net.predict(x_t, t, condition)[0]


def ensemble(net: DiffusionNet, x0: torch.Tensor, ts: Sequence[int], generator: torch.Generator | None,
             condition: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of single-step restorations from each t in ts (cDDPM's noise ensemble)."""
    return torch.stack([single_step(net, x0, t, generator, condition) for t in ts]).mean(0)


def grid_boxes(shape: tuple[int, int], patch: int, stride: int | None = None) -> list[Box]:
    """Boxes of size patch covering an (H, W) slice with the given stride; the last row and column
    are shifted inwards so the whole slice is covered (patch 48, stride 48 on 96x96: a 2x2 grid of 4)."""
    h, w = shape
    stride = stride or patch

    def starts(n: int) -> list[int]:
        if patch >= n:
            return [0]
        s = list(range(0, n - patch + 1, stride))
        return s if s[-1] == n - patch else [*s, n - patch]

    return [(r, c, min(patch, h), min(patch, w)) for r in starts(h) for c in starts(w)]


def box_mask(shape: tuple[int, ...], box: Box, device: torch.device) -> torch.Tensor:
    """Bool mask (1, 1, H, W) of a box."""
    mask = torch.zeros(1, 1, *shape[-2:], dtype=torch.bool, device=device)
    r, c, bh, bw = box
    mask[..., r:r + bh, c:c + bw] = True
    return mask


def restore_patches(net: DiffusionNet, x0: torch.Tensor, boxes: Sequence[Box], t: int,
                    generator: torch.Generator | None) -> torch.Tensor:
    """Each box restored on its own (the box noised to t, the slice around it clean, x0 predicted in
    one step) and pasted back; overlaps are averaged, pixels outside every box are kept from x0.

    One network call per box over the whole batch (on a CPU, one call over boxes x slices runs
    about 40% slower per slice than calls of the engine's batch size).
    """
    t = net.clamp_t(t)
    pasted = torch.zeros_like(x0, dtype=torch.float32)
    cover = torch.zeros_like(x0, dtype=torch.float32)
    for box in boxes:
        mask = box_mask(x0.shape, box, x0.device)
        noisy = torch.where(mask, net.q_sample(x0, t, net.noise_like(x0, generator)), x0)
        pred = net.predict(noisy, t)[0]
        pasted = pasted + torch.where(mask, pred, torch.zeros_like(pred))
        cover = cover + mask.float()
    return torch.where(cover > 0, pasted / cover.clamp(min=1.0), x0)


def _ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Local SSIM of images in [0, 1] with a uniform window, same shape as the inputs."""
    pad = window // 2

    def mean(z):
        return F.avg_pool2d(F.pad(z, [pad] * 4, mode="reflect"), window, stride=1)

    mu_a, mu_b = mean(a), mean(b)
    var_a = mean(a * a) - mu_a ** 2
    var_b = mean(b * b) - mu_b ** 2
    cov = mean(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def residual_mask(x: torch.Tensor, restored: torch.Tensor, quantile: float = 0.95, dilation: int = 3,
                  weight: str = "ssim") -> torch.Tensor:
    """AutoDDPM's inpainting mask (B, 1, H, W) bool: inside the brain (x > 0), the pixels whose
    residual |x - restored| (times the local structural dissimilarity 1 - SSIM when weight="ssim")
    is above the slice's `quantile`, dilated by a square of side `dilation`.

    Images in [0, 1]. B25 weights the residual by LPIPS, which needs AlexNet weights the product does
    not ship; 1 - SSIM is the weight-free stand-in (say so when reporting).
    """
    score = (x - restored).abs()
    if weight == "ssim":
        score = score * (1 - _ssim_map(x, restored)).clamp(min=0)
    brain = x > 0
    masked = torch.where(brain, score, torch.full_like(score, float("nan"))).flatten(1)
    cut = torch.nanquantile(masked, quantile, dim=1).nan_to_num(float("inf")).view(-1, 1, 1, 1)
    mask = (score > cut) & brain
    if dilation > 1:
        mask = F.max_pool2d(mask.float(), dilation, stride=1, padding=dilation // 2)[..., :x.shape[-2], :x.shape[-1]] > 0
    return mask


def repaint(net: DiffusionNet, x0: torch.Tensor, mask: torch.Tensor, t: int, steps: int, resamples: int,
            generator: torch.Generator | None, start: torch.Tensor | None = None) -> torch.Tensor:
    """Inpaint the mask of x0 (Lugmayr et al., RePaint): from timestep t back to the clean image.

    The unknown region (mask True) starts from `start` (default x0) noised to t and follows the
    reverse process; at every timestep s the known region is x0 noised to s, so it is x0 exactly at
    the end. Each timestep is resampled `resamples` times: after a reverse jump t -> s the combined
    sample goes forward again s -> t with fresh noise and the jump is repeated, harmonising the two
    regions.
    """
    ts = timestep_sequence(net.clamp_t(t), steps)
    begin = x0 if start is None else torch.where(mask, start, x0)
    x = net.q_sample(begin, ts[0], net.noise_like(x0, generator))
    for i, t_now in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        for u in range(max(1, resamples)):
            x0_hat, eps = net.predict(x, t_now)
            noise = net.noise_like(x0, generator) if s >= 0 else None
            unknown = net.jump(x0_hat, eps, t_now, s, eta=1.0, noise=noise)
            known = net.q_sample(x0, s, net.noise_like(x0, generator)) if s >= 0 else x0
            x_s = torch.where(mask, unknown, known)
            if u + 1 < resamples:
                x = net.renoise(x_s, s, t_now, net.noise_like(x0, generator))
            else:
                x = x_s
    return x
