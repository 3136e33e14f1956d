"""Bits per dimension of discrete (8-bit) data: the PF-ODE bound and the ELBO.

With x ∈ {0..255}^D and uniform dequantisation u ~ U[0, 1)^D, x_c = x + u ∈ [0, 256)^D
has density p_c(x_c) and P(x) = ∫_{[0,1)^D} p_c(x + u) du ≥ exp E_u[log p_c(x + u)]
(Jensen). The model lives on y = 2 x_c / 256 − 1 ∈ [−1, 1)^D, so
p_c(x_c) = p_y(y) · (2/256)^D:

    log P(x) ≥ E_u[log p_y(y)] + D · log(2/256),    bpd = −log P(x) / (D ln 2)

(Theis et al. 2016; Ho et al. 2019, Flow++). Every constant of this conversion is a
named module-level value below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import as_generator, checked_keywords, model_dtype_device
from ..objectives import continuous_loss
from .divergence import Velocity, flat_dim
from .ode import LikelihoodResult, log_likelihood

__all__ = [
    "bits_per_dim",
    "BPDResult",
    "elbo_bits_per_dim",
    "ELBOBPDResult",
    "dequantize",
    "N_BINS",
    "DATA_LOW",
    "DATA_HIGH",
    "LOG_JACOBIAN_PER_DIM",
    "ELBO_BIN_HALF_RANGE",
]

#: Number of values of one 8-bit dimension: x ∈ {0, …, N_BINS − 1}.
N_BINS = 256
#: The model's data range: dequantised data are mapped onto [DATA_LOW, DATA_HIGH).
DATA_LOW, DATA_HIGH = -1.0, 1.0
#: log |dy/dx_c| per dimension for y = DATA_LOW + (DATA_HIGH − DATA_LOW) x_c / N_BINS,
#: i.e. log(2/256) = −log 128 ≈ −4.852 nats (= −7 bits). Added D times to log p_y.
LOG_JACOBIAN_PER_DIM = math.log((DATA_HIGH - DATA_LOW) / N_BINS)


@dataclass
class BPDResult:
    """Result of :func:`bits_per_dim`.

    Attributes:
        bpd: (B,) upper bound on −log₂ P(x) / D (the n_dequant draws combined).
        bpd_per_draw: (n_dequant, B) the single-draw bound of each dequantisation draw.
        nats: (B,) the same bound in nats per example, −log P(x) ≤ nats = bpd · D · ln 2.
        nfe: field evaluations of the (single, batched) ODE solve.
        likelihood: the underlying :class:`LikelihoodResult` over the n_dequant·B
            dequantised points (draw-major order).
    """

    bpd: Tensor
    bpd_per_draw: Tensor
    nats: Tensor
    nfe: int
    likelihood: LikelihoodResult | None = None


def _check_n_bins(n_bins) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"n_bins must be an int >= 2 (grey levels per dimension), got {n_bins!r}")


def _check_uint8(x, name: str = "x_uint8", n_bins: int = N_BINS) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(
            f"{name} must be an integer tensor with values in 0..{n_bins - 1}, got dtype {x.dtype}"
        )
    if x.ndim < 2 or x.shape[0] < 1 or x.numel() == 0:
        raise ValueError(f"{name} must have shape (B, *shape) with B >= 1, got {tuple(x.shape)}")
    if bool((x < 0).any()) or bool((x > n_bins - 1).any()):
        raise ValueError(
            f"{name} must hold values in 0..{n_bins - 1} (n_bins={n_bins}), got range "
            f"[{int(x.min())}, {int(x.max())}]"
        )


def dequantize(x_uint8: Tensor, u: Tensor, n_bins: int = N_BINS) -> Tensor:
    """y = DATA_LOW + (DATA_HIGH − DATA_LOW) · (x + u) / n_bins  (= 2 (x + u)/256 − 1 for 8 bits).

    x (…) integers in 0..n_bins − 1, u (…) in [0, 1) → y in [−1, 1), u's dtype.
    """
    x_c = x_uint8.to(u.dtype) + u  # x_c ∈ [0, n_bins)
    return DATA_LOW + (DATA_HIGH - DATA_LOW) * x_c / n_bins


@checked_keywords(log_likelihood)
def bits_per_dim(
    model=None,
    x_uint8: Tensor | None = None,
    *,
    dequant: str = "uniform",
    n_dequant: int = 1,
    generator=None,
    dtype: torch.dtype | None = None,
    velocity: Velocity | None = None,
    n_bins: int = N_BINS,
    **ll_kwargs,
) -> BPDResult:
    """Bits per dimension of discrete data under the PF-ODE density, uniform dequantisation.

    The data have ``n_bins`` levels per dimension (256 for 8-bit images, 17 for the 8x8
    digits); below, 256 stands for ``n_bins``.

    For each draw k = 1..K (K = n_dequant): u_k ~ U[0, 1)^D, y_k = 2 (x + u_k)/256 − 1,

        log P(x) ≥ log (1/K) Σ_k p_y(y_k) · (2/256)^D
                 = logsumexp_k log p_y(y_k) − log K + D · LOG_JACOBIAN_PER_DIM,

    a lower bound for every K (the K = 1 case is the usual E_u[log p_y] + D log(2/256) in
    expectation; averaging the likelihoods, not the log-likelihoods, tightens it like an
    importance-weighted bound). bpd = −(that) / (D ln 2). ``bpd_per_draw`` holds each
    draw's own K = 1 value.

    Args:
        model, velocity: as in :func:`log_likelihood` (the model's data range is [−1, 1]).
        x_uint8: (B, *shape) integer tensor with values in 0..n_bins − 1.
        n_bins: levels per dimension (default 256).
        dequant: ``"uniform"`` (the only scheme).
        n_dequant: K ≥ 1 draws; all K·B points go through ONE batched solve.
        generator: a ``torch.Generator`` or an int seed, drawn from in this order: the
            dequantisation noise, one ``torch.rand((K, B, *shape))`` call, then the
            Hutchinson probes (if any).
        dtype: the computation's dtype (default: the model's, else
            ``torch.get_default_dtype()``).
        **ll_kwargs: passed to :func:`log_likelihood` (method, trace, probes, rtol, ...).
    """
    if dequant != "uniform":
        raise ValueError(f"dequant must be 'uniform', got {dequant!r}")
    if isinstance(n_dequant, bool) or not isinstance(n_dequant, int) or n_dequant < 1:
        raise ValueError(f"n_dequant must be a positive int, got {n_dequant!r}")
    _check_n_bins(n_bins)
    if x_uint8 is None:
        raise ValueError(f"x_uint8 is required: (B, *shape) integers in 0..{n_bins - 1}")
    _check_uint8(x_uint8, n_bins=n_bins)
    dtype = dtype or model_dtype_device(model)[0] or torch.get_default_dtype()
    generator = as_generator(generator, x_uint8.device)  # once: dequantisation, then probes
    K, B, shape = n_dequant, x_uint8.shape[0], tuple(x_uint8.shape[1:])
    D = math.prod(shape)
    u = torch.rand((K, B, *shape), generator=generator, dtype=dtype, device=x_uint8.device)
    y = dequantize(x_uint8.unsqueeze(0), u, n_bins).reshape(K * B, *shape)
    res = log_likelihood(model, y, velocity=velocity, generator=generator, **ll_kwargs)
    logp_y = res.logp.reshape(K, B)

    log_jac = D * math.log((DATA_HIGH - DATA_LOW) / n_bins)  # log |det dy/dx_c| = D log(2/n_bins)
    bits = D * math.log(2.0)  # nats → bits per dimension: divide by D ln 2
    bpd_per_draw = -(logp_y + log_jac) / bits
    log_px = torch.logsumexp(logp_y, dim=0) - math.log(K) + log_jac
    return BPDResult(
        bpd=-log_px / bits, bpd_per_draw=bpd_per_draw, nats=-log_px, nfe=res.nfe, likelihood=res
    )


@dataclass
class ELBOBPDResult:
    """Result of :func:`elbo_bits_per_dim`, every field (B,) in bits per dimension.

    ``bpd = diffusion + prior + reconstruction``; ``nats`` is the negative ELBO per example.
    """

    bpd: Tensor
    diffusion: Tensor
    prior: Tensor
    reconstruction: Tensor
    nats: Tensor


@checked_keywords(continuous_loss)
def elbo_bits_per_dim(
    model,
    x_uint8: Tensor,
    *,
    generator=None,
    n_t: int = 1,
    dtype: torch.dtype | None = None,
    n_bins: int = N_BINS,
    **loss_kwargs,
) -> ELBOBPDResult:
    """The negative ELBO of 8-bit data in bits per dimension, next to :func:`bits_per_dim`.

    x is mapped to the model's range by the discretised decoder's own convention,
    x / 127.5 − 1 (bin centres; see ``ELBO_BIN_HALF_RANGE``), then
    ``continuous_loss(model, x, decoder="discretized")`` gives −ELBO ≥ −log P(x) in nats
    directly on the discrete data (the decoder puts mass on the 256 bins, so no
    dequantisation Jacobian enters). Its diffusion term is a one-sample Monte-Carlo
    estimate over t; ``n_t`` independent estimates are averaged (variance / n_t).
    bpd = −ELBO / (D ln 2). With ``n_bins`` levels the data map to x / ((n_bins − 1)/2) − 1
    and the decoder has ``n_bins`` bins.
    """
    if isinstance(n_t, bool) or not isinstance(n_t, int) or n_t < 1:
        raise ValueError(f"n_t must be a positive int, got {n_t!r}")
    _check_n_bins(n_bins)
    _check_uint8(x_uint8, n_bins=n_bins)
    if "decoder" in loss_kwargs and loss_kwargs["decoder"] != "discretized":
        raise ValueError(
            "elbo_bits_per_dim uses decoder='discretized' (8-bit data); do not pass another"
        )
    loss_kwargs.pop("decoder", None)
    dtype = dtype or model_dtype_device(model)[0] or torch.get_default_dtype()
    generator = as_generator(generator, x_uint8.device)  # once: the n_t draws differ
    x = _to_model_range(x_uint8, dtype, n_bins)
    D = flat_dim(x)
    parts = None
    for _ in range(n_t):
        with torch.no_grad():  # an evaluation: no graph (∂_t F uses forward mode, no graph needed)
            out = continuous_loss(
                model, x, generator=generator, decoder="discretized", n_bins=n_bins, **loss_kwargs
            )
        vals = [out.total, out.diffusion, out.prior, out.reconstruction]
        parts = vals if parts is None else [p + q for p, q in zip(parts, vals)]
    total, diff, prior, rec = (p.detach() / n_t for p in parts)
    bits = D * math.log(2.0)
    return ELBOBPDResult(
        bpd=total / bits,
        diffusion=diff / bits,
        prior=prior / bits,
        reconstruction=rec / bits,
        nats=total,
    )


#: The discretised decoder's scaling (``objectives.discretized_gaussian_log_prob``):
#: x ↦ x / 127.5 − 1, bin centres −1 + k·2/255 from −1 to 1 (VDM's convention). Note it
#: differs from the dequantisation map of :func:`bits_per_dim` (bin width 2/256, bins
#: [−1 + 2k/256, −1 + 2(k+1)/256)); both bounds are on the same discrete P(x), so their
#: bits/dim are comparable.
ELBO_BIN_HALF_RANGE = (N_BINS - 1) / 2


def _to_model_range(x_uint8: Tensor, dtype: torch.dtype, n_bins: int = N_BINS) -> Tensor:
    """Integers in 0..n_bins − 1 → the [−1, 1] bin centres the discretised decoder expects."""
    return x_uint8.to(dtype) / ((n_bins - 1) / 2) - 1.0
