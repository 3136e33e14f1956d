"""``nd.sample``: draw from an NDM by integrating from the prior at t = 1 down to ``t_min``.

``sample`` checks its arguments, builds z1 and the time grid, and hands the NDM's fields
(``sampling.fields``) to ``nd.solve`` or a model-based sampler (``sampling.discrete``,
``sampling.multistep``) to the registered method's ``run``. ``batch_size`` chunks the points.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import (
    as_generator,
    check_batch_size,
    check_like_model,
    checked_keywords,
    lazy,
    model_dtype_device,
)
from ..solvers.base import Solution, SolverError, merge_solutions
from ..solvers.registry import METHODS, Method, get_method
from .fields import DiffusionField, PFODEField, ReverseDriftField
from .grids import (
    DEFAULT_STEPS,
    GRID_KINDS,
    check_grid,
    default_grid_kind,
    final_time,
    make_time_grid,
)

__all__ = ["sample", "SampleResult", "sampling_methods", "initial_state"]

#: the groups of ``sampling_methods()``, in order (``Method.kind``)
KINDS = ("ode_fixed", "ode_adaptive", "sde_fixed", "sde_adaptive", "discrete", "backends")


@dataclass
class SampleResult:
    """Result of ``sample``.

    Attributes:
        samples: (n, *shape), z at the last grid time (t = 0 by default), or x̂ there
            with ``denoise=True``.
        nfe: predictor evaluations over the batch (one per field evaluation of an
            ODE/SDE solver, rejected steps included; one per step of a model-based
            sampler; +1 for ``denoise``).
        path_ts: (S,) decreasing times of the saved path, or ``None``.
        path: (S, n, *shape) states at ``path_ts``, or ``None``. For fixed-step and
            model-based methods S = steps + 1 (the grid); adaptive methods save at the
            times ``save_at`` (default: 11 times uniform from 1 to ``t_min``).
        solution: the underlying ``Solution`` (step statistics, method name, ...).
    """

    samples: Tensor
    nfe: int
    path_ts: Tensor | None = None
    path: Tensor | None = None
    solution: Solution | None = None


def sampling_methods() -> dict:
    """All method names ``sample`` accepts (the solver registry, ``nd.solvers.METHODS``),
    by kind: ``ode_fixed``, ``ode_adaptive``, ``sde_fixed``, ``sde_adaptive``, ``discrete``
    (the model-based samplers, family ``"model"``) and ``backends`` (``"torchdiffeq:<m>"``,
    ``"torchsde:<m>"``)."""
    out = {k: [] for k in KINDS}
    for m in METHODS.values():
        out.setdefault(m.kind, []).append(m.name)
    return {k: tuple(v) for k, v in out.items()}


def _solve():
    from ..solvers.api import solve

    return solve


def _method_options() -> set:
    return {o for m in METHODS.values() for o in m.options}


# --------------------------------------------------------------------------- chunks
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
            z1, generator = _prior_draw(model, n, generator, kwargs)
        else:
            generator = as_generator(generator, z1.device)
        outs = []
        for i in range(0, count, batch_size):
            j = min(i + batch_size, count)
            try:
                outs.append(fn(model, None, method, z1=z1[i:j], generator=generator, **kwargs))
            except SolverError as e:
                raise e.with_context(
                    f" (points {i}..{j - 1} of {count}, batch_size={batch_size})"
                ) from None
        return _concat(outs, batch_size)

    sample.__signature__ = _with_batch_size(inspect.signature(fn))
    sample.__doc__ = (fn.__doc__ or "") + BATCH_SIZE_DOC
    return sample


def _prior_draw(model, n, generator, kwargs: dict) -> tuple[Tensor, torch.Generator | None]:
    """z1 for all ``n`` points, the same draw as one batch's; pops dtype/device off ``kwargs``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    m_device = model_dtype_device(model)[1]
    device = kwargs.pop("device", None)
    device = torch.device(device) if device is not None else m_device
    generator = as_generator(generator, device)
    z1 = model.prior_sample(
        n, kwargs.get("shape"), generator=generator, dtype=kwargs.pop("dtype", None), device=device
    )
    return z1, generator


def _concat(outs: list[SampleResult], batch_size: int) -> SampleResult:
    sols = [o.solution for o in outs]
    sol = merge_solutions(sols, torch.cat([s.y for s in sols]))
    sol.stats["batch_size"] = batch_size
    return SampleResult(
        samples=torch.cat([o.samples for o in outs]),
        nfe=sum(o.nfe for o in outs),
        path_ts=outs[0].path_ts,
        path=None if outs[0].path is None else torch.cat([o.path for o in outs], dim=1),
        solution=sol,
    )


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


