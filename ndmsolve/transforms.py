"""Transforms F_φ(x, t) of the data: the learned part of an NDM's forward process.

Any ``nn.Module`` called as ``F(x, t)`` with ``x`` of shape (B, *shape), ``t`` of shape
(B,) and output of ``x``'s shape plugs in. Optional parts a transform may declare, each
of which lets the NDM skip network passes (the losses need F and ∂_t F at several times):

* ``forward_and_dt(x, t) -> (F, ∂_t F)``: the time derivative analytically, instead of a
  Jacobian-vector product.
* ``identity_at_zero = True``: F(x, 0) = x exactly (no pass needed at t = 0).
* ``features(x) -> h`` and ``from_features(x, h, t) -> (F, ∂_t F)``: all of the network's
  work is in a t-free ``h``, so one pass per input serves every t.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .config import configurable
from .tensors import bcast

__all__ = [
    "IdentityTransform",
    "ResidualTransform",
    "TimeBasisTransform",
    "PolynomialBasis",
    "SineBasis",
]


@configurable
class IdentityTransform(nn.Module):
    """F(x, t) = x: the classical (VP/VDM) diffusion."""

    identity_at_zero = True

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return x

    def forward_and_dt(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return x, torch.zeros_like(x)


@configurable
class ResidualTransform(nn.Module):
    """F(x, t) = x + t · net(x, t), so F(x, 0) = x exactly (classical reconstruction term).

    ``net`` is any module ``net(x, t)`` returning ``x``'s shape. ∂_t F = net + t ∂_t net,
    with ∂_t net from ``net.forward_and_dt(x, t)`` when the net has one (``MLP`` does:
    forward mode written out), else from a JVP (``torch.func.jvp``).
    """

    identity_at_zero = True

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return x + bcast(t, x) * self.net(x, t)

    def forward_and_dt(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        if hasattr(self.net, "forward_and_dt"):
            n, dn = self.net.forward_and_dt(x, t)
        else:
            t = t.contiguous()  # a broadcast (stride-0) t cannot carry a tangent
            n, dn = torch.func.jvp(lambda s: self.net(x, s), (t,), (torch.ones_like(t),))
        tb = bcast(t, x)
        return x + tb * n, n + tb * dn


class PolynomialBasis(nn.Module):
    """b_k(t) = t^k, k = 1..K (all vanish at t = 0)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Values and derivatives, each (B, K)."""
        k = torch.arange(1, self.n + 1, dtype=t.dtype, device=t.device)
        tt = t.unsqueeze(-1)
        return tt**k, k * tt ** (k - 1)


@configurable
class SineBasis(nn.Module):
    """b_k(t) = sin(kπt/2) / k, k = 1..K (all vanish at t = 0; bounded derivatives)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
        k = torch.arange(1, self.n + 1, dtype=t.dtype, device=t.device)
        w = 0.5 * math.pi * k
        arg = w * t.unsqueeze(-1)
        return torch.sin(arg) / k, w * torch.cos(arg) / k


_BASES = {"polynomial": PolynomialBasis, "sine": SineBasis}


@configurable
class TimeBasisTransform(nn.Module):
    """F(x, t) = x + Σ_k b_k(t) · h_k(x), with ∂_t F = Σ_k b_k'(t) · h_k(x) analytic.

    One pass of ``net`` gives F and ∂_t F at every t (``features`` / ``from_features``), so
    the NDM drift costs about one forward and the losses one pass per input (x and x̂).

    Args:
        net: module called as ``net(x)`` returning ``K * prod(shape)`` numbers per sample
            (any shape that reshapes to (B, K, *shape)).
        n_basis: K.
        basis: ``"polynomial"`` (t^k) or ``"sine"`` (sin(kπt/2)/k); every b_k(0) = 0.
    """

    identity_at_zero = True

    def __init__(self, net: nn.Module, n_basis: int, basis: str = "sine"):
        super().__init__()
        if not isinstance(n_basis, int) or n_basis < 1:
            raise ValueError(f"n_basis must be a positive int, got {n_basis!r}")
        if basis not in _BASES:
            raise ValueError(f"basis must be one of {sorted(_BASES)}, got {basis!r}")
        self.net = net
        self.n_basis = n_basis
        self.basis = _BASES[basis](n_basis)

    def _h(self, x: Tensor) -> Tensor:
        h = self.net(x)
        want = x.shape[0] * self.n_basis * math.prod(x.shape[1:])
        if h.numel() != want:
            raise ValueError(
                f"net must return {self.n_basis} x {tuple(x.shape[1:])} values per sample, "
                f"got output of shape {tuple(h.shape)}"
            )
        return h.reshape(x.shape[0], self.n_basis, *x.shape[1:])

    def _combine(self, b: Tensor, h: Tensor) -> Tensor:
        return (b.reshape(b.shape + (1,) * (h.ndim - 2)) * h).sum(1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        b, _ = self.basis(t)
        return x + self._combine(b, self._h(x))

    def forward_and_dt(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return self.from_features(x, self._h(x), t)

    def features(self, x: Tensor) -> Tensor:
        """h(x) = net(x) as (B, K, *shape): the only network pass, shared by every t."""
        return self._h(x)

    def from_features(self, x: Tensor, h: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(F(x, t), ∂_t F(x, t)) from ``h = features(x)``, each (B, *shape)."""
        b, db = self.basis(t)
        return x + self._combine(b, h), self._combine(db, h)
