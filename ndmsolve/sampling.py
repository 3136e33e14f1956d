"""Sampling from an NDM: from the prior z_1 ~ N(0, I) at t = 1 down to t = 0.

Three families of methods, one entry point ``sample``:

* **ODE** (``euler``, ``midpoint``, ``heun``, ``rk4``; adaptive ``bosh3``, ``dopri5``,
  ``tsit5``; ``torchdiffeq:<m>``): the probability-flow ODE dz/dt = v(z, t)
  (``NDM.velocity``). Deterministic given z_1.
* **SDE** (``euler_maruyama`` and the higher-order / adaptive SDE schemes of
  ``ndmsolve.solvers.sde``; ``torchsde:<m>``): the reverse SDE
  dz = [f(z, t, x̂) − g² s(z, t)] dt + g(t) dw̄ run from t = 1 to 0 (``NDM.reverse_drift``);
  the noise is additive (g depends on t only) and diagonal, g(t)·1. Brownian increments
  come from ``generator``.
* **Discrete** (``ddim``, ``ancestral``): steps along the NDM posterior
  p_θ(z_s | z_t) = q(z_s | z_t, x = x̂_θ(z_t, t)) (``NDM.posterior``), η = 0 for ``ddim``
  (deterministic), η = 1 for ``ancestral``; see ``ndmsolve.solvers.discrete``.
* **Multistep** (``dpmpp_2m``, ``dpmpp_3m``, ``ei_3m``, ``unipc_2m``, ``unipc_3m``): the
  NDM-DDIM step with x̂ replaced by a combination of the last predictions (DPM-Solver++
  and UniPC when F = identity); one predictor call per step, no JVP of F; see
  ``ndmsolve.solvers.multistep``.

What is returned. Every method returns **z at the last time of the grid** (t = 0 by
default), i.e. a draw from (an approximation of) q(z_0) = ∫ N(α_0 F(x, 0), σ_0² I) p(x) dx
= ∫ N(α_0 x, σ_0² I) p(x) dx. The schedule keeps λ(0) = λ_max finite, so this is the data
blurred by σ_0 = sigmoid(−λ_max)^{1/2} (e.g. 6.7e-3 for λ_max = 10) and scaled by
α_0 ≈ 1. The discrete samplers also end with a posterior step to s = 0 (well defined
because λ_max is finite), not with x̂. Pass ``denoise=True`` to return x̂_θ(z_0, t_min)
instead (one more predictor evaluation, counted in ``nfe``).

Both ends of [0, 1] are safe: λ ∈ [λ_min, λ_max] is finite there, so α, σ, g² and the
PF-ODE are well defined on the closed interval. Times handed to the model by a solver
are clamped to [0, 1] (a stage time can round to −1e-17).

Sampling runs under ``torch.no_grad()``: no graph is built (the NDM's ∂_t F uses
forward-mode AD / analytic derivatives, which do not need one). The model's train/eval
mode is left as it is.
"""

from __future__ import annotations

import functools
import inspect
import math
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
from .schedules import Schedule
from .solvers.base import Solution, SolverError, field_fault, merge_solutions
from .solvers.registry import METHODS, get_method
from .tensors import bcast

__all__ = [
    "sample",
    "SampleResult",
    "make_time_grid",
    "check_grid",
    "sampling_methods",
    "DEFAULT_STEPS",
    "default_grid_kind",
]

#: steps used by fixed-step and discrete methods when neither ``steps`` nor ``grid`` is given
DEFAULT_STEPS = 50
GRID_KINDS = ("uniform", "logsnr", "karras")
#: Karras et al.'s ρ for ``kind="karras"``
KARRAS_RHO = 7.0


