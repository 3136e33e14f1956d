"""Training objectives of a Neural Diffusion Model: the negative ELBO in continuous and
discrete time, with its prior and reconstruction terms.

All losses are per sample, in nats, shape (B,):

    −log p_θ(x) ≤ L_rec + L_diff + L_prior = NegELBO.total

**Continuous time.** The data-conditional forward SDE dz = f(z, t, x) dt + g dw,
f = (d/dt log α_t) z + α_t ∂_t F(x, t), run backwards has drift f(z, t, x) − g² s_x with
s_x = −(z − α_t F(x, t)) / σ_t²; the model's reverse SDE has the same form with x̂ = x̂_θ(z_t, t)
in place of x. By Girsanov the KL between the two reverse path measures is the time
integral of ½‖drift difference‖²/g²:

    f(z,t,x) − f(z,t,x̂) = α_t ∂_t ΔF,      s_x − s_x̂ = α_t ΔF / σ_t²,
    Δ = α_t ∂_t ΔF − (g² α_t / σ_t²) ΔF = α_t (∂_t ΔF + λ'(t) ΔF)      (g²/σ² = −λ')
    ‖Δ‖² / g² = e^{λ(t)} ‖∂_t ΔF + λ'(t) ΔF‖² / (−λ'(t))              (α²/σ² = e^λ)
    L_diff = ½ ∫_0^1 E_{z_t ~ q(z_t|x)} [‖Δ‖² / g²] dt,   ΔF = F(x, t) − F(x̂, t).

(``z_t`` cancels from Δ, so no tiny σ² is ever divided by.) With F = identity,
∂_t ΔF = 0 and the integrand is VDM's −λ'(t) e^{λ(t)} ‖x − x̂‖². One t per sample gives
an unbiased estimate of the integral.

**Discrete time** (T steps, t_i = i/T, s = t_i − 1/T): L_diff = Σ_i KL(q(z_s|z_t, x) ‖
p_θ(z_s|z_t)), both Gaussians with the variance σ̃² of ``NDM.posterior``, so
KL = ‖μ_q − μ_p‖² / (2σ̃²). One uniformly drawn i per sample gives the unbiased T·KL_i.
Expanding μ_q − μ_p = α_s (ΔF(s) − e^{λ_t − λ_s} ΔF(t)) to first order in 1/T shows
T·KL_i → the continuous integrand, so L_T → L_∞ (error O(1/T)).

**Prior** KL(q(z_1|x) ‖ N(0, I)) = ½ [α_1² ‖F(x, 1)‖² + d (σ_1² − 1 − log σ_1²)].
Only the first part needs F(x, 1), a whole transform pass, and with α_1² ≈ e^{λ_1} it is
tiny. ``continuous_loss(prior_fraction=f)`` evaluates it on m = max(1, round(f·B)) rows
I drawn uniformly without replacement, weighted by B/m (the constant part stays on every
row): E_I[(B/m) Σ_{i∈I} a_i] = Σ_i a_i, so the batch mean, its gradient and the estimate's
expectation over the data are unchanged; each row's ``prior`` is no longer its own KL.

**Reconstruction** −log p(x | z_0), decoder:

* ``"gaussian"``: p(x | z_0) = N(x; z_0/α_0, (σ_0/α_0)² I). Its *exact* expectation over
  q(z_0|x) is used (no sampling):
  E[−log p] = ½ d (log 2π + 1 − λ_0) + ½ e^{λ_0} ‖x − F(x, 0)‖²
  (the last term vanishes when F(x, 0) = x).
* ``"discretized"``: data of ``n_bins`` levels (256: 8-bit) scaled to [−1, 1]; per dimension
  the same Gaussian integrated over the data's bin (width 2/(n_bins − 1); the two edge bins
  reach to ±∞), at one
  sample z_0 ~ q(z_0|x) drawn with ``generator``.

**Randomness**, all through ``generator`` and in this order: the times (or step indices),
then ε for z_t, then (discretized decoder only) ε_0 for z_0, then (``prior_fraction < 1``
only) the prior's rows.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as nnf
from torch import Tensor

from ._checks import as_generator, check_batch_time, check_like_model, checked_keywords
from .process import NDM
from .tensors import bcast

__all__ = [
    "NegELBO",
    "continuous_loss",
    "discrete_loss",
    "nelbo_estimate",
    "held_out_nelbo",
    "sample_times",
    "prior_loss",
    "prior_rows",
    "reconstruction_loss",
    "discretized_gaussian_log_prob",
    "TIME_SAMPLERS",
    "DECODERS",
]

TIME_SAMPLERS = ("uniform", "antithetic", "stratified")
DECODERS = ("gaussian", "discretized")


class NegELBO(NamedTuple):
    """Negative ELBO per sample, each (B,) in nats; ``total = diffusion + prior + reconstruction``."""

    total: Tensor
    diffusion: Tensor
    prior: Tensor
    reconstruction: Tensor


# --------------------------------------------------------------------------- checks
def _check_model(model) -> None:
    if not isinstance(model, NDM):
        raise TypeError(f"model must be an ndmsolve.NDM, got {type(model).__name__}")


def _check_x(x, model=None) -> None:
    """``x`` (B, *shape) floating, of the model's dtype, device and ``data_shape``; checked
    here, on the user's tensor, so messages show the shape the user passed."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (B, *shape) with B >= 1, got {tuple(x.shape)}")
    if model is None:
        return
    shape = getattr(model, "data_shape", None)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(
            f"x must have shape (B, {', '.join(map(str, shape))}) for this model "
            f"(data_shape {tuple(shape)}), got {tuple(x.shape)}"
        )
    check_like_model(x, model, "x")


