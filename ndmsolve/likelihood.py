"""Exact log-likelihoods along the probability-flow ODE, and bits per dimension.

Nothing here knows about images or diffusion: it integrates the divergence of any
velocity field ``v(z, t)`` with any ODE solver of :func:`ndmsolve.solvers.api.solve`.

**Instantaneous change of variables.** Along dz/dt = v(z, t),

    d/dt log p_t(z_t) = −∇·v(z_t, t),

so integrating from t0 (data side) to t1 (noise side),

    log p_{t0}(z_{t0}) = log p_{t1}(z_{t1}) + ∫_{t0}^{t1} ∇·v(z_t, t) dt,

with p_{t1} = N(0, I) the prior. The solver integrates the augmented state
(z, Δ), dΔ/dt = ∇·v, as ONE tensor of shape (B, D + K): the flattened z and K
log-density components per sample (K = 1, or K = P for P Hutchinson probes, each
probe integrated as its own component so that a per-sample standard error comes out).
The Δ components are part of the state, so adaptive error control covers them too.

**Divergence.** ``trace="exact"``: ∇·v = Σ_i e_iᵀ (∂v/∂z) e_i, one vector-Jacobian
product (VJP) per dimension, vectorised over the D basis vectors with ``torch.func.vmap``.
``trace="hutchinson"``: ∇·v ≈ (1/P) Σ_p ε_pᵀ (∂v/∂z) ε_p with E[ε εᵀ] = I (Rademacher
or Gaussian), one VJP per probe, the probes drawn once per solve and held fixed over t.

*Batch independence.* A VJP of the batched field with a cotangent that is non-zero in
every sample computes Σ_b' ∂v_{b'}/∂z_b, not ∂v_b/∂z_b. The exact trace therefore
assumes (standard, and true for MLPs, convolutions, GroupNorm, LayerNorm, the NDM) that
sample b's velocity depends only on z_b. For a field that mixes samples (BatchNorm in
training mode, attention across the batch), pass ``batch_independent=False``: the exact
trace then uses B·D one-hot cotangents (B times the cost) and returns the per-sample
diagonal blocks' traces. The Hutchinson estimate ε_bᵀ(Jᵀε)_b stays unbiased for
tr(∂v_b/∂z_b) in either case (the cross-sample terms have mean zero, they add variance).

*Memory.* Every field evaluation computes its VJPs with ``torch.func`` on a detached
state, under ``torch.no_grad()`` for the outer autograd, and returns detached values:
no graph survives a solver step, so memory does not grow with the number of steps.
The flip side: :func:`log_likelihood` is an evaluation routine, not differentiable in
the model's parameters (train with the ELBO of ``ndmsolve.objectives``).

**Bits per dimension** (8-bit data, :func:`bits_per_dim`). With x ∈ {0..255}^D and
uniform dequantisation u ~ U[0, 1)^D, x_c = x + u ∈ [0, 256)^D has density
p_c(x_c) and P(x) = ∫_{[0,1)^D} p_c(x + u) du ≥ exp E_u[log p_c(x + u)] (Jensen).
The model lives on y = 2 x_c / 256 − 1 ∈ [−1, 1)^D, so p_c(x_c) = p_y(y) · (2/256)^D:

    log P(x) ≥ E_u[log p_y(y)] + D · log(2/256),    bpd = −log P(x) / (D ln 2).

Every constant of this conversion is a named module-level value below.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import (
    NonFiniteOutputError,
    as_generator,
    check_batch_size,
    check_like_model,
    checked_keywords,
    lazy,
    model_dtype_device,
    solver_time,
)
from .solvers.base import SolverError, field_fault, merge_solutions

__all__ = [
    "divergence",
    "sample_probes",
    "log_likelihood",
    "LikelihoodResult",
    "bits_per_dim",
    "BPDResult",
    "elbo_bits_per_dim",
    "ELBOBPDResult",
    "DivergenceFallbackWarning",
    "N_BINS",
    "DATA_LOW",
    "DATA_HIGH",
    "LOG_JACOBIAN_PER_DIM",
    "TRACES",
    "NOISES",
]

# ------------------------------------------------------------------ named constants
#: Number of values of one 8-bit dimension: x ∈ {0, …, N_BINS − 1}.
N_BINS = 256
#: The model's data range: dequantised data are mapped onto [DATA_LOW, DATA_HIGH).
DATA_LOW, DATA_HIGH = -1.0, 1.0
#: log |dy/dx_c| per dimension for y = DATA_LOW + (DATA_HIGH − DATA_LOW) x_c / N_BINS,
#: i.e. log(2/256) = −log 128 ≈ −4.852 nats (= −7 bits). Added D times to log p_y.
LOG_JACOBIAN_PER_DIM = math.log((DATA_HIGH - DATA_LOW) / N_BINS)
#: log(2π), for the standard normal prior log N(z; 0, I) = −½‖z‖² − (D/2) log 2π.
LOG_2PI = math.log(2.0 * math.pi)

TRACES = ("exact", "hutchinson")
NOISES = ("rademacher", "gaussian")
#: Default largest dimension for which trace="exact" runs without force_exact=True.
MAX_EXACT_DIM = 64
#: Exact trace: basis vectors are pushed through vmap in chunks of at most this many
#: elements (chunk · B · D), so force_exact on a large D does not allocate D²·B at once.
_EXACT_CHUNK_ELEMENTS = 2**25

Velocity = Callable[[Tensor, Tensor], Tensor]


class DivergenceFallbackWarning(UserWarning):
    """The vectorised VJP (``torch.func.vmap`` / ``torch.func.vjp``) failed on this field
    and the divergence falls back to a slower path (a Python loop over VJPs, or plain
    ``torch.autograd``). Results are the same; only the cost differs."""


# ====================================================================== divergence
def _flat_dim(z: Tensor) -> int:
    return math.prod(z.shape[1:])


def _check_trace(trace: str) -> None:
    if trace not in TRACES:
        raise ValueError(f"trace must be one of {TRACES}, got {trace!r}")


def _check_exact_dim(D: int, max_exact_dim: int, force_exact: bool, name: str = "trace") -> None:
    if D > max_exact_dim and not force_exact:
        raise ValueError(
            f"{name}='exact' needs one VJP per dimension, D = {D} > max_exact_dim = {max_exact_dim}; "
            f"use {name}='hutchinson' (an unbiased estimate with one VJP per probe) or pass "
            f"force_exact=True to pay for the D VJPs per field evaluation"
        )


def sample_probes(
    n: int, z: Tensor, noise: str = "rademacher", generator: torch.Generator | None = None
) -> Tensor:
    """``n`` Hutchinson probes ε with E[ε εᵀ] = I, shape (n, B, *shape), ``z``'s dtype/device.

    ``noise="rademacher"``: entries ±1 with probability ½ (the lower-variance choice);
    ``noise="gaussian"``: standard normal entries.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"probes must be a positive int, got {n!r}")
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    generator = as_generator(generator, z.device)
    shape = (n, *z.shape)
    if noise == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=z.device)
        return bits.to(z.dtype) * 2 - 1
    return torch.randn(shape, generator=generator, dtype=z.dtype, device=z.device)


