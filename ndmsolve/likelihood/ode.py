"""Exact log-likelihoods along the probability-flow ODE (instantaneous change of variables).

Nothing here knows about images or diffusion: it integrates the divergence of any
velocity field ``v(z, t)`` with any ODE solver of :func:`ndmsolve.solvers.api.solve`.
Along dz/dt = v(z, t), d/dt log p_t(z_t) = −∇·v(z_t, t) (Chen et al. 2018, Neural ODEs;
Song et al. 2021, score SDEs), so integrating from t0 (data side) to t1 (noise side),

    log p_{t0}(z_{t0}) = log p_{t1}(z_{t1}) + ∫_{t0}^{t1} ∇·v(z_t, t) dt,

with p_{t1} = N(0, I) the prior. The solver integrates the augmented state (z, Δ),
dΔ/dt = ∇·v, as ONE tensor of shape (B, D + K): the flattened z and K log-density
components per sample (K = 1, or K = P for P Hutchinson probes, each probe integrated as
its own component so that a per-sample standard error comes out). The Δ components are
part of the state, so adaptive error control covers them too. No autograd graph survives
a step (see :mod:`ndmsolve.likelihood.divergence`): :func:`log_likelihood` is an
evaluation routine, not differentiable in the model's parameters (train with the ELBO of
``ndmsolve.objectives``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import (
    NonFiniteOutputError,
    as_generator,
    check_batch_size,
    check_like_model,
    checked_keywords,
    solver_time,
)
from ..solvers.api import per_sample_defaults, solve
from ..solvers.base import SolverError, field_fault, merge_solutions
from .divergence import (
    MAX_EXACT_DIM,
    NOISES,
    Divergence,
    Velocity,
    as_batch_time,
    check_exact_dim,
    check_state,
    check_trace,
    flat_dim,
    sample_probes,
)

__all__ = ["log_likelihood", "LikelihoodResult", "AugmentedField", "standard_normal_logp"]

#: log(2π), for the standard normal prior log N(z; 0, I) = −½‖z‖² − (D/2) log 2π.
LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class LikelihoodResult:
    """Result of :func:`log_likelihood`; per-sample tensors are (B,), in nats.

    Attributes:
        logp: log p_{t0}(z0) = prior_logp + delta_logp.
        prior_logp: log N(z1; 0, I) at the end of the solve.
        delta_logp: ∫_{t0}^{t1} ∇·v dt (mean over probes for Hutchinson).
        nfe: evaluations of the augmented field (each = one velocity evaluation plus its
            VJPs), rejected steps included.
        z1: the state at t1, (B, *shape).
        stderr: standard error of ``logp`` over the P Hutchinson probes,
            std_p(logp_p) / sqrt(P) with the unbiased std, when P > 1; else ``None``.
        logp_per_probe: (P, B) per-probe estimates (Hutchinson), else ``None``.
        solution: the solver's :class:`~ndmsolve.solvers.base.Solution` of the augmented
            state (step statistics; ``y`` of shape (B, D + K)).
    """

    logp: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    nfe: int
    z1: Tensor
    stderr: Tensor | None = None
    logp_per_probe: Tensor | None = None
    solution: object = None


def standard_normal_logp(z: Tensor) -> Tensor:
    """log N(z; 0, I) = −½‖z‖² − (D/2) log 2π per sample, (B,)."""
    flat = z.reshape(z.shape[0], -1)
    return -0.5 * (flat**2).sum(-1) - 0.5 * flat.shape[1] * LOG_2PI


class AugmentedField:
    """f(t, y) for y = cat([z.flatten(1), Δ], 1) of shape (B, D + K): dz/dt = v, dΔ_k/dt = div_k.

    ``engine`` (a :class:`Divergence`) gives v and the K divergence terms; t is the
    solver's time (0-dim or (B,)), the result (B, D + K)."""

    def __init__(self, engine: Divergence, shape: tuple, B: int):
        self.engine, self.shape, self.B = engine, shape, B
        self.D = math.prod(shape)

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        z = y[:, : self.D].reshape(self.B, *self.shape)
        tb = as_batch_time(solver_time(t, z), z)
        try:
            vz, terms = self.engine(z, tb)  # (B, *shape), (K, B)
        except NonFiniteOutputError as e:  # the solver adds the step
            raise field_fault(e, t) from None
        return torch.cat([vz.reshape(self.B, self.D), terms.transpose(0, 1)], dim=1)