def _check_decoder(decoder) -> None:
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")


def _sum_dims(v: Tensor) -> Tensor:
    """Sum over every non-batch dimension: (B, *shape) -> (B,)."""
    return v.reshape(v.shape[0], -1).sum(1)


def _n_dims(x: Tensor) -> int:
    return math.prod(x.shape[1:])


# --------------------------------------------------------------------------- times
@checked_keywords()
def sample_times(
    B: int,
    *,
    generator=None,
    method: str = "antithetic",
    dtype: torch.dtype | None = None,
    device=None,
) -> Tensor:
    """B times in [0, 1), shape (B,).

    ``"uniform"``: iid U[0, 1). ``"antithetic"`` / ``"stratified"`` (same thing): VDM's
    low-discrepancy sampler t_i = (u + i/B) mod 1 with one shared u ~ U[0, 1), so every
    stratum [i/B, (i+1)/B) holds exactly one t; each t_i is still marginally U[0, 1)
    (the estimate stays unbiased) but the batch mean has lower variance.
    """
    if isinstance(B, bool) or not isinstance(B, int) or B < 1:
        raise ValueError(f"B must be a positive int, got {B!r}")
    if method not in TIME_SAMPLERS:
        raise ValueError(f"method must be one of {TIME_SAMPLERS}, got {method!r}")
    dtype = dtype or torch.get_default_dtype()
    generator = as_generator(generator, device)
    if method == "uniform":
        return torch.rand(B, generator=generator, dtype=dtype, device=device)
    u = torch.rand((), generator=generator, dtype=dtype, device=device)
    return torch.remainder(u + torch.arange(B, dtype=dtype, device=device) / B, 1.0)


# --------------------------------------------------------------------------- prior and reconstruction
def _prior_from_F1(model: NDM, F1: Tensor) -> Tensor:
    """KL(N(α_1 F(x,1), σ_1² I) ‖ N(0, I)) = ½ [α_1² ‖F1‖² + d (σ_1² − 1 − log σ_1²)], (B,)."""
    one = torch.ones(F1.shape[0], dtype=F1.dtype, device=F1.device)
    lam1 = model.schedule.log_snr(one)
    alpha2 = torch.sigmoid(lam1)
    # σ² − 1 − log σ² = −α² + softplus(λ)   (log σ² = logsigmoid(−λ) = −softplus(λ))
    per_dim = nnf.softplus(lam1) - alpha2
    return 0.5 * (alpha2 * _sum_dims(F1**2) + _n_dims(F1) * per_dim)


@checked_keywords()
def prior_loss(model: NDM, x: Tensor) -> Tensor:
    """KL(q(z_1 | x) ‖ N(0, I)) in nats, (B,)."""
    _check_model(model)
    _check_x(x, model)
    one = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    return _prior_from_F1(model, model.F(x, one))


