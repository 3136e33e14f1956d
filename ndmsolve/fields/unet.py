"""A small image U-Net ``net(x, t)`` on (B, C, H, W).

Layout for ``mults=(1, 2)`` (one residual block per level):

    conv_in → [Res(base) ─skip─ Down] → Res(2·base) ─skip─ Mid
            → Res(cat skip) → Up → Res(cat skip) → GroupNorm·SiLU·conv_out

H and W must be divisible by 2^(len(mults) − 1).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from ..config import configurable
from .mlp import FourierTimeEmbedding

__all__ = ["UNet"]


def _norm(ch: int) -> nn.GroupNorm:
    # Largest group count <= 8 dividing ch: GroupNorm needs ch % groups == 0.
    groups = next(g for g in (8, 4, 2, 1) if ch % g == 0)
    return nn.GroupNorm(groups, ch)


class ResBlock(nn.Module):
    """x -> skip(x) + conv(SiLU(GN(h)·(1 + scale) + shift)), h = conv(SiLU(GN(x))).

    Time enters as a scale and shift *after* the second GroupNorm: a plain additive
    per-channel shift before it would be normalised away when a group holds one channel.
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Optional[Tensor]) -> Tensor:
        h = self.conv1(nnf.silu(self.norm1(x)))
        h = self.norm2(h)
        if emb is not None:
            scale, shift = self.time(emb)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(nnf.silu(h))
        return self.skip(x) + h


@configurable
class UNet(nn.Module):
    """``net(x, t)``: (B, channels, H, W), (B,) or None -> (B, out_channels, H, W).

    Args:
        channels: input channels.
        base: channels at the first level; level i has ``base * mults[i]``.
        mults: channel multipliers, one level each; a 2x down/up-sampling between levels.
        time_dim: size of the time embedding (then an MLP of the same width).
        out_channels: output channels (default ``channels``).
        zero_init: zero the output conv, so ``ResidualTransform(UNet(..., zero_init=True))``
            starts at the identity.
    """

    def __init__(
        self,
        channels: int = 3,
        base: int = 32,
        mults: Sequence[int] = (1, 2),
        time_dim: int = 64,
        out_channels: Optional[int] = None,
        *,
        zero_init: bool = False,
        max_freq: float = 64.0,
    ):
        super().__init__()
        for name, v in (("channels", channels), ("base", base)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        mults = tuple(mults)
        if not mults or any(not isinstance(m, int) or m < 1 for m in mults):
            raise ValueError(f"mults must be a non-empty sequence of positive ints, got {mults!r}")
        self.channels, self.out_channels = channels, out_channels or channels
        self.factor = 2 ** (len(mults) - 1)
        self.embed = FourierTimeEmbedding(time_dim, max_freq)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))

        widths = [base * m for m in mults]
        self.conv_in = nn.Conv2d(channels, base, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        ch = base
        for i, w in enumerate(widths):
            self.down.append(ResBlock(ch, w, time_dim))
            ch = w
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid = ResBlock(ch, ch, time_dim)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            self.up.append(ResBlock(ch + w, w, time_dim))  # concatenated skip
            ch = w
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, widths[i - 1], 3, padding=1))
                ch = widths[i - 1]
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, self.out_channels, 3, padding=1)
        if zero_init:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Optional[Tensor] = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must have shape (B, {self.channels}, H, W), got {tuple(x.shape)}")
        if x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(f"x's H and W must be divisible by {self.factor}, got {tuple(x.shape[2:])}")
        emb = None
        if t is not None:
            if t.ndim != 1 or t.shape[0] != x.shape[0]:
                raise ValueError(f"t must have shape ({x.shape[0]},) to match x, got {tuple(t.shape)}")
            emb = self.time_mlp(self.embed(t.to(x.dtype)))
        h = self.conv_in(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.upsample):
                h = self.upsample[i](nnf.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(nnf.silu(self.norm_out(h)))
