"""Optimal-transport dynamics of NDMs: a kinetic penalty that pushes the forward process
towards OT, the exact 1D displacement interpolation, and the measurements of the study.

**The penalty.** At fixed (x, ε) the forward process draws the path
z_t(x, ε) = α_t F(x, t) + σ_t ε, whose velocity is the conditional PF-ODE velocity

    v_c = d/dt z_t = α_t ∂_t F(x, t) + α̇_t F(x, t) + σ̇_t ε
        = f(z_t, t, x) + ½ g² ε / σ_t,         α̇ = ½ σ² λ' α,  σ̇ = −½ σ α² λ'

(f the conditional drift, −ε/σ_t the conditional score). The marginal PF-ODE velocity is
E[v_c | z_t], so E ∫ ‖v_c‖² dt bounds the marginal kinetic energy from above (Jensen), and it
is simulation-free: one t, one ε, one transform pass with its t-derivative, no predictor.
``penalized_loss(lam)`` trains on  −ELBO + lam · E_{t~U, x, ε} ‖v_c‖²  (both in nats-like
units per sample). The penalty does not involve the predictor, so it cannot be met by
bending x̂: only the transform and the schedule answer it. With F = identity the path is
α_t x + σ_t ε and a learned schedule can only re-time it: that is the fair DDPM baseline.
The bound is loose: at fixed (x, ε) its minimiser is the straight line from x to ε (the
independent coupling), not the OT path.

``penalized_loss(lam, velocity="marginal")`` penalises instead the model's own PF-ODE
velocity v = f(z_t, t, x̂) − ½ g² s(z_t, t) at z_t ~ q(z_t | x), with x̂ = x̂_θ(z_t, t) held
fixed: E_t E_{z_t} ‖v‖² is the kinetic energy of the model's flow wherever x̂ is accurate
(its marginals are the q(z_t) the ELBO fits), and again only the transform and the schedule
can lower it (a penalty that reaches x̂ is met by bending the predictor instead).

**The reference.** In 1D the OT map from N(0, 1) to the data is the monotone map
T = Q_data ∘ Φ, and the dynamic OT (displacement) path from z_1 at t = 1 to T(z_1) at t = 0 is
the straight line z_t = t z_1 + (1 − t) T(z_1), travelled at constant speed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import seeded
from ..metrics import kinetic_ratio, wasserstein_1d
from ..objectives import continuous_loss, held_out_nelbo, sample_times
from ..process import NDM
from ..sampling import sample
from ..tensors import bcast, bin_index

__all__ = [
    "conditional_velocity",
    "kinetic_penalty",
    "model_velocity_fixed_predictor",
    "VELOCITIES",
    "penalized_loss",
    "retimed_energy",
    "quantile_map",
    "displacement_paths",
    "held_out_nelbo",
    "pf_ode_paths",
    "w1_1d",
]


def conditional_velocity(model: NDM, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """v_c = d/dt [α_t F(x, t) + σ_t ε] at fixed (x, ε), (B, *shape).

    ``x``, ``eps``: (B, *shape); ``t``: (B,). Differentiable in the transform's and the
    schedule's parameters.
    """
    if eps.shape != x.shape:
        raise ValueError(f"eps must have x's shape {tuple(x.shape)}, got {tuple(eps.shape)}")
    F, dF = model.F_and_dF(x, t)
    sched = model.schedule
    alpha, sigma = sched(t)
    lam_dot = sched.dlog_snr(t)
    dalpha = 0.5 * sigma**2 * lam_dot * alpha
    dsigma = -0.5 * sigma * alpha**2 * lam_dot
    return bcast(alpha, x) * dF + bcast(dalpha, x) * F + bcast(dsigma, x) * eps


def model_velocity_fixed_predictor(model: NDM, z: Tensor, t: Tensor) -> Tensor:
    """The model's PF-ODE velocity f(z, t, x̂) − ½ g² s(z, t) at (z, t) with x̂ = x̂_θ(z, t)
    held fixed (no gradient to the predictor), (B, *shape):

        v = α_t ∂_t F(x̂, t) − ½ λ'(t) α_t (α_t z − F(x̂, t))

    (the two forms agree since d/dt log α = ½ σ² λ' and g²/σ² = −λ'). Gradients reach the
    transform, the schedule and ``z``.
    """
    with torch.no_grad():
        x_hat = model.x_hat(z.detach(), t)
    F, dF = model.F_and_dF(x_hat, t)
    alpha, _ = model.schedule(t)
    lam_dot = model.schedule.dlog_snr(t)
    a, ld = bcast(alpha, z), bcast(lam_dot, z)
    return a * dF - 0.5 * ld * a * (a * z - F)


VELOCITIES = ("conditional", "marginal")


def _speed2(model: NDM, x: Tensor, generator, velocity: str) -> tuple[Tensor, Tensor]:
    """(t, ‖v‖²), both (B,): one antithetic t and one ε per data point, from ``generator``."""
    if velocity not in VELOCITIES:
        raise ValueError(f"velocity must be one of {VELOCITIES}, got {velocity!r}")
    t = sample_times(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    if velocity == "conditional":
        v = conditional_velocity(model, x, t, eps)
    else:
        alpha, sigma = model.schedule(t)
        z = bcast(alpha, x) * model.F(x, t) + bcast(sigma, x) * eps
        v = model_velocity_fixed_predictor(model, z, t)
    return t, v.reshape(v.shape[0], -1).pow(2).sum(1)


@seeded
def kinetic_penalty(
    model: NDM,
    x: Tensor,
    *,
    generator: torch.Generator | None = None,
    velocity: str = "conditional",
) -> Tensor:
    """One-sample estimate of a kinetic energy ∫_0^1 E ‖v‖² dt per data point, (B,).

    ``velocity="conditional"``: v = v_c(x, ε, t), an upper bound on the marginal kinetic
    energy that needs no predictor. ``"marginal"``: v = the model's PF-ODE velocity at
    z_t ~ q(z_t | x) with the predictor held fixed (``model_velocity_fixed_predictor``): the
    kinetic energy of the model's own flow where x̂ is accurate; only the transform and the
    schedule answer the penalty. t is drawn by the antithetic sampler, then ε, both from
    ``generator``.
    """
    return _speed2(model, x, generator, velocity)[1]


def retimed_energy(t: Tensor, speed2: Tensor, bins: int) -> Tensor:
    """(∫_0^1 √e(t) dt)², e(t) = E ‖v‖² at time t, from samples: 0-dim.

    ``t``, ``speed2``: (B,) times in [0, 1) and squared speeds; e is the mean of ``speed2``
    within each of ``bins`` equal bins of t (every bin must hold a sample; the antithetic
    sampler puts B/bins in each when ``bins`` divides B). This is the kinetic energy after the
    best common re-timing of the paths (``ndmsolve.metrics.retimed_kinetic_ratio``): a new
    schedule cannot lower it, only a change of the paths' shapes can. Constant e gives e.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    if t.shape != speed2.shape or t.ndim != 1:
        raise ValueError(
            f"t and speed2 must have the same shape (B,), got {tuple(t.shape)}, "
            f"{tuple(speed2.shape)}"
        )
    idx = bin_index(t, bins)
    count = torch.bincount(idx, minlength=bins)
    if bool((count == 0).any()):
        raise ValueError(f"every one of the {bins} time bins needs a sample; B={t.shape[0]}")
    total = torch.zeros(bins, dtype=speed2.dtype, device=speed2.device).index_add(0, idx, speed2)
    return ((total / count).clamp_min(0).sqrt().mean()) ** 2