# --------------------------------------------------------------------------- sample
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
    """Draw ``n`` samples (n, *shape) from an NDM ``model``, from t = 1 to ``t_min`` (default 0).

    Args:
        method: a name in ``nd.solvers.METHODS`` (by kind: ``sampling_methods()``).
        steps: fixed-step and model-based methods (default ``DEFAULT_STEPS`` = 50).
        grid: explicit decreasing times (1-D, in [0, 1]) instead of ``steps``.
        grid_kind: ``"uniform"``, ``"logsnr"`` or ``"karras"`` for ``steps``
            (``make_time_grid``); None: ``default_grid_kind(method)``.
        rtol, atol, max_steps: adaptive methods (default tolerances:
            ``solvers.api.DEFAULT_TOL``; adaptive ODE methods hold the tolerance for every
            sample, ``solvers.api.PER_SAMPLE_CONTROL``; ``norm="rms"`` for one batch RMS).
        shape: sample shape; default ``model.data_shape`` (or ``z1.shape[1:]``).
        generator: a ``torch.Generator`` or an int seed for z1 and all noise.
        z1: (n, *shape) initial states at ``grid[0]`` (default 1) instead of prior draws.
        t_min, sigma_min: the final time, or its noise-to-signal ratio σ/α (one of them).
        return_path, save_at: also return the path (``path_ts``, ``path``): the grid, or
            ``save_at`` for adaptive methods (default 11 times uniform from 1 to ``t_min``).
        denoise: return x̂_θ(z, t_min) rather than z at ``t_min`` (+1 NFE).
        dtype, device: of a drawn z1; default the model's (a mismatch is an error).
        eta: η ∈ [0, 1] for the methods with ``"eta"`` in their options (``ddim``, 0;
            ``ancestral``, 1).
        **solver_kwargs: for ``nd.solve`` (e.g. ``h0``), or a model-based sampler's
            ``METHODS[m].options`` (multistep: ``lower_order_final``, ``extrapolate``,
            ``solver_type``; see ``sampling.multistep``).

    Returns:
        ``SampleResult(samples, nfe, path_ts, path, solution)``; runs under ``no_grad``.
        The guide: docs/guide/sampling.md.
    """
    info = get_method(method, caller="sample")
    return_path = bool(return_path) or save_at is not None
    grid_kind = _check_choices(info, eta, grid_kind, grid, t_min, sigma_min)
    t_min = final_time(model, t_min, sigma_min)
    z1, generator = initial_state(model, n, z1, shape, generator, dtype, device)
    t_grid = _time_grid(model, info, steps, grid, grid_kind, t_min, z1)
    limits = {"rtol": rtol, "atol": atol, "max_steps": max_steps}
    with torch.no_grad():
        sol = _run(
            info, model, z1, t_grid, generator, return_path, save_at, eta, limits, solver_kwargs
        )
        out, nfe = sol.y, int(sol.nfe)
        if denoise:
            out = model.x_hat(out, t_grid[-1].expand(z1.shape[0]))
            nfe += 1
    return SampleResult(
        samples=out,
        nfe=nfe,
        path_ts=sol.ts if return_path else None,
        path=sol.ys if return_path else None,
        solution=sol,
    )


def _check_choices(info: Method, eta, grid_kind, grid, t_min, sigma_min) -> str:
    """The grid kind (``default_grid_kind`` for None); errors for options that do not apply."""
    if eta is not None and "eta" not in info.options:
        takes = [m.name for m in METHODS.values() if "eta" in m.options]
        raise ValueError(f"eta applies to the samplers {takes} only, not {info.name!r}")
    if grid_kind is None:
        grid_kind = default_grid_kind(info.name)
    elif grid_kind not in GRID_KINDS:
        raise ValueError(f"grid_kind must be one of {GRID_KINDS} or None, got {grid_kind!r}")
    if grid is not None and (t_min is not None or sigma_min is not None):
        raise ValueError(
            "t_min and sigma_min are for steps= and adaptive solves; a grid ends at grid[-1]"
        )
    return grid_kind


def initial_state(
    model, n, z1, shape, generator, dtype, device
) -> tuple[Tensor, torch.Generator | None]:
    """``(z1, generator)``: the given z1 checked against n, shape and the model, or n prior
    draws N(0, I) of shape (n, *shape) from ``generator`` (a seed becomes a generator, then
    shared by z1 and the sampler's noise)."""
    model_shape = getattr(model, "data_shape", None)
    if shape is not None and model_shape is not None and tuple(shape) != tuple(model_shape):
        raise ValueError(f"shape {tuple(shape)} differs from model.data_shape {tuple(model_shape)}")
    want = shape if shape is not None else model_shape
    if z1 is not None:
        z1 = _given_z1(model, n, z1, want, dtype, device)
        return z1, as_generator(generator, z1.device)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if want is None:
        raise ValueError(
            "shape is needed: pass shape=(...), z1, or build the NDM with data_shape=(...)"
        )
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
    z1 = torch.randn((n, *tuple(want)), generator=generator, dtype=dtype, device=device)
    return z1, generator


