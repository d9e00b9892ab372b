"""cDDPM's denoiser: MONAI's DiffusionModelUNet conditioned on an encoding of the clean slice.

MONAI's UNet adds the time embedding to the features of every residual block and can only embed
discrete class labels. cDDPM (METHODS.md) needs a continuous condition and scale-shift norm:
- an encoder (a MONAI ResNet with one input channel; ResNet-50 at the published size) maps the clean
  slice to a vector c, an MLP maps c to `condition_dim` features, concatenated with the time
  embedding;
- every residual block projects that joint embedding to (gamma, beta) and applies FiLM,
  GN(h) * (1 + gamma) + beta, in place of MONAI's additive time embedding.

The subclass keeps MONAI's blocks and swaps each DiffusionUNetResnetBlock for `FiLMResnetBlock`,
which differs only in its embedding projection and forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import DiffusionModelUNet, ResNet
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock, get_timestep_embedding
from torch import nn


class FiLMResnetBlock(DiffusionUNetResnetBlock):
    """A MONAI residual block whose embedding sets a scale and shift of its second group norm."""

    def __init__(self, spatial_dims: int, in_channels: int, temb_channels: int, out_channels: int,
                 up: bool, down: bool, norm_num_groups: int, norm_eps: float) -> None:
        super().__init__(spatial_dims, in_channels, temb_channels, out_channels, up=up, down=down,
                         norm_num_groups=norm_num_groups, norm_eps=norm_eps)
        self.time_emb_proj = nn.Linear(temb_channels, 2 * self.out_channels)

    @classmethod
    def replacing(cls, block: DiffusionUNetResnetBlock, temb_channels: int) -> "FiLMResnetBlock":
        return cls(block.spatial_dims, block.channels, temb_channels, block.out_channels, block.up, block.down,
                   block.norm1.num_groups, block.norm1.eps)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.nonlinearity(self.norm1(x))
        if self.upsample is not None:
            x, h = self.upsample(x), self.upsample(h)
        elif self.downsample is not None:
            x, h = self.downsample(x), self.downsample(h)
        h = self.conv1(h)
        gamma, beta = self.time_emb_proj(self.nonlinearity(emb)).chunk(2, dim=1)
        shape = (*gamma.shape, *([1] * self.spatial_dims))
        h = self.norm2(h) * (1 + gamma.view(shape)) + beta.view(shape)
        h = self.conv2(self.nonlinearity(h))
        return self.skip_connection(x) + h


class ConditionedUNet(DiffusionModelUNet):
    """forward(x_t, timesteps, condition): condition is the clean slice (B, 1, H, W) in [-1, 1]."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *, encoder: nn.Module,
                 encoder_dim: int, condition_dim: int = 512, **unet: object) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, **unet)
        time_dim = self.block_out_channels[0] * 4
        self.encoder = encoder
        self.condition_mlp = nn.Sequential(nn.Linear(encoder_dim, condition_dim), nn.SiLU(),
                                           nn.Linear(condition_dim, condition_dim))
        joint = time_dim + condition_dim
        for parent in list(self.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, DiffusionUNetResnetBlock) and not isinstance(child, FiLMResnetBlock):
                    setattr(parent, name, FiLMResnetBlock.replacing(child, joint))

    def embed(self, timesteps: torch.Tensor, condition: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        t_emb = self.time_embed(get_timestep_embedding(timesteps, self.block_out_channels[0]).to(dtype))
        c_emb = self.condition_mlp(self.encoder(condition))
        return torch.cat([t_emb, c_emb.to(t_emb.dtype)], dim=1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        emb = self.embed(timesteps, condition, x.dtype)
        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            h, res = block(hidden_states=h, temb=emb, context=None)
            skips.extend(res)
        h = self.middle_block(hidden_states=h, temb=emb, context=None)
        for block in self.up_blocks:
            n = len(block.resnets)
            h = block(hidden_states=h, res_hidden_states_list=skips[-n:], temb=emb, context=None)
            skips = skips[:-n]
        return self.out(h)


def build_encoder(settings: dict) -> tuple[nn.Module, int]:
    """A 2D single-channel MONAI ResNet from the card's network["encoder"]; returns (encoder, output dim).

    {"block": "bottleneck", "layers": [3, 4, 6, 3], "inplanes": [64, 128, 256, 512]} is ResNet-50.
    """
    dim = int(settings.get("dim", 512))
    encoder = ResNet(
        block=settings.get("block", "basic"), layers=list(settings.get("layers", (1, 1, 1, 1))),
        block_inplanes=list(settings.get("inplanes", (16, 32, 64, 128))), spatial_dims=2, n_input_channels=1,
        conv1_t_size=7, conv1_t_stride=2, num_classes=dim,
    )
    return encoder, dim


def unet_settings(network: dict) -> dict:
    """MONAI DiffusionModelUNet arguments from the card's network["unet"]."""
    u = network["unet"]
    channels: Sequence[int] = tuple(u["channels"])
    return {
        "channels": channels,
        "attention_levels": tuple(bool(a) for a in u["attention_levels"]),
        "num_res_blocks": u.get("num_res_blocks", 1),
        "num_head_channels": u.get("num_head_channels", channels[-1]),
        "norm_num_groups": int(u.get("norm_num_groups", 32)),
    }
