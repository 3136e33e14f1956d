"""Sample-quality metrics for comparing two sets of samples.

Sliced Wasserstein distance (p = 2 by default):

    SW_p(μ, ν) = ( E_θ [ W_p^p(θ#μ, θ#ν) ] )^{1/p},   θ uniform on the unit sphere,

estimated with ``n_proj`` random directions (or directions you pass). The 1-D
Wasserstein distance between empirical measures is computed exactly from sorted
projections (equal sizes) or from their quantile functions at common levels
(different sizes).

For two Gaussians the 1-D projections are N(θ·μ_i, θᵀS_iθ) and
W_2² = (θ·(μ_1 − μ_2))² + (s_1 − s_2)² with s_i = sqrt(θᵀS_iθ), which the tests use.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._checks import seeded

__all__ = ["sliced_wasserstein", "random_directions", "wasserstein_1d"]


@seeded
def random_directions(
    n_proj: int, d: int, *, generator: Optional[torch.Generator] = None, dtype=torch.float32, device=None
) -> Tensor:
    """``n_proj`` directions uniform on the unit sphere in R^d, shape (n_proj, d)."""
    if not isinstance(n_proj, int) or n_proj < 1:
        raise ValueError(f"n_proj must be a positive int, got {n_proj!r}")
    if not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive int, got {d!r}")
    v = torch.randn(n_proj, d, generator=generator, dtype=dtype, device=device)
    return v / v.norm(dim=1, keepdim=True)


def wasserstein_1d(u: Tensor, v: Tensor, p: float = 2.0) -> Tensor:
    """W_p^p between the empirical measures of the columns of ``u`` (n, P) and ``v`` (m, P).

    Returns (P,): one value per column. Equal sizes: mean |u_(i) − v_(i)|^p over the
    sorted values (exact). Different sizes: both quantile functions are evaluated at
    the max(n, m) mid-point levels (i + ½)/N and compared (a close approximation).
    """
    n, m = u.shape[0], v.shape[0]
    us, _ = torch.sort(u, dim=0)
    vs, _ = torch.sort(v, dim=0)
    if n != m:
        N = max(n, m)
        levels = (torch.arange(N, dtype=u.dtype, device=u.device) + 0.5) / N
        us, vs = _quantiles(us, levels), _quantiles(vs, levels)
    return (us - vs).abs().pow(p).mean(0)


def _quantiles(sorted_x: Tensor, levels: Tensor) -> Tensor:
    # Linear interpolation of the empirical quantile function of sorted columns at levels.
    n = sorted_x.shape[0]
    pos = (levels * n - 0.5).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo.to(pos.dtype)).unsqueeze(1)
    return sorted_x[lo] * (1 - w) + sorted_x[hi] * w


@seeded
def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    n_proj: int = 256,
    generator: Optional[torch.Generator] = None,
    *,
    p: float = 2.0,
    directions: Optional[Tensor] = None,
) -> Tensor:
    """Sliced p-Wasserstein distance between sample sets ``x`` (n, *shape), ``y`` (m, *shape).

    Args:
        x, y: samples; everything after the batch dimension is flattened.
        n_proj: number of random directions (ignored when ``directions`` is given).
        generator: draws the directions; same seed, same value.
        p: the order (≥ 1).
        directions: optional (P, d) directions to use instead of random ones (they are
            normalised to unit length).

    Returns a 0-dim tensor: ( mean_θ W_p^p(θ·x, θ·y) )^{1/p}.
    """
    for name, a in (("x", x), ("y", y)):
        if not isinstance(a, Tensor) or not a.is_floating_point():
            raise TypeError(f"{name} must be a floating torch.Tensor")
        if a.ndim < 2 or a.shape[0] < 1:
            raise ValueError(f"{name} must have shape (n, *shape) with n >= 1, got {tuple(a.shape)}")
    x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    if not p >= 1:
        raise ValueError(f"p must be >= 1, got {p}")
    y = y.to(x.dtype)
    d = x.shape[1]
    if directions is None:
        directions = random_directions(n_proj, d, generator=generator, dtype=x.dtype, device=x.device)
    else:
        if directions.ndim != 2 or directions.shape[1] != d:
            raise ValueError(f"directions must have shape (P, {d}), got {tuple(directions.shape)}")
        directions = directions.to(x.dtype) / directions.norm(dim=1, keepdim=True).to(x.dtype)
    w = wasserstein_1d(x @ directions.T, y @ directions.T, p)
    return w.mean().pow(1.0 / p)