# --------------------------------------------------------------------------- results
@dataclass
class SampleResult:
    """Result of ``sample``.

    Attributes:
        samples: (n, *shape), z at the last grid time (t = 0 by default), or x̂ there
            with ``denoise=True``.
        nfe: predictor evaluations over the batch (one per field evaluation of an
            ODE/SDE solver, rejected steps included; one per discrete step; +1 for
            ``denoise``).
        path_ts: (S,) decreasing times of the saved path, or ``None``.
        path: (S, n, *shape) states at ``path_ts``, or ``None``. For fixed-step and
            discrete methods S = steps + 1 (the grid); adaptive methods save at the
            times ``save_at`` (default: 11 times uniform from 1 to ``t_min``).
        solution: the underlying ``Solution`` (step statistics, method name, ...).
    """

    samples: Tensor
    nfe: int
    path_ts: Tensor | None = None
    path: Tensor | None = None
    solution: Solution | None = None


# --------------------------------------------------------------------------- time grids
def make_time_grid(
    steps: int,
    kind: str = "uniform",
    schedule: Schedule | None = None,
    *,
    t_max: float = 1.0,
    t_min: float = 0.0,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> Tensor:
    """A decreasing time grid of ``steps + 1`` points from ``t_max`` to ``t_min``.

    kind:
        ``"uniform"``: uniform in t.
        ``"logsnr"``: uniform in λ(t) between λ(t_max) and λ(t_min) (needs
        ``schedule``); k-diffusion's "exponential" σ grid.
        ``"karras"``: Karras et al. (2022) with ρ = ``KARRAS_RHO`` = 7 on the
        noise-to-signal ratio s = σ/α = e^{−λ/2} (k-diffusion's σ for a VP model):
        s_i = (s_max^{1/ρ} + (i/N)(s_min^{1/ρ} − s_max^{1/ρ}))^ρ with s_max = s(t_max),
        s_min = s(t_min) (needs ``schedule``): dense near t_min.
        λ is inverted by ``schedule.t_of_log_snr`` (closed form for ``LinearLogSNR`` and
        ``CosineLogSNR``, else vectorised bisection in float64, accurate to ~1e-15 in t).

    The end points are exactly ``t_max`` and ``t_min``: z_1 is given at t_max and every
    sampler returns z at t_min. For a final step that returns x̂ at the last time, as
    k-diffusion's step to σ = 0 does, sample with ``denoise=True``: the last predictor
    evaluation is x̂_θ(z, t_min) (so a budget of N evaluations is ``steps = N − 1``),
    and t_min > 0 (a larger s_min) is then the usual choice.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if kind not in GRID_KINDS:
        raise ValueError(f"kind must be one of {GRID_KINDS}, got {kind!r}")
    for name, v in (("t_max", t_max), ("t_min", t_min)):
        if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
    t_max, t_min = float(t_max), float(t_min)
    if not t_min < t_max:
        raise ValueError(f"t_min must be < t_max, got t_min={t_min}, t_max={t_max}")
    if kind == "uniform":
        grid = torch.linspace(t_max, t_min, steps + 1, dtype=torch.float64)
    else:
        if schedule is None:
            raise ValueError(f"schedule is needed for kind={kind!r} (pass model.schedule)")
        grid = _logsnr_grid(steps, schedule, t_max, t_min, kind)
    grid[0], grid[-1] = t_max, t_min
    return grid.to(dtype=dtype, device=device)


def _logsnr_grid(
    steps: int, schedule: Schedule, t_max: float, t_min: float, kind: str = "logsnr"
) -> Tensor:
    f64 = torch.float64
    with torch.no_grad():
        ends = schedule.log_snr(torch.tensor([t_max, t_min], dtype=f64)).to(f64)
        if kind == "karras":  # ρ-spaced in s = σ/α = e^{−λ/2}
            s_max, s_min = (torch.exp(-0.5 * ends) ** (1.0 / KARRAS_RHO)).tolist()
            ramp = torch.linspace(0.0, 1.0, steps + 1, dtype=f64)
            lam = -2.0 * KARRAS_RHO * torch.log(s_max + ramp * (s_min - s_max))
        else:
            lam = torch.linspace(float(ends[0]), float(ends[1]), steps + 1, dtype=f64)
        t = schedule.t_of_log_snr(lam)
    return t.clamp(t_min, t_max)


def check_grid(grid, *, dtype=torch.float32, device=None, name: str = "grid") -> Tensor:
    """Validate a user time grid: 1-D, ≥ 2 points, strictly decreasing, inside [0, 1]."""
    if not isinstance(grid, Tensor):
        try:
            grid = torch.as_tensor(grid, dtype=torch.float64)
        except Exception as e:  # noqa: BLE001
            raise TypeError(
                f"{name} must be a 1-D tensor of times, got {type(grid).__name__}"
            ) from e
    if not grid.is_floating_point():
        grid = grid.to(torch.float64)
    if grid.ndim != 1 or grid.shape[0] < 2:
        raise ValueError(f"{name} must be 1-D with at least 2 times, got shape {tuple(grid.shape)}")
    if not bool(torch.isfinite(grid).all()):
        raise ValueError(f"{name} must be finite")
    if not bool(((grid >= 0) & (grid <= 1)).all()):
        raise ValueError(
            f"{name} must lie in [0, 1], got min {float(grid.min())}, max {float(grid.max())}"
        )
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError(f"{name} must be strictly decreasing (sampling runs from t = 1 to t = 0)")
    return grid.to(dtype=dtype, device=device)


# --------------------------------------------------------------------------- methods
def sampling_methods() -> dict:
    """All method names ``sample`` accepts (the solver registry, ``nd.solvers.METHODS``),
    by kind: ``ode_fixed``, ``ode_adaptive``, ``sde_fixed``, ``sde_adaptive``, ``discrete``
    and ``backends`` (``"torchdiffeq:<m>"``, ``"torchsde:<m>"``)."""
    out = {
        k: []
        for k in ("ode_fixed", "ode_adaptive", "sde_fixed", "sde_adaptive", "discrete", "backends")
    }
    for m in METHODS.values():
        out.setdefault(m.kind, []).append(m.name)
    return {k: tuple(v) for k, v in out.items()}


# --------------------------------------------------------------------------- model fields
class _PFODE:
    """f(t, z) = NDM.velocity(z, t): one predictor call per evaluation."""

    def __init__(self, model):
        self.model = model
        self.graph_key = ("pf_ode", id(model))  # one CUDA graph per model, not per call

    def __call__(self, t: Tensor, z: Tensor) -> Tensor:
        try:
            return self.model.velocity(z, solver_time(t, z))
        except NonFiniteOutputError as e:  # the solver adds the step
            raise field_fault(e, t) from None


class _ReverseDrift:
    """f(t, z) = NDM.reverse_drift(z, t): one predictor call per evaluation."""

    def __init__(self, model):
        self.model = model

    def __call__(self, t: Tensor, z: Tensor) -> Tensor:
        try:
            return self.model.reverse_drift(z, solver_time(t, z))
        except NonFiniteOutputError as e:  # the solver adds the step
            raise field_fault(e, t) from None


class _Diffusion:
    """g(t, z) = g(t) (additive, diagonal), shaped (B, 1, ..., 1) to broadcast against z."""

    def __init__(self, model):
        self.model = model

    def __call__(self, t: Tensor, z: Tensor) -> Tensor:
        return bcast(self.model.diffusion(solver_time(t, z)), z)


def _solve():
    from .solvers.api import solve

    return solve


# --------------------------------------------------------------------------- sample
def _method_options() -> set:
    return {o for m in METHODS.values() for o in m.options}


def _in_chunks(fn):
    """``sample`` with ``batch_size=``: the points go through ``fn`` in chunks of at most
    ``batch_size``; z1 is drawn for all n first, so chunks see the one-batch z1."""

    @functools.wraps(fn)
    def sample(model, n=None, method="heun", *, batch_size=None, **kwargs):
        batch_size = check_batch_size(batch_size)
        z1 = kwargs.pop("z1", None)
        count = n if z1 is None else (z1.shape[0] if isinstance(z1, Tensor) else None)
        if batch_size is None or count is None or count <= batch_size:
            return fn(model, n, method, z1=z1, **kwargs)
        generator = kwargs.pop("generator", None)
        if z1 is None:
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"n must be a positive int, got {n!r}")
            m_device = model_dtype_device(model)[1]
            device = kwargs.pop("device", None)
            device = torch.device(device) if device is not None else m_device
            generator = as_generator(generator, device)
            z1 = model.prior_sample(
                n,
                kwargs.get("shape"),
                generator=generator,
                dtype=kwargs.pop("dtype", None),
                device=device,
            )  # the same draw as one batch's
        else:
            generator = as_generator(generator, z1.device)
        outs, sols = [], []
        for i in range(0, count, batch_size):
            j = min(i + batch_size, count)
            try:
                out = fn(model, None, method, z1=z1[i:j], generator=generator, **kwargs)
            except SolverError as e:
                raise e.with_context(
                    f" (points {i}..{j - 1} of {count}, batch_size={batch_size})"
                ) from None
            outs.append(out)
            sols.append(out.solution)
        samples = torch.cat([o.samples for o in outs])
        sol = merge_solutions(sols, torch.cat([s.y for s in sols]))
        sol.stats["batch_size"] = batch_size
        return SampleResult(
            samples=samples,
            nfe=sum(o.nfe for o in outs),
            path_ts=outs[0].path_ts,
            path=None if outs[0].path is None else torch.cat([o.path for o in outs], dim=1),
            solution=sol,
        )

    sample.__signature__ = _with_batch_size(inspect.signature(fn))
    sample.__doc__ = (fn.__doc__ or "") + BATCH_SIZE_DOC
    return sample


def _with_batch_size(sig: inspect.Signature) -> inspect.Signature:
    params = list(sig.parameters.values())
    extra = inspect.Parameter("batch_size", inspect.Parameter.KEYWORD_ONLY, default=None)
    return sig.replace(parameters=params[:-1] + [extra, params[-1]])  # before **solver_kwargs


BATCH_SIZE_DOC = """
    Bounded memory (``batch_size``, default None: one batch): at most ``batch_size``
    points go through the solver at a time, chunk after chunk; ``samples`` and ``path``
    are concatenated, ``nfe`` is the total over the chunks (evaluations of at most
    ``batch_size`` points each; ``solution.stats["chunks"]`` has each chunk's counts).
    z1 is drawn for all n first, so with the same ``generator`` the chunks start from
    the one-batch z1. Equal to one batch (up to floating-point rounding of a smaller
    batch) for fixed-step ODE methods, ``ddim`` and the multistep samplers. Not equal:
    adaptive methods (the step size is shared by the points of a chunk and set by their
    error norm, "sample_max" or "rms", so a chunk takes its own steps; results differ
    within the tolerance) and every method with noise (SDE methods, ``ancestral``, ``ddim``
    with η > 0: each chunk draws its noise after the previous one from the generator, a
    different stream from one batch's; same distribution, and reproducible for a given
    seed and ``batch_size``).
"""


@_in_chunks
@checked_keywords(lazy(_solve), extra=_method_options)
def sample(
    model,
    n: int | None = None,
    method: str = "heun",
    *,
    steps: int | None = None,
    grid=None,
    grid_kind: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 10_000,
    shape: tuple | None = None,
    generator=None,
    z1: Tensor | None = None,
    t_min: float | None = None,
    sigma_min: float | None = None,
    return_path: bool = False,
    save_at=None,
    denoise: bool = False,
    dtype: torch.dtype | None = None,
    device=None,
    eta: float | None = None,
    **solver_kwargs,
) -> SampleResult:
    """Draw ``n`` samples from an NDM by integrating from t = 1 to ``t_min`` (default 0).

    Args:
        model: an ``NDM`` (needs ``velocity``, ``reverse_drift``, ``diffusion``,
            ``x_hat``, ``posterior``, ``schedule``, ``data_shape``).
        n: number of samples (may be omitted when ``z1`` is given).
        method: any name in the registry ``nd.solvers.METHODS`` (listed by kind by
            ``sampling_methods()``): ODE (``euler``, ``midpoint``, ``heun``, ``rk4``,
            ``bosh3``, ``dopri5``, ``tsit5``), SDE (``euler_maruyama``, ...), discrete NDM
            samplers (``ddim``, ``ancestral``; multistep ``dpmpp_2m``, ``dpmpp_3m``, ``ei_3m``,
            ``unipc_2m``, ``unipc_3m``, ...) or a backend ``torchdiffeq:<m>`` /
            ``torchsde:<m>``.
        steps: number of steps for fixed-step and discrete methods (default
            ``DEFAULT_STEPS`` = 50 when ``grid`` is not given either). An error for
            adaptive methods.
        grid: explicit decreasing times (1-D, in [0, 1]) instead of ``steps``; z1 is the
            state at ``grid[0]``. An error together with ``steps`` or an adaptive method.
        grid_kind: ``"uniform"`` in t, ``"logsnr"`` (uniform in λ) or ``"karras"``
            (ρ = 7 on σ/α), for ``steps``; see ``make_time_grid``. Default (None):
            ``default_grid_kind(method)``: ``"logsnr"`` for the multistep samplers
            (``dpmpp_*``, ``ei_3m``, ``unipc_*``), ``"uniform"`` for the others (measured:
            ``benchmarks/default_grid.py``).
        rtol, atol, max_steps: adaptive methods' tolerances and step limit. Default
            tolerances: 1e-5 for ODE methods, 1e-2 for adaptive SDE methods
            (``solvers.api.DEFAULT_TOL``, the embedded EM/Heun pair's usual
            setting). Ignored by fixed-step and discrete methods. ndmsolve's adaptive
            ODE methods hold the tolerance for every sample by default
            (``solvers.api.PER_SAMPLE_CONTROL``: norm "sample_max", PI coefficients
            (0.07, 0.7); pass ``norm="rms"`` for one RMS over the batch).
        shape: sample shape; default ``model.data_shape`` (or ``z1.shape[1:]``).
        generator: a ``torch.Generator`` or an int seed; drives z1, the Brownian
            increments and the ancestral noise; same seed, same samples.
        z1: initial states (n, *shape) at t = 1 instead of prior draws.
        t_min: final time for ``steps``/adaptive solves (default 0).
        sigma_min: the final time given as a noise-to-signal ratio σ/α instead:
            t_min = ``model.schedule.t_of_log_snr(−2 log sigma_min)``, so a recipe does not
            depend on the schedule's end points; an error together with ``t_min`` or
            outside [σ/α at t = 0, σ/α at t = 1].
        return_path: also return the states along the way (``path_ts``, ``path``). Fixed
            and discrete: the grid. Adaptive: the times ``save_at`` (default 11 times
            uniform from 1 to ``t_min``).
        save_at: times to save for adaptive methods (implies ``return_path``); an error
            for fixed-step methods, whose path is the grid.
        denoise: return x̂_θ(z, t_min) rather than z at ``t_min`` (+1 NFE).
        dtype, device: of z1 when it is drawn here; default the model's parameters
            (for a model without parameters ``torch.get_default_dtype()``, on the CPU:
            a closed-form model computes in its input's dtype, so nothing else fixes it). A z1 or dtype/device
            that differs from the model's raises an error naming both (no silent cast).
        eta: η ∈ [0, 1] for the samplers that take it (``"eta" in METHODS[m].options``:
            default 0 for ``ddim``, 1 for ``ancestral``); an error for other methods.
        **solver_kwargs: passed on to ``ndmsolve.solvers.api.solve`` (e.g. ``h0``), or
            for discrete samplers their ``METHODS[m].options`` (the multistep samplers'
            ``lower_order_final``, default True: below 15 steps the last steps use fewer
            past predictions; and ``extrapolate``, ``"x"`` (default) or ``"F"``: combine
            the past predictions before F or after it, see ``ndmsolve.solvers.multistep``).

    Returns:
        ``SampleResult(samples, nfe, path_ts, path, solution)``.

    Runs under ``torch.no_grad()``.
    """
    info = get_method(method, caller="sample")
    family, adaptive = info.family, info.adaptive
    return_path = bool(return_path) or save_at is not None
    if eta is not None and "eta" not in info.options:
        takes = [m.name for m in METHODS.values() if "eta" in m.options]
        raise ValueError(f"eta applies to the samplers {takes} only, not {method!r}")
    if grid_kind is None:
        grid_kind = default_grid_kind(method)
    elif grid_kind not in GRID_KINDS:
        raise ValueError(f"grid_kind must be one of {GRID_KINDS} or None, got {grid_kind!r}")
    if grid is not None and (t_min is not None or sigma_min is not None):
        raise ValueError(
            "t_min and sigma_min are for steps= and adaptive solves; a grid ends at grid[-1]"
        )
    t_min = _final_time(model, t_min, sigma_min)

    # --- initial state
    model_shape = getattr(model, "data_shape", None)
    if shape is not None and model_shape is not None and tuple(shape) != tuple(model_shape):
        raise ValueError(f"shape {tuple(shape)} differs from model.data_shape {tuple(model_shape)}")
    if z1 is not None:
        if not isinstance(z1, Tensor) or not z1.is_floating_point() or z1.ndim < 1:
            raise TypeError("z1 must be a floating tensor of shape (n, *shape)")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n != z1.shape[0]):
            raise ValueError(f"n must equal z1.shape[0] = {z1.shape[0]}, got {n!r}")
        data_shape = tuple(z1.shape[1:])
        want = shape if shape is not None else model_shape
        if want is not None and tuple(want) != data_shape:
            raise ValueError(f"z1 must have shape (n, *{tuple(want)}), got {tuple(z1.shape)}")
        if dtype is not None or device is not None:
            z1 = z1.to(dtype=dtype or z1.dtype, device=device or z1.device)
        check_like_model(z1, model, "z1")
        n = z1.shape[0]
    else:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        data_shape = shape if shape is not None else model_shape
        if data_shape is None:
            raise ValueError(
                "shape is needed: pass shape=(...), z1, or build the NDM with data_shape=(...)"
            )
        data_shape = tuple(data_shape)
        m_dtype, m_device = model_dtype_device(model)
        dtype = dtype or m_dtype or torch.get_default_dtype()
        device = torch.device(device) if device is not None else (m_device or torch.device("cpu"))
        if m_dtype is not None and (dtype != m_dtype or device != m_device):
            raise TypeError(
                f"dtype={dtype}, device={device} differ from the model's parameters "
                f"({m_dtype} on {m_device}): omit dtype=/device= (samples follow the "
                f"model) or convert the model"
            )
        generator = as_generator(generator, device)  # once: z1 and the noise share one stream
        z1 = torch.randn((n, *data_shape), generator=generator, dtype=dtype, device=device)
    dtype, device = z1.dtype, z1.device
    generator = as_generator(generator, device)

    # --- time grid
    if adaptive:
        if steps is not None or grid is not None:
            raise ValueError(
                f"{method!r} is adaptive: it chooses its own steps; do not pass steps or grid "
                "(use rtol/atol, or a fixed-step method)"
            )
        if not isinstance(t_min, (int, float)) or not 0.0 <= float(t_min) < 1.0:
            raise ValueError(f"t_min must be a number in [0, 1), got {t_min!r}")
        t_grid = torch.tensor([1.0, float(t_min)], dtype=dtype, device=device)
    elif grid is not None:
        if steps is not None:
            raise ValueError("pass either steps or grid, not both")
        t_grid = check_grid(grid, dtype=dtype, device=device)
    else:
        steps = DEFAULT_STEPS if steps is None else steps
        t_grid = make_time_grid(
            steps, grid_kind, model.schedule, t_min=t_min, dtype=dtype, device=device
        )

    with torch.no_grad():
        if family == "discrete":
            bad = sorted(set(solver_kwargs) - set(info.options))
            if bad:
                raise TypeError(
                    f"unexpected arguments for {method!r}: {bad} "
                    f"(it takes {list(info.options) or 'no options'})"
                )
            options = dict(solver_kwargs, **({} if eta is None else {"eta": eta}))
            sol = info.run(
                model, z1, t_grid, generator=generator, save=return_path, method=method, **options
            )
        else:
            sol = _solve_continuous(
                model,
                z1,
                t_grid,
                method,
                family,
                adaptive,
                rtol=rtol,
                atol=atol,
                max_steps=max_steps,
                generator=generator,
                return_path=return_path,
                save_at=save_at,
                **solver_kwargs,
            )
        out, nfe = sol.y, int(sol.nfe)
        if denoise:
            t_end = t_grid[-1].expand(n)
            out = model.x_hat(out, t_end)
            nfe += 1
    return SampleResult(
        samples=out,
        nfe=nfe,
        path_ts=sol.ts if return_path else None,
        path=sol.ys if return_path else None,
        solution=sol,
    )


def default_grid_kind(method: str) -> str:
    """The grid ``sample`` builds for ``steps`` when ``grid_kind`` is not given:
    ``"logsnr"`` for the multistep samplers (those with ``lower_order_final``: on a schedule
    whose λ is far from linear in t, a uniform-t grid makes their extrapolation in λ unstable,
    e.g. ``unipc_3m`` at 20 steps under ``CosineLogSNR(-15, 15)``: sliced W1 0.164 vs 0.111,
    floor 0.097), ``"uniform"`` for the others (``ddim``, and ``heun`` under the cosine
    schedule, measure better on it). Measured in ``benchmarks/default_grid.py``."""
    info = get_method(method, caller="sample")
    multistep = info.family == "discrete" and "lower_order_final" in info.options
    return "logsnr" if multistep else "uniform"


def _final_time(model, t_min, sigma_min) -> float:
    """t_min from ``t_min`` or ``sigma_min`` (σ/α at the final time), default 0."""
    if sigma_min is None:
        return 0.0 if t_min is None else t_min
    if t_min is not None:
        raise ValueError("pass either t_min or sigma_min (the final time as σ/α), not both")
    if isinstance(sigma_min, bool) or not isinstance(sigma_min, (int, float)) or sigma_min <= 0:
        raise ValueError(f"sigma_min must be a positive number (σ/α), got {sigma_min!r}")
    with torch.no_grad():
        ends = model.schedule.log_snr(torch.tensor([0.0, 1.0], dtype=torch.float64))
    s_lo, s_hi = (math.exp(-0.5 * float(v)) for v in ends)
    if not s_lo * (1 - 1e-9) <= sigma_min <= s_hi * (1 + 1e-9):
        raise ValueError(
            f"sigma_min must lie in [{s_lo:.4g}, {s_hi:.4g}] (σ/α at t = 0 and t = 1 of "
            f"the model's schedule), got {sigma_min!r}"
        )
    lam = min(max(-2.0 * math.log(sigma_min), float(ends[1])), float(ends[0]))
    return float(model.schedule.t_of_log_snr(lam))


def _solve_continuous(
    model,
    z1,
    t_grid,
    method,
    family,
    adaptive,
    *,
    rtol,
    atol,
    max_steps,
    generator,
    return_path,
    save_at,
    **solver_kwargs,
) -> Solution:
    from .solvers.api import per_sample_defaults, solve

    t0, t1 = t_grid[0], t_grid[-1]
    kwargs = dict(solver_kwargs)
    if adaptive:
        kwargs.update(rtol=rtol, atol=atol, max_steps=max_steps)  # None: solve's DEFAULT_TOL
        kwargs = per_sample_defaults(method, kwargs)  # adaptive ODE: every sample's tolerance
        if return_path:
            if save_at is None:
                save_at = torch.linspace(float(t0), float(t1), 11, dtype=z1.dtype, device=z1.device)
            kwargs["save_at"] = check_grid(
                save_at, dtype=z1.dtype, device=z1.device, name="save_at"
            )
    else:
        if save_at is not None:
            raise ValueError(
                "save_at is for adaptive methods; fixed-step paths are saved on the grid"
            )
        kwargs["grid"] = t_grid
        if return_path:
            kwargs["save_at"] = t_grid
    if family == "sde":
        kwargs.setdefault("noise", "additive")  # g depends on t only
        return solve(
            _ReverseDrift(model),
            z1,
            t0,
            t1,
            method,
            g=_Diffusion(model),
            generator=generator,
            **kwargs,
        )
    return solve(_PFODE(model), z1, t0, t1, method, **kwargs)
