"""Toy data sets: five 2D sets and a 1D Gaussian mixture.

Every set is ``fn(n, generator=None, dtype=torch.float32) -> (n, d)``; randomness comes
only from ``generator`` (a ``torch.Generator`` or an int seed), so a seeded generator gives the same
points every time. The 2D sets follow the conventions of FFJORD's toy data (scale about
[-4, 4]) so numbers are comparable with the literature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .._checks import seeded

__all__ = [
    "checkerboard",
    "two_moons",
    "eight_gaussians",
    "swiss_roll",
    "rings",
    "gaussian_mixture_1d",
    "gaussian_mixture_1d_log_prob",
    "TOY_DATASETS",
    "load_toy",
]


def _check_n(n) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")


def _rand(n, generator, dtype, *shape) -> Tensor:
    return torch.rand((n, *shape), generator=generator, dtype=dtype)


def _randn(n, generator, dtype, *shape) -> Tensor:
    return torch.randn((n, *shape), generator=generator, dtype=dtype)


@seeded
def checkerboard(
    n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Uniform on the 8 dark squares of a 4x4 board over [-4, 4]², (n, 2)."""
    _check_n(n)
    x1 = _rand(n, generator, dtype) * 4 - 2
    row = torch.randint(0, 2, (n,), generator=generator).to(dtype)
    x2 = _rand(n, generator, dtype) - 2 * row + torch.floor(x1) % 2
    return torch.stack([x1, x2], dim=1) * 2


@seeded
def two_moons(
    n: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    noise: float = 0.1,
) -> Tensor:
    """Two interleaved half circles (sklearn's make_moons, ×2, shifted), (n, 2)."""
    _check_n(n)
    theta = _rand(n, generator, dtype) * math.pi
    lower = torch.randint(0, 2, (n,), generator=generator).to(dtype)
    x = torch.where(lower > 0, 1 - torch.cos(theta), torch.cos(theta))
    y = torch.where(lower > 0, 0.5 - torch.sin(theta), torch.sin(theta))
    pts = torch.stack([x, y], dim=1) + noise * _randn(n, generator, dtype, 2)
    return pts * 2 + torch.tensor([-1.0, -0.2], dtype=dtype)


@seeded
def eight_gaussians(
    n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Eight Gaussians (std 0.5/√2) on a circle of radius 4/√2 ≈ 2.83, (n, 2)."""
    _check_n(n)
    k = torch.randint(0, 8, (n,), generator=generator).to(dtype)
    angle = k * (math.pi / 4)
    centers = 4.0 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return (centers + 0.5 * _randn(n, generator, dtype, 2)) / math.sqrt(2)


@seeded
def swiss_roll(
    n: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    noise: float = 1.0,
) -> Tensor:
    """A 2D Swiss roll (sklearn's make_swiss_roll, coordinates x and z, /5), (n, 2)."""
    _check_n(n)
    t = 1.5 * math.pi * (1 + 2 * _rand(n, generator, dtype))
    pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) + noise * _randn(
        n, generator, dtype, 2
    )
    return pts / 5


@seeded
def rings(
    n: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    noise: float = 0.08,
) -> Tensor:
    """Four concentric rings, radii 0.75, 1.5, 2.25, 3, with Gaussian noise, (n, 2)."""
    _check_n(n)
    radius = 0.75 * (1 + torch.randint(0, 4, (n,), generator=generator)).to(dtype)
    angle = 2 * math.pi * _rand(n, generator, dtype)
    pts = radius.unsqueeze(1) * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return pts + noise * _randn(n, generator, dtype, 2)


_GM_MEANS = (-2.0, 0.5, 2.5)
_GM_STDS = (0.3, 0.5, 0.2)
_GM_WEIGHTS = (0.3, 0.4, 0.3)


def _gm_params(means, stds, weights, dtype):
    m, s, w = (torch.as_tensor(v, dtype=dtype) for v in (means, stds, weights))
    if not (m.ndim == s.ndim == w.ndim == 1 and m.shape == s.shape == w.shape and m.numel() >= 1):
        raise ValueError(
            f"means, stds, weights must be 1-D of one length, got {m.shape}, {s.shape}, {w.shape}"
        )
    if not bool((s > 0).all()):
        raise ValueError(f"stds must be positive, got {s.tolist()}")
    if not bool((w >= 0).all()) or float(w.sum()) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {w.tolist()}")
    return m, s, w / w.sum()


@seeded
def gaussian_mixture_1d(
    n: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    means: Sequence[float] = _GM_MEANS,
    stds: Sequence[float] = _GM_STDS,
    weights: Sequence[float] = _GM_WEIGHTS,
) -> Tensor:
    """A 1D Gaussian mixture (default: three well-separated modes), (n, 1).

    Its exact log-density is ``gaussian_mixture_1d_log_prob`` (for likelihood checks).
    """
    _check_n(n)
    m, s, w = _gm_params(means, stds, weights, dtype)
    k = torch.multinomial(w.double(), n, replacement=True, generator=generator)
    return (m[k] + s[k] * _randn(n, generator, dtype)).unsqueeze(1)


def gaussian_mixture_1d_log_prob(
    x: Tensor,
    means: Sequence[float] = _GM_MEANS,
    stds: Sequence[float] = _GM_STDS,
    weights: Sequence[float] = _GM_WEIGHTS,
) -> Tensor:
    """Exact log-density (nats) of ``gaussian_mixture_1d`` at x (n, 1) -> (n,)."""
    if x.ndim != 2 or x.shape[1] != 1:
        raise ValueError(f"x must have shape (n, 1), got {tuple(x.shape)}")
    m, s, w = _gm_params(means, stds, weights, x.dtype)
    z = (x - m) / s  # (n, K)
    comp = -0.5 * z**2 - torch.log(s) - 0.5 * math.log(2 * math.pi)
    return torch.logsumexp(comp + torch.log(w), dim=1)


TOY_DATASETS: dict[str, Callable[..., Tensor]] = {
    "checkerboard": checkerboard,
    "two_moons": two_moons,
    "eight_gaussians": eight_gaussians,
    "swiss_roll": swiss_roll,
    "rings": rings,
    "gaussian_mixture_1d": gaussian_mixture_1d,
}


def load_toy(
    name: str,
    n: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``TOY_DATASETS[name](n, generator, dtype)``; an unknown name lists the valid ones."""
    if name not in TOY_DATASETS:
        raise ValueError(f"name must be one of {sorted(TOY_DATASETS)}, got {name!r}")
    return TOY_DATASETS[name](n, generator=generator, dtype=dtype)