def discretized_gaussian_log_prob(
    x: Tensor, mean: Tensor, std: Tensor, n_bins: int = 256
) -> Tensor:
    """Per-element log-probability of the bin holding ``x`` under N(mean, std²).

    With n = ``n_bins`` levels (256 for 8-bit data), x in [−1, 1] is snapped to the nearest
    of the n bin centres −1 + k·2/(n − 1); bin k covers [x_k − 1/(n − 1), x_k + 1/(n − 1)],
    with the first reaching to −∞ and the last to +∞, so the n probabilities sum to 1.
    ``std`` broadcasts against ``x``. Returns ``x``'s shape.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"n_bins must be an int >= 2, got {n_bins!r}")
    scale = (n_bins - 1) / 2.0
    half = 1.0 / (n_bins - 1)
    k = torch.round((x + 1.0) * scale).clamp(0, n_bins - 1)
    xc = k / scale - 1.0
    lo = (xc - half - mean) / std
    hi = (xc + half - mean) / std
    first, last = k == 0, k == n_bins - 1
    edge = first | last
    # P = Φ(b) − Φ(a) with both CDFs in the lower tail, where log_ndtr is accurate:
    # bins right of the mean are reflected (Φ(hi) − Φ(lo) = Φ(−lo) − Φ(−hi)); the edge bins
    # are Φ(hi) (first) and Φ(−lo) (last) with no a. No infinities enter, so gradients stay finite.
    flip = (lo + hi) > 0
    b = torch.where(first, hi, torch.where(last | flip, -lo, hi))
    a = torch.where(edge, torch.zeros_like(lo), torch.where(flip, -hi, lo))
    log_b = torch.special.log_ndtr(b)
    log_a = torch.special.log_ndtr(a)
    # log(Φ(b) − Φ(a)) = log Φ(b) + log(−expm1(log Φ(a) − log Φ(b)))
    gap = torch.where(edge, torch.full_like(lo, -1.0), log_a - log_b)
    return log_b + torch.where(edge, torch.zeros_like(lo), torch.log(-torch.expm1(gap)))


def _reconstruction(
    model: NDM,
    x: Tensor,
    F0: Tensor,
    decoder: str,
    generator,
    z_0: Tensor | None,
    n_bins: int = 256,
) -> Tensor:
    zero = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    lam0 = model.schedule.log_snr(zero)
    alpha0, sigma0 = model.schedule(zero)
    d = _n_dims(x)
    if decoder == "gaussian" and z_0 is None:
        # E_{z_0~q}[−log N(x; z_0/α_0, e^{−λ_0} I)]: α_0 x − z_0 = α_0 (x − F(x,0)) − σ_0 ε.
        return 0.5 * d * (math.log(2 * math.pi) + 1.0 - lam0) + 0.5 * torch.exp(lam0) * _sum_dims(
            (x - F0) ** 2
        )
    if z_0 is None:
        eps0 = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        z_0 = bcast(alpha0, x) * F0 + bcast(sigma0, x) * eps0
    mean = z_0 / bcast(alpha0, x)
    if decoder == "gaussian":
        return 0.5 * d * (math.log(2 * math.pi) - lam0) + 0.5 * torch.exp(lam0) * _sum_dims(
            (x - mean) ** 2
        )
    std = bcast(torch.exp(-0.5 * lam0), x)  # σ_0/α_0
    return -_sum_dims(discretized_gaussian_log_prob(x, mean, std, n_bins))


def _check_pixels(x: Tensor) -> None:
    if not bool(((x >= -1.0 - 1e-6) & (x <= 1.0 + 1e-6)).all()):
        raise ValueError("x must lie in [-1, 1] (discrete data scaled) for decoder='discretized'")


@checked_keywords()
def reconstruction_loss(
    model: NDM,
    x: Tensor,
    *,
    decoder: str = "gaussian",
    generator=None,
    z_0: Tensor | None = None,
    n_bins: int = 256,
) -> Tensor:
    """−log p(x | z_0) in nats, (B,).

    Without ``z_0``: ``"gaussian"`` gives the exact expectation over q(z_0 | x);
    ``"discretized"`` draws one z_0 ~ q(z_0 | x) with ``generator``. With ``z_0``
    (B, *shape), both decoders are evaluated at that z_0.
    """
    _check_model(model)
    _check_x(x, model)
    _check_decoder(decoder)
    if decoder == "discretized":
        _check_pixels(x)
    if z_0 is not None and (not isinstance(z_0, Tensor) or z_0.shape != x.shape):
        raise ValueError(f"z_0 must be a tensor of x's shape {tuple(x.shape)}")
    generator = as_generator(generator, x.device)
    return _reconstruction(model, x, model.at_x(x).F_zero(), decoder, generator, z_0, n_bins)


# --------------------------------------------------------------------------- continuous time
def prior_rows(prior_fraction, B: int) -> int:
    """Rows m = max(1, round(prior_fraction · B)) the prior's F(x, 1) is evaluated on."""
    f = prior_fraction
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not (0.0 < f <= 1.0):
        raise ValueError(f"prior_fraction must be a number in (0, 1], got {f!r}")
    return min(B, max(1, round(f * B)))


