"""An image U-Net ``net(x, t)`` on (B, C, H, W), in the layout of DDPM / ADM.

Level i (i = 0 .. len(mults) − 1) runs at resolution H / 2^i with ``base * mults[i]``
channels and ``num_res_blocks`` residual blocks, each followed by self-attention when
i is in ``attn_levels``:

    conv_in → [Res(·attn) × n ─skips─ Down] per level → Res·Attn·Res (middle)
            → [Res(cat skip)(·attn) × n, Up] per level → GroupNorm·SiLU·conv_out

H and W must be divisible by 2^(len(mults) − 1). Every operation supports forward-mode
AD, so a U-Net can be the transform F of an NDM; ``forward_and_dt`` gives ∂_t of the net
with the forward mode written out (exact, and cheaper to train through than a JVP).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def _lin_dt(module: nn.Module, dx: Tensor | None) -> Tensor | None:
    """Tangent through a linear layer or convolution: the same map without its bias."""
    if dx is None:
        return None
    if isinstance(module, nn.Identity):
        return dx
    if isinstance(module, nn.Linear):
        return nnf.linear(dx, module.weight)
    return module._conv_forward(dx, module.weight, None)


def _silu_dt(a: Tensor, da: Tensor | None) -> tuple[Tensor, Tensor | None]:
    s = torch.sigmoid(a)
    return a * s, None if da is None else da * (s * (1.0 + a * (1.0 - s)))


def _norm_dt(norm: nn.GroupNorm, x: Tensor, dx: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """GroupNorm and its tangent: with n = (x − μ)/s over each group, s² = var + eps,
    ∂n = (∂x − mean ∂x − n · mean(n ∂x)) / s, then the affine γ n + β."""
    y = norm(x)
    if dx is None:
        return y, None
    B, C = x.shape[:2]
    g = norm.num_groups
    xs, dxs = x.reshape(B, g, -1), dx.reshape(B, g, -1)
    mu = xs.mean(-1, keepdim=True)
    s = torch.sqrt(xs.var(-1, unbiased=False, keepdim=True) + norm.eps)
    n = (xs - mu) / s
    dn = (dxs - dxs.mean(-1, keepdim=True) - n * (n * dxs).mean(-1, keepdim=True)) / s
    dy = dn.reshape(x.shape)
    if norm.affine:
        dy = dy * norm.weight.reshape(1, C, *([1] * (x.ndim - 2)))
    return y, dy


class ResBlock(nn.Module):
    """x -> skip(x) + conv(Dropout(SiLU(GN(h)·(1 + scale) + shift))), h = conv(SiLU(GN(x))).

    Time enters as a scale and shift *after* the second GroupNorm: a plain additive
    per-channel shift before it would be normalised away when a group holds one channel.
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        h = self.conv1(nnf.silu(self.norm1(x)))
        h = self.norm2(h)
        if emb is not None:
            scale, shift = self.time(emb)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(self.dropout(nnf.silu(h)))
        return self.skip(x) + h

    def forward_and_dt(self, x: Tensor, dx: Tensor | None, emb: Tensor, demb: Tensor):
        """``forward`` and its t-tangent, given x's tangent ``dx`` (None: 0) and emb's."""
        a, da = _silu_dt(*_norm_dt(self.norm1, x, dx))
        h, dh = _norm_dt(self.norm2, self.conv1(a), _lin_dt(self.conv1, da))
        scale, shift = self.time(emb)[:, :, None, None].chunk(2, dim=1)
        dscale, dshift = _lin_dt(self.time, demb)[:, :, None, None].chunk(2, dim=1)
        dh = h * dscale + dshift + (0.0 if dh is None else dh * (1 + scale))
        a, da = _silu_dt(h * (1 + scale) + shift, dh)
        if isinstance(self.dropout, nn.Dropout):  # one mask for the value and its tangent
            mask = self.dropout(torch.ones_like(a))
            a, da = a * mask, da * mask
        out, dout = self.conv2(a), _lin_dt(self.conv2, da)
        dskip = _lin_dt(self.skip, dx)
        return self.skip(x) + out, dout if dskip is None else dskip + dout