def _resolve_velocity(model, velocity) -> Velocity:
    if velocity is not None:
        if model is not None:
            raise ValueError("pass either model (with .velocity) or velocity=, not both")
        if not callable(velocity):
            raise TypeError(
                f"velocity must be callable as velocity(z, t), got {type(velocity).__name__}"
            )
        return velocity
    if model is None:
        raise ValueError(
            "log_likelihood needs model (anything with .velocity(z, t)) or velocity=fn"
        )
    fn = getattr(model, "velocity", None)
    if not callable(fn):
        raise TypeError(
            f"model must have a .velocity(z, t) method (e.g. an NDM), got {type(model).__name__}; "
            f"pass a plain function as velocity=fn"
        )
    return fn


@checked_keywords(solve)
def log_likelihood(
    model=None,
    z0: Tensor | None = None,
    method: str = "tsit5",
    *,
    velocity: Velocity | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    steps: int | None = None,
    trace: str = "exact",
    probes: int = 1,
    noise: str = "rademacher",
    generator=None,
    t0: float = 0.0,
    t1: float = 1.0,
    force_exact: bool = False,
    max_exact_dim: int = MAX_EXACT_DIM,
    batch_independent: bool = True,
    batch_size: int | None = None,
    **solver_kwargs,
) -> LikelihoodResult:
    """log p_{t0}(z0) by integrating the PF-ODE and its divergence from t0 to t1.

        d/dt [z, Δ] = [v(z, t), ∇·v(z, t)],   z(t0) = z0, Δ(t0) = 0,
        log p_{t0}(z0) = log N(z(t1); 0, I) + Δ(t1).

    Args:
        model: anything with ``.velocity(z, t)`` (an :class:`~ndmsolve.NDM`), or ``None``
            when ``velocity=`` is given.
        z0: (B, *shape) floating, finite, B ≥ 1, of the model's dtype and device (a
            mismatch raises an error naming both; no silent cast).
        method: any ODE method of ``ndmsolve.solvers.api.solve`` (fixed-step ones need
            ``steps``), including ``"torchdiffeq:<method>"``. Default ``tsit5``; with
            ndmsolve's adaptive methods the step control defaults to
            ``solvers.api.PER_SAMPLE_CONTROL`` (error norm "sample_max", PI coefficients
            (0.07, 0.7)), so the tolerance holds for every point's log-density, not only
            on average (override with ``norm=``/``pi_coeffs=``; ``norm="rms"`` is the
            batch RMS of torchdiffeq).
        velocity: a plain function ``velocity(z, t)``, z (B, *shape), t (B,).
        rtol, atol: tolerances of adaptive methods; the Δ components are part of the
            error-controlled state.
        steps: number of steps of fixed-step methods.
        trace: ``"exact"`` (D ≤ max_exact_dim unless force_exact) or ``"hutchinson"``.
        probes: Hutchinson probes P ≥ 1, drawn once (shape (P, B, *shape)) and held
            fixed over the solve; each probe is integrated as its own component, so
            P > 1 gives ``stderr``.
        noise: ``"rademacher"`` or ``"gaussian"`` probes.
        generator: a ``torch.Generator`` or an int seed; the only source of randomness
            (the probes).
        t0, t1: integration interval, 0 ≤ t0 < t1 ≤ 1 (t1 = 1 is where the N(0, I)
            prior holds).
        batch_independent: see :func:`divergence`.
        batch_size: at most this many points per solve (default None: one batch);
            results are concatenated, ``nfe`` summed (``solution.stats["chunks"]`` per
            chunk). The probes are drawn for all points first, so fixed-step methods give
            the one-batch result (up to rounding); adaptive methods pick each chunk's
            steps from its own error norm (results differ within the tolerance).
        **solver_kwargs: passed to ``solve`` (``max_steps``, ``h0``, ...).

    Returns:
        :class:`LikelihoodResult` (nats). Not differentiable w.r.t. parameters.
    """
    batch_size = _check_options(trace, batch_size, noise, probes)
    v = _resolve_velocity(model, velocity)
    generator = _check_points(z0, model, generator)
    _check_interval(t0, t1)
    eps = _draw_probes(z0, trace, probes, noise, generator, max_exact_dim, force_exact)
    kwargs = _solver_options(solver_kwargs, rtol, atol, steps)
    args = (v, trace, batch_independent, method, float(t0), float(t1), kwargs)
    return _solve_in_chunks(z0, eps, args, batch_size)


def _check_options(trace: str, batch_size, noise: str, probes) -> int | None:
    """The trace options' checks; returns the checked ``batch_size``."""
    check_trace(trace)
    batch_size = check_batch_size(batch_size)
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be a positive int, got {probes!r}")
    if trace == "exact" and probes != 1:
        raise ValueError(f"probes={probes} is only meaningful with trace='hutchinson'")
    return batch_size