def _loss_times(x: Tensor, t, time_sampler: str, time_proposal, generator):
    """(t, q): t (B,) given, drawn by ``time_sampler`` or from ``time_proposal`` (then q(t),
    else q = None)."""
    if time_proposal is not None:
        if t is not None:
            raise ValueError("give t or time_proposal, not both")
        return time_proposal.sample(
            x.shape[0],
            generator=generator,
            stratified=time_sampler != "uniform",
            dtype=x.dtype,
            device=x.device,
        )
    if t is None:
        t = sample_times(
            x.shape[0], generator=generator, method=time_sampler, dtype=x.dtype, device=x.device
        )
        return t, None
    return check_batch_time(x, t), None


def _diffusion(lam, dlam, F_x, dF_x, F_h, dF_h, q) -> Tensor:
    """½ ‖Δ‖²/g² = ½ e^λ ‖∂_t ΔF + λ' ΔF‖² / (−λ'), Δ = α (∂_t ΔF + λ' ΔF); / q(t) if given. (B,)"""
    resid = (dF_x - dF_h) + bcast(dlam, F_x) * (F_x - F_h)
    diffusion = 0.5 * torch.exp(lam) / (-dlam) * _sum_dims(resid**2)
    return diffusion if q is None else diffusion / q


def _subset_prior(model: NDM, at_x, m: int, generator) -> Tensor:
    """The prior with its F(x, 1) part on m random rows weighted by B/m (module docstring), (B,)."""
    x = at_x.x
    B = x.shape[0]
    idx = torch.randperm(B, generator=generator, device=x.device)[:m]
    if hasattr(model.transform, "features") and hasattr(model.transform, "from_features"):
        (F1,) = at_x.F(torch.ones(B, dtype=x.dtype, device=x.device))  # shared features: free
        F1 = F1[idx]
    else:
        (F1,) = model.at_x(x[idx]).F(torch.ones(m, dtype=x.dtype, device=x.device))
    const = _prior_from_F1(model, torch.zeros_like(x))
    alpha2 = torch.sigmoid(model.schedule.log_snr(torch.ones(m, dtype=x.dtype, device=x.device)))
    return const.index_add(0, idx, (0.5 * B / m) * alpha2 * _sum_dims(F1**2))


