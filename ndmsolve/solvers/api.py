"""``solve``: the one front door to every ODE/SDE method, with input validation.

Methods are declared once in the registry (``registry.METHODS``); by family and stepping:

- fixed-step ODE: ``steps=`` or ``grid=``;
- adaptive ODE: ``rtol``, ``atol``, ``max_steps``, ``h0``;
- SDE methods (fixed or adaptive), which need ``g``;
- backends ``"torchdiffeq:<method>"`` and ``"torchsde:<method>"`` (``backends.py``).

Samplers that step with the model itself (family ``"model"``) are registered too; ``nd.sample`` runs them.
Defaults are chosen for diffusion sampling (``DEFAULT_TOL``, ``max_steps = 10_000``; why:
docs/theory/solvers.md).
"""

from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor

from .._checks import as_generator, checked_keywords
from .base import CheckedField, Field, Solution
from .grids import as_time, check_save_at, make_grid, merge_save_times
from .norms import resolve_norm
from .registry import get_method, method_names

__all__ = ["solve", "all_methods", "make_grid", "PER_SAMPLE_CONTROL", "per_sample_defaults"]


def all_methods() -> tuple[str, ...]:
    """Every method name ``solve`` accepts: the registry's ODE and SDE methods and backends."""
    return tuple(n for n in method_names() if get_method(n).family in ("ode", "sde"))


