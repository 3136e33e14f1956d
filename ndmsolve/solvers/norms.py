"""Error norms of the adaptive solvers: how one step's error estimate becomes one number.

An adaptive step is accepted when ``norm(x) <= 1`` for the scaled error

    x = err / (atol + rtol · max(|y0|, |y1|))        (elementwise, y0.shape),

with ``err`` the embedded error estimate and ``y0``, ``y1`` the states before and after
the step. With ``x`` viewed as ``(B, n)`` (B = ``y0.shape[0]`` samples along the leading
dimension, n the rest; a 0-dim state is one sample):

- ``"rms"``:        sqrt( (1/(B n)) Σ_b Σ_j x_bj² )   one RMS over the whole batch (torchdiffeq);
- ``"sample_max"``: max_b sqrt( (1/n) Σ_j x_bj² )     RMS within each sample, the worst sample;
- ``"max"``:        max_{b,j} |x_bj|                 every component.

rms ≤ sample_max ≤ max always, so for the same tolerance "rms" takes the largest steps
and "max" the smallest. With "rms" a few samples can carry errors far above the
tolerance while the batch mean is fine; "sample_max" bounds every sample's own RMS.

A callable ``norm(x) -> 0-dim tensor`` is used as given (e.g. a weighted norm). It must
not sync with the host (the step's single sync reads its result).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "NORMS",
    "rms_norm",
    "sample_max_norm",
    "max_norm",
    "resolve_norm",
    "scalar_norm",
    "error_ratio",
]

Norm = Callable[[Tensor], Tensor]


def rms_norm(x: Tensor) -> Tensor:
    """0-dim RMS of all entries of ``x``."""
    return x.square().mean().sqrt()


def sample_max_norm(x: Tensor) -> Tensor:
    """0-dim max over the leading dimension of the RMS over the others."""
    if x.ndim <= 1:
        return x.abs().max()
    return x.reshape(x.shape[0], -1).square().mean(1).max().sqrt()


def max_norm(x: Tensor) -> Tensor:
    """0-dim max of ``|x|``."""
    return x.abs().max()


NORMS: dict[str, Norm] = {"rms": rms_norm, "sample_max": sample_max_norm, "max": max_norm}


def resolve_norm(norm) -> Norm:
    """A norm name from ``NORMS`` or a callable -> the callable."""
    if callable(norm):
        return norm
    if isinstance(norm, str) and norm in NORMS:
        return NORMS[norm]
    raise ValueError(
        f"norm must be one of {tuple(NORMS)} or a callable norm(x) -> 0-dim tensor, got {norm!r}"
    )


def scalar_norm(norm: Norm, x: Tensor) -> Tensor:
    """``norm(x)``, checked to be a 0-dim tensor (a shape check: no host sync)."""
    r = norm(x)
    if not isinstance(r, Tensor) or r.ndim != 0:
        raise ValueError(
            f"norm must return a 0-dim tensor, got "
            f"{tuple(r.shape) if isinstance(r, Tensor) else type(r).__name__}"
        )
    return r


def error_ratio(
    err: Tensor, y0: Tensor, y1: Tensor, rtol: float, atol: float, norm: Norm = rms_norm
) -> Tensor:
    """0-dim ``norm(err / (atol + rtol·max(|y0|, |y1|)))``; ``err``, ``y0``, ``y1`` of one shape."""
    scale = torch.maximum(y0.abs(), y1.abs()).mul_(rtol).add_(atol)
    return scalar_norm(norm, err / scale)