@checked_keywords()
def continuous_loss(
    model: NDM,
    x: Tensor,
    *,
    generator=None,
    t: Tensor | None = None,
    time_sampler: str = "antithetic",
    decoder: str = "gaussian",
    n_bins: int = 256,
    eps: Tensor | None = None,
    time_proposal=None,
    prior_fraction: float = 1.0,
) -> NegELBO:
    """Continuous-time NDM negative ELBO, one t per sample (unbiased in t and ε).

    Args:
        model: an ``NDM``.
        x: data (B, *shape).
        generator: source of t (unless given), ε, (discretized decoder) ε_0 and the prior's rows.
        t: explicit times (B,) in [0, 1]; else drawn by ``time_sampler``.
        time_sampler: ``"uniform"``, ``"antithetic"`` or ``"stratified"`` (see ``sample_times``).
        decoder: ``"gaussian"`` or ``"discretized"`` (see the module docstring).
        n_bins: levels per dimension of the discretized decoder (256: 8-bit data).
        eps: explicit noise ε (B, *shape) for z_t; else drawn from ``generator`` after t.
        time_proposal: importance sampling of t (e.g. ``ndmsolve.time_proposal.TimeProposal``,
            anything with ``sample(B, generator=, stratified=, dtype=, device=) -> (t, q(t))``):
            t ~ q (stratified unless ``time_sampler="uniform"``) and the diffusion term is
            weighted by 1/q(t), so the estimate stays unbiased. Not with ``t``.
        prior_fraction: in (0, 1]; below 1 the prior's F(x, 1) pass runs on a random
            max(1, round(f·B)) rows, weighted so the batch mean stays unbiased (module
            docstring): a cheaper training step. 1 (default): every row, exact.

    Returns:
        ``NegELBO`` of (B,) tensors. Differentiable w.r.t. predictor, transform and schedule.
    """
    _check_model(model)
    _check_x(x, model)
    if time_sampler not in TIME_SAMPLERS:
        raise ValueError(f"time_sampler must be one of {TIME_SAMPLERS}, got {time_sampler!r}")
    _check_decoder(decoder)
    if decoder == "discretized":
        _check_pixels(x)
    m = prior_rows(prior_fraction, x.shape[0])
    generator = as_generator(generator, x.device)  # once: t, ε, ε_0 and rows share one stream
    t, q = _loss_times(x, t, time_sampler, time_proposal, generator)
    if eps is not None and (not isinstance(eps, Tensor) or eps.shape != x.shape):
        raise ValueError(f"eps must be a tensor of x's shape {tuple(x.shape)}")
    alpha, sigma = model.schedule(t)
    lam, dlam = model.schedule.log_snr(t), model.schedule.dlog_snr(t)

    # Transform passes (see NDM.at_x): F and ∂_t F at (x, t), F(x, 1) for the prior (on m
    # rows), F and ∂_t F at (x̂, t); F(x, 0) = x costs none, and a t-free (time-basis)
    # network one per input.
    at_x = model.at_x(x)
    F_x, dF_x = at_x.F_and_dF(t)
    F1 = at_x.F(torch.ones_like(t))[0] if m == x.shape[0] else None
    F0 = at_x.F_zero()
    # z_t = α_t F(x, t) + σ_t ε  (not detached: the transform learns through z_t and x̂)
    if eps is None:
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    z_t = bcast(alpha, x) * F_x + bcast(sigma, x) * eps
    x_hat = model.x_hat(z_t, t)
    F_h, dF_h = model.at_x(x_hat).F_and_dF(t)  # ∂_t F(x̂, t) with x̂ held fixed
    diffusion = _diffusion(lam, dlam, F_x, dF_x, F_h, dF_h, q)

    if F1 is not None:  # exact; this order keeps the autograd graph of earlier versions
        prior = _prior_from_F1(model, F1)
        recon = _reconstruction(model, x, F0, decoder, generator, None, n_bins)
    else:  # the rows are drawn after ε_0, so t, ε and ε_0 match the exact loss's
        recon = _reconstruction(model, x, F0, decoder, generator, None, n_bins)
        prior = _subset_prior(model, at_x, m, generator)
    return NegELBO(diffusion + prior + recon, diffusion, prior, recon)


# --------------------------------------------------------------------------- discrete time
@checked_keywords()
def discrete_loss(
    model: NDM,
    x: Tensor,
    T: int,
    *,
    generator=None,
    t_index: Tensor | None = None,
    decoder: str = "gaussian",
    n_bins: int = 256,
) -> NegELBO:
    """T-step discrete-time NDM negative ELBO, one step per sample.

    t_i = i/T, s = (i − 1)/T; ``diffusion`` = T · KL(q(z_s | z_t, x) ‖ p_θ(z_s | z_t)) at
    i ~ U{1, …, T}, an unbiased estimate of Σ_i KL_i.

    Args:
        model: an ``NDM``.
        x: data (B, *shape).
        T: number of steps, int >= 1.
        generator: source of i (unless given), ε and (discretized decoder) ε_0.
        t_index: explicit step indices (B,) of ints in {1, …, T}.
        decoder: ``"gaussian"`` or ``"discretized"``.
    """
    _check_model(model)
    _check_x(x, model)
    if isinstance(T, bool) or not isinstance(T, int):
        raise TypeError(f"T must be an int, got {type(T).__name__}")
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    _check_decoder(decoder)
    if decoder == "discretized":
        _check_pixels(x)
    B = x.shape[0]
    generator = as_generator(generator, x.device)
    if t_index is None:
        i = torch.randint(1, T + 1, (B,), generator=generator, device=x.device)
    else:
        if not isinstance(t_index, Tensor) or t_index.is_floating_point() or t_index.is_complex():
            raise TypeError("t_index must be an integer torch.Tensor of shape (B,)")
        if t_index.shape != (B,):
            raise ValueError(f"t_index must have shape ({B},), got {tuple(t_index.shape)}")
        if not bool(((t_index >= 1) & (t_index <= T)).all()):
            raise ValueError(f"t_index must lie in {{1, ..., T}} = {{1, ..., {T}}}")
        i = t_index.to(x.device)
    t = i.to(x.dtype) / T
    s = (i - 1).to(x.dtype) / T

    # Transform passes: one call over [x; x; x] at (t, s, 1) and one over [x̂; x̂] at (t, s)
    # (a t-free network: one pass each); F(x, 0) = x costs none.
    alpha, sigma = model.schedule(t)
    at_x = model.at_x(x)
    F_x, F_xs, F1 = at_x.F(t, s, torch.ones_like(t))
    F0 = at_x.F_zero()
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    z_t = bcast(alpha, x) * F_x + bcast(sigma, x) * eps
    x_hat = model.x_hat(z_t, t)
    F_h, F_hs = model.at_x(x_hat).F(t, s)

    # q(z_s|z_t, x) and p_θ(z_s|z_t) = q(z_s|z_t, x̂): the same posterior with x̂'s F values.
    mu_q, var = model.posterior_from_F(z_t, t, s, F_x, F_xs)
    mu_p, _ = model.posterior_from_F(z_t, t, s, F_h, F_hs)
    diffusion = T * _sum_dims((mu_q - mu_p) ** 2) / (2.0 * var)

    prior = _prior_from_F1(model, F1)
    recon = _reconstruction(model, x, F0, decoder, generator, None, n_bins)
    return NegELBO(diffusion + prior + recon, diffusion, prior, recon)