class Attention(nn.Module):
    """Multi-head self-attention over the H·W positions, residual: x + proj(attn(GN(x))).

    Written with matmul and softmax (not a fused kernel) so forward-mode AD works; the
    output projection starts at zero, so a new block starts as the identity.
    """

    def __init__(self, ch: int, heads: int = 1):
        super().__init__()
        if ch % heads:
            raise ValueError(f"attention channels {ch} must be divisible by attn_heads={heads}")
        self.heads = heads
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        w = torch.softmax(
            q.transpose(-1, -2) @ k / math.sqrt(C // self.heads), dim=-1
        )  # (B, h, HW, HW)
        out = (v @ w.transpose(-1, -2)).reshape(B, C, H, W)
        return x + self.proj(out)

    def forward_and_dt(self, x: Tensor, dx: Tensor, emb=None, demb=None) -> tuple[Tensor, Tensor]:
        """``forward`` and its tangent given x's tangent ``dx`` (softmax: ∂w = w (∂s − Σ w ∂s))."""
        B, C, H, W = x.shape
        c = C // self.heads
        n, dn = _norm_dt(self.norm, x, dx)
        shape = (B, 3, self.heads, c, H * W)
        q, k, v = self.qkv(n).reshape(shape).unbind(1)
        dq, dk, dv = _lin_dt(self.qkv, dn).reshape(shape).unbind(1)
        qt, dqt = q.transpose(-1, -2), dq.transpose(-1, -2)
        w = torch.softmax(qt @ k / math.sqrt(c), dim=-1)
        ds = (dqt @ k + qt @ dk) / math.sqrt(c)
        dw = w * (ds - (w * ds).sum(-1, keepdim=True))
        out = (v @ w.transpose(-1, -2)).reshape(B, C, H, W)
        dout = (dv @ w.transpose(-1, -2) + v @ dw.transpose(-1, -2)).reshape(B, C, H, W)
        return x + self.proj(out), dx + _lin_dt(self.proj, dout)


def _check_pos_int(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")


def _check_unet(
    channels, base, num_res_blocks, attn_heads, out_channels, mults, attn_levels, dropout
):
    """UNet's argument checks; returns (mults, attn_levels) as tuples."""
    for name, v in (
        ("channels", channels),
        ("base", base),
        ("num_res_blocks", num_res_blocks),
        ("attn_heads", attn_heads),
    ):
        _check_pos_int(name, v)
    if out_channels is not None:
        _check_pos_int("out_channels", out_channels)
    mults = tuple(mults)
    if not mults or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mults):
        raise ValueError(f"mults must be a non-empty sequence of positive ints, got {mults!r}")
    attn_levels = tuple(attn_levels)
    bad = [
        lv
        for lv in attn_levels
        if isinstance(lv, bool) or not isinstance(lv, int) or not 0 <= lv < len(mults)
    ]
    if bad:
        raise ValueError(
            f"attn_levels must hold level indices in 0..{len(mults) - 1}, got {attn_levels!r}"
        )
    if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
    return mults, attn_levels


@configurable
class UNet(nn.Module):
    """``net(x, t)``: (B, channels, H, W), (B,) or None -> (B, out_channels, H, W).

    Args:
        channels: input channels.
        base: channels at the first level; level i has ``base * mults[i]``.
        mults: channel multipliers, one level each; a 2x down/up-sampling between levels.
        time_dim: size of the time embedding (then an MLP of the same width).
        out_channels: output channels (default ``channels``).
        num_res_blocks: residual blocks per level (each way).
        attn_levels: levels (0 = full resolution, i = H / 2^i) whose residual blocks are
            followed by self-attention; e.g. ``(1,)`` for 16x16 on 32x32 images.
        mid_attn: self-attention between the two middle residual blocks.
        attn_heads: attention heads (must divide every attended width).
        dropout: dropout rate inside every residual block (active in ``train()`` mode).
        zero_init: zero the output conv, so ``ResidualTransform(UNet(..., zero_init=True))``
            starts at the identity.
        max_freq: largest angular frequency of the time embedding.
    """

    def __init__(
        self,
        channels: int = 3,
        base: int = 32,
        mults: Sequence[int] = (1, 2),
        time_dim: int = 64,
        out_channels: int | None = None,
        *,
        num_res_blocks: int = 1,
        attn_levels: Sequence[int] = (),
        mid_attn: bool = False,
        attn_heads: int = 1,
        dropout: float = 0.0,
        zero_init: bool = False,
        max_freq: float = 64.0,
    ):
        super().__init__()
        mults, attn_levels = _check_unet(
            channels, base, num_res_blocks, attn_heads, out_channels, mults, attn_levels, dropout
        )
        self.channels, self.out_channels = channels, out_channels or channels
        self.factor = 2 ** (len(mults) - 1)
        self.embed = FourierTimeEmbedding(time_dim, max_freq)
        self.time_mlp = nn.Sequential(
            nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )

        def block(c_in, c_out, level):
            res = ResBlock(c_in, c_out, time_dim, dropout)
            if level in attn_levels:
                return nn.ModuleList([res, Attention(c_out, attn_heads)])
            return nn.ModuleList([res])

        widths = [base * m for m in mults]
        self.conv_in = nn.Conv2d(channels, base, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        ch, skip_chs = base, []
        for i, w in enumerate(widths):
            level = nn.ModuleList()
            for _ in range(num_res_blocks):
                level.append(block(ch, w, i))
                ch = w
                skip_chs.append(ch)
            self.down.append(level)
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        mid = [ResBlock(ch, ch, time_dim, dropout)]
        if mid_attn:
            mid += [Attention(ch, attn_heads), ResBlock(ch, ch, time_dim, dropout)]
        self.mid = nn.ModuleList(mid)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            level = nn.ModuleList()
            for _ in range(num_res_blocks):
                level.append(block(ch + skip_chs.pop(), w, i))  # concatenated skip
                ch = w
            self.up.append(level)
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, widths[i - 1], 3, padding=1))
                ch = widths[i - 1]
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, self.out_channels, 3, padding=1)
        if zero_init:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must have shape (B, {self.channels}, H, W), got {tuple(x.shape)}")
        if x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(
                f"x's H and W must be divisible by {self.factor}, got {tuple(x.shape[2:])}"
            )
        emb = None
        if t is not None:
            if t.ndim != 1 or t.shape[0] != x.shape[0]:
                raise ValueError(
                    f"t must have shape ({x.shape[0]},) to match x, got {tuple(t.shape)}"
                )
            emb = self.time_mlp(self.embed(t.to(x.dtype)))
        h = self.conv_in(x)
        skips = []
        for i, level in enumerate(self.down):
            for layers in level:
                for layer in layers:
                    h = layer(h, emb)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        for layer in self.mid:
            h = layer(h, emb)
        for i, level in enumerate(self.up):
            for layers in level:
                h = torch.cat([h, skips.pop()], dim=1)
                for layer in layers:
                    h = layer(h, emb)
            if i < len(self.upsample):
                h = self.upsample[i](nnf.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(nnf.silu(self.norm_out(h)))

    def forward_and_dt(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(net(x, t), ∂_t net(x, t)) at fixed x, each (B, out_channels, H, W).

        Forward mode written out layer by layer (convolutions and linear maps carry the
        tangent without their bias; GroupNorm and SiLU by their derivatives): exact, and
        cheaper to train through than ``torch.func.jvp``.
        """
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must have shape (B, {self.channels}, H, W), got {tuple(x.shape)}")
        if x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(
                f"x's H and W must be divisible by {self.factor}, got {tuple(x.shape[2:])}"
            )
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t must have shape ({x.shape[0]},) to match x, got {tuple(t.shape)}")
        e, de = self.embed.forward_and_dt(t.to(x.dtype))
        l1, _, l2 = self.time_mlp
        a, da = _silu_dt(l1(e), _lin_dt(l1, de))
        emb, demb = l2(a), _lin_dt(l2, da)
        h, dh = self.conv_in(x), None
        skips = []
        for i, level in enumerate(self.down):
            for layers in level:
                for layer in layers:
                    h, dh = layer.forward_and_dt(h, dh, emb, demb)
                skips.append((h, dh))
            if i < len(self.downsample):
                h, dh = self.downsample[i](h), _lin_dt(self.downsample[i], dh)
        for layer in self.mid:
            h, dh = layer.forward_and_dt(h, dh, emb, demb)
        up = lambda v: nnf.interpolate(v, scale_factor=2.0, mode="nearest")  # noqa: E731
        for i, level in enumerate(self.up):
            for layers in level:
                sk, dsk = skips.pop()
                h, dh = torch.cat([h, sk], dim=1), torch.cat([dh, dsk], dim=1)
                for layer in layers:
                    h, dh = layer.forward_and_dt(h, dh, emb, demb)
            if i < len(self.upsample):
                h, dh = self.upsample[i](up(h)), _lin_dt(self.upsample[i], up(dh))
        a, da = _silu_dt(*_norm_dt(self.norm_out, h, dh))
        return self.conv_out(a), _lin_dt(self.conv_out, da)