def _positive(value, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
        raise ValueError(f"{name} must be finite and {'>=' if allow_zero else '>'} 0, got {value}")
    return value


#: default rtol = atol by family (docs/theory/solvers.md)
DEFAULT_TOL = {"ode": 1e-5, "sde": 1e-2}


#: step control of nd.sample and nd.log_likelihood for ndmsolve's adaptive ODE methods:
#: the tolerance held by every sample ("sample_max" norm) and a damped PI controller
#: (pcoeff, icoeff) = (0.07, 0.7); chosen by measurement (docs/theory/norms.md)
PER_SAMPLE_CONTROL = {"norm": "sample_max", "pi_coeffs": (0.07, 0.7)}


def per_sample_defaults(method: str, kwargs: dict) -> dict:
    """``kwargs`` with ``PER_SAMPLE_CONTROL`` filled in where ``method`` is one of
    ndmsolve's adaptive ODE methods and the caller did not set them."""
    info = get_method(method)
    if info.family == "ode" and info.adaptive and info.backend is None:
        return {**PER_SAMPLE_CONTROL, **kwargs}
    return kwargs


def _check_problem(f, y0, t0, t1) -> tuple[float, float]:
    """TypeError/ValueError for a bad field, initial state or time; ``(t0, t1)`` as floats."""
    if not callable(f):
        raise TypeError(f"f must be callable f(t, y), got {type(f).__name__}")
    _check_y0(y0)
    return as_time(t0, "t0"), as_time(t1, "t1")


def _check_y0(y0) -> None:
    if not isinstance(y0, Tensor):
        raise TypeError(f"y0 must be a torch.Tensor, got {type(y0).__name__}")
    if not y0.is_floating_point():
        raise TypeError(f"y0 must be a floating tensor, got dtype {y0.dtype}")
    if y0.numel() == 0:
        raise ValueError(f"y0 must not be empty, got shape {tuple(y0.shape)}")
    if not bool(torch.isfinite(y0).all()):
        raise ValueError("y0 must be finite, got NaN or inf")


@checked_keywords()
def solve(
    f: Field,
    y0: Tensor,
    t0,
    t1,
    method: str = "dopri5",
    *,
    steps: int | None = None,
    grid: Tensor | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 10_000,
    h0: float | None = None,
    save_at: Tensor | None = None,
    g: Field | None = None,
    generator=None,
    bm=None,
    noise: str = "diagonal",
    norm=None,
    pi_coeffs=None,
    cuda_graph: Union[str, bool] = "auto",
) -> Solution:
    """Integrate ``dy/dt = f(t, y)`` (plus ``g(t, y) dW`` for SDE methods) from t0 to t1.

    Args:
        f: drift/field ``f(t, y) -> dy/dt`` with ``t`` a 0-dim tensor of ``y0``'s dtype
            and device and ``y`` of ``y0``'s shape.
        y0: initial state, a floating tensor of any non-empty shape.
        t0, t1: start and end times (floats or scalar tensors), either direction.
        method: a name from ``METHODS`` or ``"torchdiffeq:<m>"`` / ``"torchsde:<m>"``.
        steps: fixed-step methods: number of uniform steps.
        grid: fixed-step methods: explicit (N+1,) times from t0 to t1 (instead of steps).
        rtol, atol: adaptive methods: tolerances (>= 0, not both 0; ``atol=0`` needs a
            state without exact zeros). Defaults ``DEFAULT_TOL``: 1e-5 (ODE), 1e-2 (SDE).
        max_steps: adaptive methods: bound on attempted (accepted + rejected) steps.
        h0: adaptive methods: first step size (default: Hairer's rule, +1 NFE).
        save_at: (S,) times within [t0, t1], strictly monotone in the integration
            direction; added to a fixed grid, interpolated or landed on by adaptive steps.
        g: SDE methods: diagonal diffusion ``g(t, y)`` of ``y``'s shape.
        norm: adaptive methods (torchdiffeq's too): the error norm of step control over
            the scaled error viewed as (B, n): ``"rms"`` (default, one RMS over the batch),
            ``"sample_max"`` (every sample's own RMS), ``"max"`` or a callable
            ``norm(x) -> 0-dim tensor`` (``norms``; docs/theory/norms.md).
        pi_coeffs: adaptive ODE methods: ``(pcoeff, icoeff)`` of the PI step-size
            controller (``controllers.PIController``; default (0.2, 0.4); (0, 1) is the
            classical I controller).
        generator, bm, noise: SDE methods: a ``torch.Generator`` or int seed (ignored by
            ODE methods), a ``BrownianPath``, ``"diagonal"`` or ``"additive"`` noise.
        cuda_graph: fixed-step ODE methods on CUDA: ``"auto"`` captures the step loop
            as a CUDA graph when autograd is off, ``True`` does so even with autograd on
            (gradients will not flow), ``False`` never does. Ignored on CPU.

    Returns:
        ``Solution``: ``y`` at t1, counts, ``ts`` (S,) / ``ys`` (S, *y0.shape) with
        ``save_at``. ``t0 == t1`` returns ``y0`` with ``nfe = 0`` (as torchdiffeq, diffrax).

    Raises:
        ValueError/TypeError: bad input (the message names the argument).
        NonFiniteError, StepLimitError (subclasses of SolverError): failed solves, with
            ``t``, ``step`` and ``partial``.
    """
    info = get_method(method, ("ode", "sde"), caller="solve")
    t0f, t1f = _check_problem(f, y0, t0, t1)
    rtol, atol, h0 = _step_control(g, rtol, atol, max_steps, h0)
    norm_fn = None if norm is None else resolve_norm(norm)
    if cuda_graph not in ("auto", True, False):
        raise ValueError(f"cuda_graph must be 'auto', True or False, got {cuda_graph!r}")
    if t0f == t1f:
        return _empty_solve(y0, t0f, method, save_at)
    generator = as_generator(generator, y0.device)
    f = CheckedField(f, "f")
    save = None if save_at is None else check_save_at(save_at, t0f, t1f)  # float64, CPU
    control = _control_kwargs(info, norm_fn, pi_coeffs)
    noise_kw = {"generator": generator, "bm": bm, "noise": noise}
    tol = {"rtol": rtol, "atol": atol, "max_steps": max_steps, "h0": h0, **control}
    if info.backend is None:
        _check_kind(info, g, bm, steps, grid, h0)
    grid_kw = {"steps": steps, "grid": grid, "cuda_graph": cuda_graph}
    return _dispatch(info, (f, g, y0, t0f, t1f, save), grid_kw, tol, noise_kw)


def _dispatch(info, span: tuple, grid_kw: dict, tol: dict, noise_kw: dict) -> Solution:
    """Call ``info``'s ``run`` (or the backend) in its calling convention (``registry``);
    ``span = (f, g, y0, t0, t1, save)`` with ``save`` the float64 save times or None;
    ``grid_kw``: ``steps``, ``grid``, ``cuda_graph``; ``tol``: the step-control keywords."""
    f, g, y0, t0, t1, save = span
    steps, grid, cuda_graph = grid_kw["steps"], grid_kw["grid"], grid_kw["cuda_graph"]
    save_t = None if save is None else save.to(device=y0.device, dtype=y0.dtype)
    if info.backend is not None:
        from .backends import solve_backend

        tol = {k: v for k, v in tol.items() if k not in ("max_steps", "h0")}
        return solve_backend(
            info.name, f, y0, t0, t1, g=g, steps=steps, grid=grid, save_at=save_t, **tol, **noise_kw
        )
    if not info.adaptive:
        tgrid = make_grid(t0, t1, steps, grid, y0.dtype, y0.device)
        tgrid, save_idx = merge_save_times(tgrid, save)
        if info.family == "sde":
            return info.run(f, g, y0, tgrid, save_idx=save_idx, **noise_kw)
        return info.run(f, y0, tgrid, save_idx=save_idx, cuda_graph=cuda_graph)
    if info.family == "sde":
        return info.run(f, g, y0, t0, t1, save_at=save_t, **tol, **noise_kw)
    return info.run(f, y0, t0, t1, save_at=save, **tol)


def _step_control(g, rtol, atol, max_steps, h0) -> tuple[float, float, float | None]:
    """``solve``'s checks of the step-control arguments; ``(rtol, atol, h0)`` with the
    family's default tolerance (``DEFAULT_TOL``) filled in."""
    tol = DEFAULT_TOL["sde" if g is not None else "ode"]
    rtol = _positive(tol if rtol is None else rtol, "rtol", allow_zero=True)
    atol = _positive(tol if atol is None else atol, "atol", allow_zero=True)
    if rtol == 0 and atol == 0:
        raise ValueError("rtol and atol must not both be 0 (no error would ever be accepted)")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int):
        raise TypeError(f"max_steps must be an int, got {type(max_steps).__name__}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    return rtol, atol, None if h0 is None else _positive(h0, "h0")


def _control_kwargs(info, norm_fn, pi_coeffs) -> dict:
    """The ``norm``/``pi_coeffs`` keywords for ``info``'s ``run``; ValueError where the
    method has no use for them."""
    if norm_fn is not None and not info.adaptive:
        raise ValueError(f"norm applies to adaptive methods; {info.name!r} is fixed-step")
    kw = {} if norm_fn is None else {"norm": norm_fn}
    if pi_coeffs is not None:
        if not (info.adaptive and info.family == "ode" and info.backend is None):
            raise ValueError(
                f"pi_coeffs applies to ndmsolve's adaptive ODE methods, not {info.name!r}"
            )
        kw["pi_coeffs"] = pi_coeffs
    return kw


def _check_kind(info, g, bm, steps, grid, h0) -> None:
    """ValueError for arguments the method's family (ODE/SDE) or stepping ignores."""
    method = info.name
    if info.family == "ode":
        if g is not None:
            raise ValueError(
                f"g is given but {method!r} is an ODE method; use an SDE method "
                f"({', '.join(method_names('sde', backends=False))})"
            )
        if bm is not None:
            raise ValueError(f"bm is given but {method!r} is an ODE method (no noise)")
    elif g is None:
        raise ValueError(f"{method!r} is an SDE method and needs the diffusion g(t, y)")
    if info.adaptive:
        if steps is not None or grid is not None:
            raise ValueError(
                f"steps/grid apply to fixed-step methods; {method!r} is adaptive "
                "(control it with rtol/atol)"
            )
    elif h0 is not None:
        raise ValueError(f"h0 applies to adaptive methods; {method!r} is fixed-step")


def _empty_solve(y0: Tensor, t: float, method: str, save_at) -> Solution:
    """The solution of a zero-length interval: ``y0``, no evaluations."""
    sol = Solution(y=y0, nfe=0, method=method, t=t)
    if save_at is not None:
        ts = torch.as_tensor(save_at, dtype=torch.float64).reshape(-1)
        if ts.numel() == 0 or not bool((ts == t).all()):
            raise ValueError(
                f"save_at must hold only t0 = t1 = {t} on a zero-length interval, got {ts.tolist()}"
            )
        sol.ts = ts.to(dtype=y0.dtype, device=y0.device)
        sol.ys = y0.expand(ts.numel(), *y0.shape).clone()
    return sol