def _check_points(z0, model, generator) -> torch.Generator:
    """z0 (B, *shape) must fit the model; returns the generator on z0's device."""
    if z0 is None:
        raise ValueError("z0 is required: the points (B, *shape) whose log-density is wanted")
    check_state(z0, "z0")
    if model is not None:
        check_like_model(z0, model, "z0")
    generator = as_generator(generator, z0.device)
    data_shape = getattr(model, "data_shape", None) if model is not None else None
    if data_shape is not None and tuple(z0.shape[1:]) != tuple(data_shape):
        raise ValueError(
            f"z0 must have shape (B, {', '.join(map(str, data_shape))}) for this model, "
            f"got {tuple(z0.shape)}"
        )
    return generator


def _check_interval(t0, t1) -> None:
    for name, val in (("t0", t0), ("t1", t1)):
        if not isinstance(val, (int, float)) or not 0.0 <= float(val) <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {val!r}")
    if not float(t0) < float(t1):
        raise ValueError(
            f"t0 must be < t1 (integration runs from data to noise), got t0={t0}, t1={t1}"
        )


def _draw_probes(z0, trace, probes, noise, generator, max_exact_dim, force_exact):
    """The Hutchinson probes (P, B, *shape) for all points (chunks slice them), or None."""
    if trace == "exact":
        check_exact_dim(flat_dim(z0), max_exact_dim, force_exact)
        return None
    return sample_probes(probes, z0, noise, generator)


def _solver_options(solver_kwargs: dict, rtol, atol, steps) -> dict:
    kwargs = dict(solver_kwargs, rtol=rtol, atol=atol)
    # CUDA-graph capture of a field that runs torch.func transforms is untested: off
    # unless asked for explicitly.
    kwargs.setdefault("cuda_graph", False)
    if steps is not None:
        kwargs["steps"] = steps
    return kwargs


def _solve_in_chunks(z0: Tensor, eps, args: tuple, batch_size: int | None) -> LikelihoodResult:
    """One solve, or one per ``batch_size`` points, merged."""
    B = z0.shape[0]
    if batch_size is None or B <= batch_size:
        return _likelihood_solve(z0, eps, *args)
    parts = []
    for i in range(0, B, batch_size):
        j = min(i + batch_size, B)
        try:
            parts.append(_likelihood_solve(z0[i:j], None if eps is None else eps[:, i:j], *args))
        except SolverError as e:
            raise e.with_context(
                f" (points {i}..{j - 1} of {B}, batch_size={batch_size})"
            ) from None
    return _merge_results(parts, batch_size)


def _likelihood_solve(
    z0: Tensor, eps, v, trace, batch_independent, method, t0, t1, kwargs
) -> LikelihoodResult:
    """One solve of the augmented ODE for the points z0 (B, *shape), probes eps (P, B, *shape)
    or None (exact trace)."""
    B, shape, D = z0.shape[0], tuple(z0.shape[1:]), flat_dim(z0)
    engine = Divergence(v, trace, eps, batch_independent=batch_independent)
    field = AugmentedField(engine, shape, B)
    K = 1 if eps is None else eps.shape[0]

    y0 = torch.cat([z0.detach().reshape(B, D), z0.new_zeros(B, K)], dim=1)
    kwargs = per_sample_defaults(method, dict(kwargs))
    sol = solve(field, y0, t0, t1, method, **kwargs)

    y1 = sol.y.detach()
    z1 = y1[:, :D].reshape(B, *shape)
    delta_k = y1[:, D:].transpose(0, 1)  # (K, B)
    prior = standard_normal_logp(z1)
    logp_k = prior + delta_k
    delta = delta_k.mean(0)
    stderr = logp_k.std(0, unbiased=True) / math.sqrt(K) if K > 1 else None
    return LikelihoodResult(
        logp=prior + delta,
        prior_logp=prior,
        delta_logp=delta,
        nfe=int(sol.nfe),
        z1=z1,
        stderr=stderr,
        logp_per_probe=logp_k if trace == "hutchinson" else None,
        solution=sol,
    )


def _merge_results(parts: list, batch_size: int) -> LikelihoodResult:
    """The chunks' results as one: per-point tensors concatenated, ``nfe`` summed."""

    def cat(name, dim=0):
        vals = [getattr(p, name) for p in parts]
        return None if vals[0] is None else torch.cat(vals, dim=dim)

    sol = merge_solutions([p.solution for p in parts], torch.cat([p.solution.y for p in parts]))
    sol.stats["batch_size"] = batch_size
    return LikelihoodResult(
        logp=cat("logp"),
        prior_logp=cat("prior_logp"),
        delta_logp=cat("delta_logp"),
        nfe=sum(p.nfe for p in parts),
        z1=cat("z1"),
        stderr=cat("stderr"),
        logp_per_probe=cat("logp_per_probe", 1),
        solution=sol,
    )
