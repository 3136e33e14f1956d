"""Importance sampling of t for the continuous-time negative ELBO.

L_diff = ∫_0^1 ℓ(t) dt with ℓ(t) = E_ε[½‖Δ‖²/g²]. Drawing t from a density q on [0, 1] and
weighting the integrand by 1/q(t) keeps the estimate unbiased for any q > 0, and its
variance is smallest for q(t) ∝ sqrt(E_ε[ℓ(t, ε)²]). ``TimeProposal`` is a piecewise-constant
q on K equal bins of [0, 1], mixed with the uniform density (``floor``) so that 1/q stays
bounded; ``TimeProposal.fit`` builds one from pilot draws (t, integrand), and
``AdaptiveTimeProposal`` keeps a running per-bin second moment during training.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import as_generator
from .tensors import bin_index

__all__ = ["TimeProposal", "AdaptiveTimeProposal"]


def _check_bins_floor(bins, floor) -> None:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"floor must lie in (0, 1], got {floor!r}")


class TimeProposal:
    """q(t) = K p_k on bin k = [k/K, (k+1)/K), p (K,) the bin probabilities (sum 1).

    Args:
        probs: (K,) non-negative bin weights (normalised here).
        floor: fraction of uniform mixed in: p ← (1 − floor) p + floor / K, so
            q ≥ floor and every weight 1/q(t) ≤ 1/floor.
    """

    def __init__(self, probs: Tensor, floor: float = 0.1):
        probs = torch.as_tensor(probs, dtype=torch.float64)
        if probs.ndim != 1 or probs.numel() < 1:
            raise ValueError(f"probs must have shape (K,) with K >= 1, got {tuple(probs.shape)}")
        if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()) or probs.sum() <= 0:
            raise ValueError("probs must be finite, non-negative and not all zero")
        _check_bins_floor(probs.numel(), floor)
        K = probs.numel()
        self.probs = (1.0 - floor) * (probs / probs.sum()) + floor / K
        self.floor = float(floor)

    @property
    def bins(self) -> int:
        return self.probs.numel()

    @classmethod
    def uniform(cls, bins: int = 1) -> TimeProposal:
        return cls(torch.ones(bins), floor=1.0)

    @classmethod
    def fit(
        cls,
        t: Tensor,
        values: Tensor,
        bins: int = 20,
        floor: float = 0.1,
        center: bool = False,
    ) -> TimeProposal:
        """A proposal from pilot draws: t (N,) in [0, 1] and the integrand (N,) at them.

        q_k ∝ sqrt(mean of values² in bin k), the variance-optimal q for independent draws
        of t; with ``center=True``, q_k ∝ the standard deviation of values in bin k, optimal
        when each point's draws are finely stratified in q's quantile (``quantile``), which
        integrates the bin means without noise. Within a bin the draws' t need only be
        uniform, so pilot draws from any proposal on the same bins serve. A bin with no
        draw gets the largest weight seen (no part of [0, 1] is starved).
        """
        _check_bins_floor(bins, floor)
        if t.shape != values.shape or t.ndim != 1:
            raise ValueError(
                f"t and values must have one shape (N,), got {tuple(t.shape)} and {tuple(values.shape)}"
            )
        m2, n = _bin_moments(t, values, bins)
        mean2 = m2 / n.clamp(min=1)
        if center:
            s1 = torch.zeros(bins, dtype=torch.float64).index_add_(
                0, bin_index(t, bins).cpu(), values.detach().double().cpu()
            )
            mean2 = (mean2 - (s1 / n.clamp(min=1)) ** 2).clamp(min=0.0)
        w = torch.where(n > 0, mean2.sqrt(), torch.zeros_like(m2))
        w = torch.where(n > 0, w, w.max())
        if w.sum() <= 0:
            w = torch.ones_like(w)
        return cls(w, floor=floor)

    def density(self, t: Tensor) -> Tensor:
        """q(t), t's shape."""
        k = (t * self.bins).long().clamp(0, self.bins - 1)
        return (self.bins * self.probs.to(t.device)).to(t.dtype)[k]

    def sample(
        self,
        B: int,
        *,
        generator=None,
        stratified: bool = True,
        dtype: torch.dtype | None = None,
        device=None,
    ) -> tuple[Tensor, Tensor]:
        """B times t ~ q and their densities q(t), each (B,).

        ``stratified``: u_i = (U + i)/B with one shared U ~ U[0, 1) (as ``sample_times``'s
        antithetic sampler), mapped through q's inverse CDF; each t_i is still marginally q.
        """
        if isinstance(B, bool) or not isinstance(B, int) or B < 1:
            raise ValueError(f"B must be a positive int, got {B!r}")
        dtype = dtype or torch.get_default_dtype()
        generator = as_generator(generator, device)
        if stratified:
            u0 = torch.rand((), generator=generator, dtype=torch.float64, device=device)
            u = torch.remainder(u0 + torch.arange(B, dtype=torch.float64, device=device) / B, 1.0)
        else:
            u = torch.rand(B, generator=generator, dtype=torch.float64, device=device)
        return self.quantile(u, dtype)

    def quantile(self, u: Tensor, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """The inverse CDF of q at u (any shape, in [0, 1)) and q there: (t, q(t))."""
        dtype = dtype or u.dtype
        u = u.to(torch.float64)
        p = self.probs.to(u.device)
        cdf = torch.cumsum(p, 0)
        k = torch.searchsorted(cdf, u, right=True).clamp(max=self.bins - 1)
        lo = cdf[k] - p[k]
        t = ((k + ((u - lo) / p[k]).clamp(0.0, 1.0)) / self.bins).clamp(max=1.0)
        return t.to(dtype), (self.bins * p[k]).to(dtype)

    def __repr__(self) -> str:
        return f"TimeProposal(bins={self.bins}, floor={self.floor})"


def _bin_moments(t: Tensor, values: Tensor, bins: int) -> tuple[Tensor, Tensor]:
    """Per-bin sum of values² and count, each (bins,) float64 on the CPU."""
    k = bin_index(t, bins).cpu()
    v = values.detach().double().cpu()
    m2 = torch.zeros(bins, dtype=torch.float64).index_add_(0, k, v**2)
    n = torch.zeros(bins, dtype=torch.float64).index_add_(0, k, torch.ones_like(v))
    return m2, n


class AdaptiveTimeProposal(TimeProposal):
    """A ``TimeProposal`` refitted as training goes: a running (exponentially weighted, by
    ``decay`` per update) per-bin mean of the weighted-back integrand², q_k ∝ its square root.

    Uniform until every bin has been seen ``warmup`` times. Each draw's value is the
    integrand ℓ(t, ε) itself (not ℓ/q), so the estimate of E[ℓ² | bin] does not depend
    on the proposal that drew it. The estimate stays unbiased at every step: q is fixed
    before each batch's t are drawn.
    """

    def __init__(self, bins: int = 20, floor: float = 0.1, decay: float = 0.99, warmup: int = 10):
        _check_bins_floor(bins, floor)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay!r}")
        super().__init__(torch.ones(bins), floor=1.0)
        self.floor, self.decay, self.warmup = float(floor), float(decay), int(warmup)
        self.m2 = torch.zeros(bins, dtype=torch.float64)
        self.n = torch.zeros(bins, dtype=torch.float64)
        self.seen = torch.zeros(bins, dtype=torch.float64)

    def sample(self, B: int, **kwargs) -> tuple[Tensor, Tensor]:
        """As ``TimeProposal.sample``; the draw is kept for ``observe``."""
        t, q = super().sample(B, **kwargs)
        self._last = (t.detach(), q.detach())
        return t, q

    def observe(self, weighted: Tensor) -> None:
        """Refit from the loss's diffusion term (B,) at the last ``sample``'s draw, as the
        loss returned it (weighted by 1/q): ``update(t, weighted · q)``."""
        if getattr(self, "_last", None) is None:
            raise RuntimeError("observe() needs a sample() before it")
        t, q = self._last
        self._last = None
        self.update(t, weighted.detach() * q.to(weighted.dtype))

    def update(self, t: Tensor, values: Tensor) -> None:
        """Add the integrand ``values`` (B,) seen at times ``t`` (B,) and refit q."""
        m2, n = _bin_moments(t, values, self.bins)
        self.m2 = self.decay * self.m2 + m2
        self.n = self.decay * self.n + n
        self.seen += n
        if bool((self.seen >= self.warmup).all()):
            rms = (self.m2 / self.n.clamp(min=1e-300)).sqrt()
            if rms.sum() > 0:
                K = self.bins
                self.probs = (1.0 - self.floor) * (rms / rms.sum()) + self.floor / K

    def state_dict(self) -> dict:
        return {k: getattr(self, k).clone() for k in ("m2", "n", "seen", "probs")}

    def load_state_dict(self, state: dict) -> None:
        for k in ("m2", "n", "seen", "probs"):
            setattr(self, k, state[k].clone().to(torch.float64))