class _Divergence:
    """Computes (v(z, t), divergence) for one field; remembers a fallback once taken.

    ``mode`` is ``"vmap"`` (torch.func.vjp + vmap over cotangents), ``"loop"``
    (torch.func.vjp, a Python loop over cotangents) or ``"autograd"`` (torch.autograd.grad
    with ``retain_graph``, a loop). Each downgrade warns once, naming the cause.
    """

    def __init__(
        self,
        v: Velocity,
        method: str,
        probes: Tensor | None,
        *,
        batch_independent: bool = True,
        chunk_size: int | None = None,
    ):
        self.v, self.method, self.probes = v, method, probes
        self.batch_independent = batch_independent
        self.chunk_size = chunk_size
        self.mode = "vmap"
        self._basis: Tensor | None = None

    # ---------------------------------------------------------------- cotangents
    def cotangents(self, z: Tensor) -> Tensor:
        """(K, B, *shape): the probes, or the exact trace's one-hot basis vectors."""
        if self.method == "hutchinson":
            return self.probes
        if self._basis is None or self._basis.dtype != z.dtype or self._basis.device != z.device:
            B, D = z.shape[0], _flat_dim(z)
            if self.batch_independent:
                # e_i in every sample at once: (D, B, *shape), row i one-hot at flat index i.
                eye = torch.eye(D, dtype=z.dtype, device=z.device)
                self._basis = eye.reshape(D, 1, *z.shape[1:]).expand(D, *z.shape)
            else:
                # e_{b,i}: one-hot in the whole batch, (B·D, B, *shape).
                self._basis = torch.eye(B * D, dtype=z.dtype, device=z.device).reshape(
                    B * D, *z.shape
                )
        return self._basis

    def reduce(self, g: Tensor, z: Tensor) -> Tensor:
        """Cotangent products g = cᵀ(∂v/∂z) (K, B, *shape) -> divergence terms.

        hutchinson: (P, B), ε_pᵀ (∂v/∂z) ε_p per probe.  exact: (1, B), the trace.
        """
        B, D = z.shape[0], _flat_dim(z)
        if self.method == "hutchinson":
            return (g * self.probes).reshape(g.shape[0], B, D).sum(-1)
        if self.batch_independent:
            # g[i, b, j] = Σ_b' ∂v_{b'i}/∂z_{bj} = ∂v_{bi}/∂z_{bj} (independence); trace = Σ_i g[i, b, i].
            return torch.diagonal(g.reshape(D, B, D), dim1=0, dim2=2).sum(-1)[None]
        # g[(b,i), (b',j)] = ∂v_{bi}/∂z_{b'j}; keep the diagonal, sum within each sample.
        return torch.diagonal(g.reshape(B * D, B * D)).reshape(B, D).sum(-1)[None]

    def _chunk(self, z: Tensor, K: int) -> int | None:
        if self.chunk_size is not None:
            return self.chunk_size
        if self.method == "exact":
            per = z.numel()
            return max(1, min(K, _EXACT_CHUNK_ELEMENTS // max(per, 1)))
        return None

    def _warn(self, new_mode: str, err: BaseException) -> None:
        what = {
            "loop": "torch.func.vmap over the VJP failed on this velocity field; computing the "
            "divergence with a Python loop over VJPs (one per probe/basis vector; slower)",
            "autograd": "torch.func.vjp failed on this velocity field; computing the divergence "
            "with torch.autograd.grad in a loop (slower)",
        }[new_mode]
        warnings.warn(
            f"{what}. Cause: {type(err).__name__}: {err}", DivergenceFallbackWarning, stacklevel=4
        )
        self.mode = new_mode

    # ---------------------------------------------------------------- evaluation
    def __call__(self, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """z (B, *shape), t (B,) -> (v (B, *shape), div terms (K', B)); all detached."""
        z = z.detach()
        C = self.cotangents(z)
        with torch.no_grad():  # torch.func ignores the outer no_grad; no graph to parameters
            if self.mode in ("vmap", "loop"):
                try:
                    vz, vjp_fn = torch.func.vjp(lambda zz: self._call_v(zz, t), z)
                except (RuntimeError, NotImplementedError) as err:
                    self._warn("autograd", err)
                else:
                    if C.shape[0] == 1:  # one probe: a plain VJP, vmap would only add overhead
                        (g,) = vjp_fn(C[0])
                        return vz.detach(), self.reduce(g.unsqueeze(0), z).detach()
                    if self.mode == "vmap":
                        try:
                            (g,) = torch.func.vmap(vjp_fn, chunk_size=self._chunk(z, C.shape[0]))(C)
                            return vz.detach(), self.reduce(g, z).detach()
                        except (RuntimeError, NotImplementedError) as err:
                            self._warn("loop", err)
                    g = torch.stack([vjp_fn(c)[0] for c in C])
                    return vz.detach(), self.reduce(g, z).detach()
        # mode == "autograd": plain autograd on a detached leaf; the graph dies on return.
        with torch.enable_grad():
            zz = z.clone().requires_grad_(True)
            vz = self._call_v(zz, t)
            g = torch.stack(
                [
                    torch.autograd.grad(vz, zz, c, retain_graph=k < C.shape[0] - 1)[0]
                    for k, c in enumerate(C)
                ]
            )
        return vz.detach(), self.reduce(g.detach(), z).detach()

    def _call_v(self, z: Tensor, t: Tensor) -> Tensor:
        out = self.v(z, t)
        if not isinstance(out, Tensor) or out.shape != z.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"velocity must return a tensor of z's shape {tuple(z.shape)}, got {got}"
            )
        return out


def _as_batch_time(t, z: Tensor) -> Tensor:
    if not isinstance(t, Tensor):
        t = torch.tensor(float(t), dtype=z.dtype, device=z.device)
    if t.ndim == 0:
        return t.to(z.dtype).expand(z.shape[0])
    if t.shape != (z.shape[0],):
        raise ValueError(
            f"t must be 0-dim or of shape ({z.shape[0]},) to match z, got {tuple(t.shape)}"
        )
    return t.to(z.dtype)


@checked_keywords()
def divergence(
    v: Velocity,
    z: Tensor,
    t,
    *,
    method: str = "exact",
    probes: Tensor | None = None,
    per_probe: bool = False,
    batch_independent: bool = True,
    max_exact_dim: int = MAX_EXACT_DIM,
    force_exact: bool = False,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The value and divergence ∇_z·v of a velocity field at (z, t).

    Args:
        v: ``v(z, t) -> (B, *shape)`` with z (B, *shape) and t (B,).
        z: (B, *shape) floating.
        t: float, 0-dim or (B,) tensor.
        method: ``"exact"`` (Σ_i e_iᵀ J e_i, D VJPs, vmapped) or ``"hutchinson"``
            (εᵀ J ε averaged over the given probes, one VJP per probe, vmapped).
        probes: (P, B, *shape) probes for ``"hutchinson"`` (see :func:`sample_probes`).
        per_probe: Hutchinson only: return the (P, B) per-probe estimates instead of
            their mean.
        batch_independent: the exact trace assumes v_b depends on z_b only (see the
            module docstring); ``False`` uses B·D cotangents and is correct for fields
            that mix samples.
        max_exact_dim, force_exact: exact on D > max_exact_dim raises ValueError unless
            ``force_exact=True``.
        chunk_size: cotangents per vmap call (default: all probes; exact: chunks of at
            most 2**25 elements).

    Returns:
        ``(v(z, t), div)``: v (B, *shape) and div (B,) — or (P, B) with ``per_probe`` —
        both detached (no autograd graph is kept).

    If ``torch.func.vmap`` (or ``torch.func.vjp``) cannot handle the field, a slower
    loop is used and a :class:`DivergenceFallbackWarning` says so.
    """
    _check_trace(method)
    _check_state(z, "z")
    t = _as_batch_time(t, z)
    if method == "exact":
        if probes is not None:
            raise ValueError(
                "probes are only used with method='hutchinson'; got probes with method='exact'"
            )
        if per_probe:
            raise ValueError("per_probe=True needs method='hutchinson'")
        _check_exact_dim(_flat_dim(z), max_exact_dim, force_exact, "method")
    else:
        if probes is None:
            raise ValueError(
                "method='hutchinson' needs probes of shape (P, B, *shape); see sample_probes"
            )
        _check_probes(probes, z)
    engine = _Divergence(
        v, method, probes, batch_independent=batch_independent, chunk_size=chunk_size
    )
    vz, terms = engine(z, t)
    if method == "exact" or per_probe:
        return vz, terms[0] if method == "exact" else terms
    return vz, terms.mean(0)


def _check_probes(probes, z: Tensor) -> None:
    if not isinstance(probes, Tensor):
        raise TypeError(
            f"probes must be a tensor of shape (P, B, *shape), got {type(probes).__name__}"
        )
    if probes.ndim != z.ndim + 1 or probes.shape[1:] != z.shape or probes.shape[0] < 1:
        raise ValueError(
            f"probes must have shape (P, {', '.join(map(str, z.shape))}), got {tuple(probes.shape)}"
        )
    if probes.dtype != z.dtype:
        raise TypeError(f"probes must have z's dtype {z.dtype}, got {probes.dtype}")


def _check_state(z, name: str) -> None:
    if not isinstance(z, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {z.dtype}")
    if z.ndim < 2:
        raise ValueError(
            f"{name} must have shape (B, *shape) with a batch dimension and at least one data "
            f"dimension (use (B, 1) for scalar data), got {tuple(z.shape)}"
        )
    if z.shape[0] < 1 or z.numel() == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(z.shape)}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf")


# ====================================================================== log-likelihood
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


class _AugmentedField:
    """f(t, y) for y = cat([z.flatten(1), Δ], 1) of shape (B, D + K): dz/dt = v, dΔ_k/dt = div_k."""

    def __init__(self, engine: _Divergence, shape: tuple, B: int):
        self.engine, self.shape, self.B = engine, shape, B
        self.D = math.prod(shape)

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        z = y[:, : self.D].reshape(self.B, *self.shape)
        tb = _as_batch_time(solver_time(t, z), z)
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


def _solve():
    from .solvers.api import solve

    return solve


def _continuous_loss():
    from .objectives import continuous_loss

    return continuous_loss


@checked_keywords(lazy(_solve))
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
        batch_size: bounded memory (default None: one batch): at most ``batch_size``
            points per solve, chunk after chunk; per-point results are concatenated,
            ``nfe`` is the total over the chunks (``solution.stats["chunks"]`` has each
            chunk's). The Hutchinson probes are drawn for all points first, so with the
            same ``generator`` the chunks use the one-batch probes: equal to one batch
            (up to floating-point rounding) for fixed-step methods; adaptive methods
            choose each chunk's steps from its own points' error norm, so results differ
            within the tolerance.
        **solver_kwargs: passed to ``solve`` (``max_steps``, ``h0``, ...).

    Returns:
        :class:`LikelihoodResult` (nats). Not differentiable w.r.t. parameters.
    """
    _check_trace(trace)
    batch_size = check_batch_size(batch_size)
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be a positive int, got {probes!r}")
    if trace == "exact" and probes != 1:
        raise ValueError(f"probes={probes} is only meaningful with trace='hutchinson'")
    v = _resolve_velocity(model, velocity)
    if z0 is None:
        raise ValueError("z0 is required: the points (B, *shape) whose log-density is wanted")
    _check_state(z0, "z0")
    if model is not None:
        check_like_model(z0, model, "z0")
    generator = as_generator(generator, z0.device)
    data_shape = getattr(model, "data_shape", None) if model is not None else None
    if data_shape is not None and tuple(z0.shape[1:]) != tuple(data_shape):
        raise ValueError(
            f"z0 must have shape (B, {', '.join(map(str, data_shape))}) for this model, "
            f"got {tuple(z0.shape)}"
        )
    for name, val in (("t0", t0), ("t1", t1)):
        if not isinstance(val, (int, float)) or not 0.0 <= float(val) <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {val!r}")
    if not float(t0) < float(t1):
        raise ValueError(
            f"t0 must be < t1 (integration runs from data to noise), got t0={t0}, t1={t1}"
        )

    B, D = z0.shape[0], _flat_dim(z0)
    if trace == "exact":
        _check_exact_dim(D, max_exact_dim, force_exact)
        eps = None
    else:
        eps = sample_probes(probes, z0, noise, generator)  # for all points: chunks slice it
    kwargs = dict(solver_kwargs, rtol=rtol, atol=atol)
    # CUDA-graph capture of a field that runs torch.func transforms is untested: off
    # unless asked for explicitly.
    kwargs.setdefault("cuda_graph", False)
    if steps is not None:
        kwargs["steps"] = steps
    args = (v, trace, batch_independent, method, float(t0), float(t1), kwargs)
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
    B, shape, D = z0.shape[0], tuple(z0.shape[1:]), _flat_dim(z0)
    engine = _Divergence(v, trace, eps, batch_independent=batch_independent)
    field = _AugmentedField(engine, shape, B)
    K = 1 if eps is None else eps.shape[0]

    # late import: the solver package imports nothing from here
    from .solvers.api import per_sample_defaults, solve

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


# ====================================================================== bits per dimension
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


@checked_keywords(lazy(_continuous_loss))
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
    from . import objectives

    dtype = dtype or model_dtype_device(model)[0] or torch.get_default_dtype()
    generator = as_generator(generator, x_uint8.device)  # once: the n_t draws differ
    x = _to_model_range(x_uint8, dtype, n_bins)
    D = _flat_dim(x)
    parts = None
    for _ in range(n_t):
        with torch.no_grad():  # an evaluation: no graph (∂_t F uses forward mode, no graph needed)
            out = objectives.continuous_loss(
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