def _given_z1(model, n, z1, want, dtype, device) -> Tensor:
    if not isinstance(z1, Tensor) or not z1.is_floating_point() or z1.ndim < 1:
        raise TypeError("z1 must be a floating tensor of shape (n, *shape)")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n != z1.shape[0]):
        raise ValueError(f"n must equal z1.shape[0] = {z1.shape[0]}, got {n!r}")
    if want is not None and tuple(want) != tuple(z1.shape[1:]):
        raise ValueError(f"z1 must have shape (n, *{tuple(want)}), got {tuple(z1.shape)}")
    if dtype is not None or device is not None:
        z1 = z1.to(dtype=dtype or z1.dtype, device=device or z1.device)
    check_like_model(z1, model, "z1")
    return z1


def _time_grid(model, info: Method, steps, grid, grid_kind: str, t_min, z1: Tensor) -> Tensor:
    """(N+1,) decreasing times in z1's dtype and device; (2,) [1, t_min] for adaptive methods."""
    dtype, device = z1.dtype, z1.device
    if info.adaptive:
        if steps is not None or grid is not None:
            raise ValueError(
                f"{info.name!r} is adaptive: it chooses its own steps; do not pass steps or "
                "grid (use rtol/atol, or a fixed-step method)"
            )
        if not isinstance(t_min, (int, float)) or not 0.0 <= float(t_min) < 1.0:
            raise ValueError(f"t_min must be a number in [0, 1), got {t_min!r}")
        return torch.tensor([1.0, float(t_min)], dtype=dtype, device=device)
    if grid is not None:
        if steps is not None:
            raise ValueError("pass either steps or grid, not both")
        return check_grid(grid, dtype=dtype, device=device)
    steps = DEFAULT_STEPS if steps is None else steps
    return make_time_grid(steps, grid_kind, model.schedule, t_min=t_min, dtype=dtype, device=device)


def _run(
    info: Method, model, z1, t_grid, generator, return_path, save_at, eta, limits, options
) -> Solution:
    """The method on the grid: a model-based sampler's ``run``, else ``nd.solve`` on a field."""
    if save_at is not None and not info.adaptive:
        raise ValueError(
            f"save_at is for adaptive methods; {info.name!r} saves its path on the grid"
        )
    if info.family == "model":
        return _run_model_sampler(info, model, z1, t_grid, generator, return_path, eta, options)
    kwargs = dict(options, **limits)
    return _solve_fields(model, z1, t_grid, info, generator, return_path, save_at, kwargs)


def _run_model_sampler(
    info: Method, model, z1, t_grid, generator, return_path: bool, eta, options: dict
) -> Solution:
    """A model-based sampler (family ``"model"``): its ``run`` with its own options only."""
    bad = sorted(set(options) - set(info.options))
    if bad:
        raise TypeError(
            f"unexpected arguments for {info.name!r}: {bad} "
            f"(it takes {list(info.options) or 'no options'})"
        )
    options = dict(options, **({} if eta is None else {"eta": eta}))
    return info.run(
        model, z1, t_grid, generator=generator, save=return_path, method=info.name, **options
    )


def _solve_fields(
    model, z1, t_grid, info: Method, generator, return_path: bool, save_at, kwargs: dict
) -> Solution:
    """``nd.solve`` on the PF-ODE (family ``"ode"``) or the reverse SDE (``"sde"``)."""
    from ..solvers.api import per_sample_defaults, solve

    t0, t1 = t_grid[0], t_grid[-1]
    limits = {k: kwargs.pop(k) for k in ("rtol", "atol", "max_steps")}
    if info.adaptive:
        kwargs.update(limits)  # None: solve's DEFAULT_TOL
        kwargs = per_sample_defaults(info.name, kwargs)  # adaptive ODE: every sample's tolerance
        if return_path:
            if save_at is None:
                save_at = torch.linspace(float(t0), float(t1), 11, dtype=z1.dtype, device=z1.device)
            kwargs["save_at"] = check_grid(
                save_at, dtype=z1.dtype, device=z1.device, name="save_at"
            )
    else:
        kwargs["grid"] = t_grid
        if return_path:
            kwargs["save_at"] = t_grid
    if info.family == "sde":
        kwargs.setdefault("noise", "additive")  # g depends on t only
        return solve(
            ReverseDriftField(model),
            z1,
            t0,
            t1,
            info.name,
            g=DiffusionField(model),
            generator=generator,
            **kwargs,
        )
    return solve(PFODEField(model), z1, t0, t1, info.name, **kwargs)
