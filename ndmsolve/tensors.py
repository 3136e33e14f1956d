"""Small tensor helpers shared by the NDM modules."""

from __future__ import annotations

from torch import Tensor

__all__ = ["bcast", "bin_index"]


def bcast(a: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample (B,) tensor to broadcast against x (B, *shape)."""
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def bin_index(t: Tensor, bins: int) -> Tensor:
    """Index of t's equal bin in [0, 1], same shape and device as ``t``."""
    return (t.detach() * bins).long().clamp(0, bins - 1)