def penalized_loss(
    lam: float, velocity: str = "conditional", *, retimed: bool = False, bins: int = 16
) -> Callable[..., Tensor]:
    """A training loss for ``ndmsolve.train.train``: continuous −ELBO + ``lam`` · kinetic
    penalty (``kinetic_penalty`` with ``velocity``), per sample (B,). ``lam = 0`` is the
    plain continuous loss.

    ``retimed=True`` replaces the per-sample kinetic energy by the batch's
    ``retimed_energy(t, ‖v‖², bins)`` (the same value added to every sample): the kinetic
    energy after the best re-timing, which a schedule cannot lower, so only the transform's
    reshaping of the paths answers it (a DDPM's value is fixed by its data)."""
    if (
        not isinstance(lam, (int, float))
        or isinstance(lam, bool)
        or not math.isfinite(lam)
        or lam < 0
    ):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    if velocity not in VELOCITIES:
        raise ValueError(f"velocity must be one of {VELOCITIES}, got {velocity!r}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")

    def loss(model: NDM, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        total = continuous_loss(model, x, generator=generator).total
        if lam == 0:
            return total
        if retimed:
            t, v2 = _speed2(model, x, generator, velocity)
            return total + lam * retimed_energy(t, v2, bins)
        return total + lam * kinetic_penalty(model, x, generator=generator, velocity=velocity)

    loss.lam = float(lam)
    loss.retimed = bool(retimed)
    return loss


def quantile_map(data: Tensor, z: Tensor) -> Tensor:
    """The 1D OT map from N(0, 1) to the empirical law of ``data`` (N, 1): T(z) = Q(Φ(z)),
    Q the data's quantile function (linear interpolation between order statistics). ``z``:
    (n, 1) -> (n, 1)."""
    for name, v in (("data", data), ("z", z)):
        if not isinstance(v, Tensor) or v.ndim != 2 or v.shape[1] != 1:
            raise ValueError(f"{name} must be a tensor of shape (n, 1)")
    xs = data[:, 0].double().sort().values
    N = xs.shape[0]
    u = torch.special.ndtr(z[:, 0].double())
    pos = (u * N - 0.5).clamp(0, N - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=N - 1)
    w = pos - lo.double()
    return (xs[lo] * (1 - w) + xs[hi] * w).unsqueeze(1).to(z.dtype)


def displacement_paths(z1: Tensor, x0: Tensor, ts: Tensor) -> Tensor:
    """Straight constant-speed paths z_t = t z1 + (1 − t) x0 at times ``ts`` (S,): (S, n, *shape)."""
    if z1.shape != x0.shape:
        raise ValueError(f"x0 must have z1's shape {tuple(z1.shape)}, got {tuple(x0.shape)}")
    tt = ts.to(z1.dtype).reshape(-1, *([1] * z1.ndim))
    return tt * z1 + (1 - tt) * x0


def pf_ode_paths(model: NDM, z1: Tensor, steps: int, method: str = "heun") -> dict:
    """PF-ODE paths from ``z1`` (n, *shape) at t = 1 to t = 0 on a uniform grid and their
    transport numbers: ``dict(ts, path, nfe, kinetic_ratio)``."""
    s = sample(model, z1=z1, method=method, steps=steps, return_path=True)
    return dict(
        ts=s.path_ts,
        path=s.path,
        nfe=int(s.nfe),
        kinetic_ratio=float(kinetic_ratio(s.path, s.path_ts)),
    )


def w1_1d(a: Tensor, b: Tensor) -> float:
    """W1 between two 1D sample sets (n, 1) (sorted matching; quantiles for unequal sizes)."""
    return float(wasserstein_1d(a.double(), b.double(), p=1.0)[0])