# --------------------------------------------------------------------------- held-out estimate
def _draws_in_chunks(n: int, draws: int, max_rows: int):
    """Ranges of draw indices, each holding at most max_rows // n draws (at least one)."""
    step = max(1, max_rows // n)
    return [range(j, min(j + step, draws)) for j in range(0, draws, step)]


def _losses(model, x, t, eps, generator, decoder, n_bins) -> NegELBO:
    """continuous_loss at explicit t (R, n) and ε (R, n, *shape): R draws per point, (R, n) each."""
    R, n = t.shape
    xr = x.unsqueeze(0).expand(R, *x.shape).reshape(R * n, *x.shape[1:])
    out = continuous_loss(
        model,
        xr,
        t=t.reshape(-1),
        eps=eps.reshape(R * n, *x.shape[1:]),
        generator=generator,
        decoder=decoder,
        n_bins=n_bins,
    )
    return NegELBO(*(v.reshape(R, n) for v in out))


def _noise_cv(model, t: Tensor, eps: Tensor) -> Tensor:
    """u = ½ (−λ'(t)) (‖ε‖² − d): zero mean over ε at every t, (R, n)."""
    d = math.prod(eps.shape[2:])
    dlam = model.schedule.dlog_snr(t.reshape(-1)).reshape(t.shape)
    return 0.5 * (-dlam) * (eps.pow(2).reshape(*t.shape, -1).sum(-1) - d)


def _uniform_draws(x: Tensor, chunks, generator):
    """Per chunk of draw indices js: t ~ U[0, 1) (len(js), n), then ε (len(js), n, *shape)."""
    n, dt, dev = x.shape[0], x.dtype, x.device
    for js in chunks:
        t = torch.rand(len(js), n, generator=generator, dtype=dt, device=dev)
        yield t, torch.randn(len(js), *x.shape, generator=generator, dtype=dt, device=dev)


def _pilot_fit(model, x, chunks, generator, decoder, n_bins, bins, floor):
    """The pilot of ``nelbo_estimate``: β_k = Cov(f, u)/Var(u) per t-bin (bins,) float64 and
    the ``TimeProposal`` fitted to the within-bin spread of f − β u (f: diffusion integrand)."""
    from .tensors import bin_index
    from .time_proposal import TimeProposal

    ts, fs, us = [], [], []
    for t, eps in _uniform_draws(x, chunks, generator):
        ts.append(t.reshape(-1))
        fs.append(_losses(model, x, t, eps, generator, decoder, n_bins).diffusion.reshape(-1))
        us.append(_noise_cv(model, t, eps).reshape(-1))
    t, f, u = (torch.cat(v).double().cpu() for v in (ts, fs, us))
    k = bin_index(t, bins)
    beta = torch.zeros(bins, dtype=torch.float64)
    for b in range(bins):
        fb, ub = f[k == b], u[k == b]
        if ub.numel() > 1 and ub.var() > 0:
            beta[b] = ((fb - fb.mean()) * (ub - ub.mean())).mean() / ub.var(unbiased=False)
    return beta, TimeProposal.fit(t, f - beta[k] * u, bins=bins, floor=floor, center=True)


@torch.no_grad()
@checked_keywords()
def nelbo_estimate(
    model: NDM,
    x: Tensor,
    *,
    draws: int,
    generator=None,
    variance_reduction: bool = True,
    pilot_rows: int = 20_000,
    bins: int = 20,
    floor: float = 0.1,
    decoder: str = "gaussian",
    n_bins: int = 256,
    max_rows: int = 65_536,
) -> Tensor:
    """Continuous-time negative ELBO of each point of ``x`` (n, *shape), in nats: (n,).

    The mean over ``draws`` unbiased one-draw estimates per point. Plain
    (``variance_reduction=False``): t ~ U[0, 1) and ε ~ N(0, I) independent per draw.
    With ``variance_reduction`` (default), still unbiased for each point, typically 10–20×
    lower variance:

    * a control variate in ε: the diffusion integrand minus β(t)·½(−λ'(t))(‖ε‖² − d), zero
      mean over ε at every t. Where x cannot be told from z_t (small noise) the ε-error of
      any predictor is ≈ ε and the integrand ≈ ½(−λ')‖ε‖²: its χ² noise cancels (β ≈ 1);
    * importance sampling of t, q(t) ∝ the per-t standard deviation left (``TimeProposal``),
      each point's draws stratified in q's quantile (u_j = (U + j)/draws, one U per point),
      so the t-profile of the integrand's mean adds no noise.

    β (per bin) and q come from a pilot of about ``pilot_rows`` draws (uniform t) that
    the estimate does not reuse, so it stays unbiased given them. Points are independent,
    so ``est.std() / sqrt(n)`` is the standard error of ``est.mean()``.

    Args:
        model: an ``NDM``.
        x: data (n, *shape).
        draws: one-draw estimates averaged per point (int >= 1).
        generator: every random draw, in the order pilot, per-point U, ε.
        bins, floor: of the fitted ``TimeProposal`` and of β.
        decoder, n_bins: as ``continuous_loss``.
        max_rows: rows per call of the loss.
    """
    from .tensors import bin_index

    _check_model(model)
    _check_x(x, model)
    for name, v in (("draws", draws), ("pilot_rows", pilot_rows), ("max_rows", max_rows)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    generator = as_generator(generator, x.device)
    n, dt, dev = x.shape[0], x.dtype, x.device
    chunks = _draws_in_chunks(n, draws, max_rows)
    if not variance_reduction:
        total = torch.zeros(n, dtype=dt, device=dev)
        for t, eps in _uniform_draws(x, chunks, generator):
            total += _losses(model, x, t, eps, generator, decoder, n_bins).total.sum(0)
        return total / draws

    pilot = _draws_in_chunks(n, max(1, math.ceil(pilot_rows / n)), max_rows)
    beta, proposal = _pilot_fit(model, x, pilot, generator, decoder, n_bins, bins, floor)
    U = torch.rand(n, generator=generator, dtype=torch.float64, device=dev)
    beta = beta.to(dev)
    total = torch.zeros(n, dtype=dt, device=dev)
    for js in chunks:
        j = torch.arange(js.start, js.stop, dtype=torch.float64, device=dev)
        t, q = proposal.quantile(torch.remainder(U + j[:, None] / draws, 1.0), dt)
        eps = torch.randn(len(js), *x.shape, generator=generator, dtype=dt, device=dev)
        out = _losses(model, x, t, eps, generator, decoder, n_bins)
        cv = beta[bin_index(t, bins)].to(dt) * _noise_cv(model, t, eps)
        total += ((out.diffusion - cv) / q + out.prior + out.reconstruction).sum(0)
    return total / draws


@torch.no_grad()
def held_out_nelbo(model: NDM, x: Tensor, draws: int = 32, generator=None, **options) -> Tensor:
    """Negative ELBO (nats) of each held-out point of ``x`` (n, *shape): (n,).

    ``nelbo_estimate`` with its variance reduction (a control variate in ε, importance-sampled
    and stratified t), without gradients: the one estimator the demo, the studies and the
    command line report. ``generator`` is a ``torch.Generator`` or an int seed; ``options``
    (``decoder``, ``n_bins``, ``pilot_rows``, ...) go to ``nelbo_estimate``.
    """
    return nelbo_estimate(model, x, draws=draws, generator=generator, **options)
