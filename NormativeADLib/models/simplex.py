"""2D simplex noise with octaves, vectorised in torch and drawn from a seeded generator.

AnoDDPM, pDDPM and cDDPM corrupt slices with simplex noise instead of white gaussian noise: its
low-frequency structure hides a lesion-sized region, so the denoiser has to replace it rather than
sharpen it (METHODS.md: octaves 6, persistence 0.8, frequency 64).

Conventions here: `frequency` is the feature size (wavelength, in pixels) of the first octave and
every further octave halves it; octave k is weighted by persistence**k. Each slice gets its own
random lattice offsets per octave, so slices of a batch draw different noise from one call. The sum
is standardised per slice to zero mean and unit variance, so it can stand in for the unit gaussian
noise of the diffusion process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_F2 = 0.5 * (math.sqrt(3.0) - 1.0)  # skew of the square grid onto the simplex grid
_G2 = (3.0 - math.sqrt(3.0)) / 6.0  # unskew
_LATTICE = 256  # the lattice repeats every 256 cells


@dataclass(frozen=True)
class SimplexSettings:
    octaves: int = 6
    persistence: float = 0.8
    frequency: float = 64.0  # wavelength of the first octave, pixels

    @classmethod
    def from_dict(cls, d: dict | None) -> "SimplexSettings":
        d = d or {}
        return cls(int(d.get("octaves", 6)), float(d.get("persistence", 0.8)), float(d.get("frequency", 64.0)))


def _simplex2d(x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Gustavson's 2D simplex noise at points (x, y) of any shape, values in about [-1, 1].

    perm: (512,) long, a permutation of 0..255 repeated twice; grad: (256, 2) unit gradients.
    """
    s = (x + y) * _F2
    i = torch.floor(x + s)
    j = torch.floor(y + s)
    t = (i + j) * _G2
    x0 = x - (i - t)
    y0 = y - (j - t)
    upper = (x0 > y0).to(x.dtype)  # which of the two triangles of the skewed cell
    i1, j1 = upper, 1.0 - upper
    x1, y1 = x0 - i1 + _G2, y0 - j1 + _G2
    x2, y2 = x0 - 1.0 + 2.0 * _G2, y0 - 1.0 + 2.0 * _G2
    ii = i.long() % _LATTICE
    jj = j.long() % _LATTICE
    total = torch.zeros_like(x)
    for dx, dy, ci, cj in ((x0, y0, 0, 0), (x1, y1, i1.long(), j1.long()), (x2, y2, 1, 1)):
        g = grad[perm[ii + ci + perm[jj + cj]]]  # (..., 2)
        falloff = (0.5 - dx * dx - dy * dy).clamp(min=0.0)
        total = total + falloff.pow(4) * (g[..., 0] * dx + g[..., 1] * dy)
    return 70.0 * total


def simplex_noise(shape: tuple[int, ...], generator: torch.Generator | None = None,
                  settings: SimplexSettings = SimplexSettings(), device: torch.device | str | None = None,
                  ) -> torch.Tensor:
    """Octave simplex noise of shape (B, C, H, W), float32, per-slice zero mean and unit variance.

    Deterministic for a given generator state; the generator's device is used when device is None.
    """
    b, c, h, w = shape
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device)
    n = b * c
    perm = torch.randperm(_LATTICE, generator=generator, device=device)
    perm = torch.cat([perm, perm])
    angle = torch.rand(_LATTICE, generator=generator, device=device) * (2.0 * math.pi)
    grad = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    k = settings.octaves
    offsets = torch.rand(k, n, 2, generator=generator, device=device) * _LATTICE
    # all octaves at once, (k, n, h, w): lattice cells per pixel double with every octave
    scale = (2.0 ** torch.arange(k, device=device, dtype=torch.float32) / settings.frequency).view(k, 1, 1, 1)
    rows = torch.arange(h, device=device, dtype=torch.float32).view(1, 1, h, 1)
    cols = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, 1, w)
    x = (cols * scale + offsets[..., 0].view(k, n, 1, 1)).expand(k, n, h, w)
    y = (rows * scale + offsets[..., 1].view(k, n, 1, 1)).expand(k, n, h, w)
    weights = settings.persistence ** torch.arange(k, device=device, dtype=torch.float32)
    noise = (_simplex2d(x, y, perm, grad) * weights.view(k, 1, 1, 1)).sum(0)
    flat = noise.view(n, -1)
    flat = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp(min=1e-6)
    return flat.view(b, c, h, w)
