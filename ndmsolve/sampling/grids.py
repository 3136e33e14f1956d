"""Time grids for ``nd.sample``: uniform in t, uniform in log-SNR, Karras et al.'s ρ-grid.

Every grid decreases from ``t_max`` (default 1) to ``t_min`` (default 0), end points exact.
λ is inverted by ``Schedule.t_of_log_snr``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..schedules import Schedule
from ..solvers.registry import get_method

__all__ = [
    "DEFAULT_STEPS",
    "GRID_KINDS",
    "KARRAS_RHO",
    "make_time_grid",
    "check_grid",
    "default_grid_kind",
    "final_time",
]

#: steps used by fixed-step and model-based methods when neither ``steps`` nor ``grid`` is given
DEFAULT_STEPS = 50
GRID_KINDS = ("uniform", "logsnr", "karras")
#: Karras et al.'s ρ for ``kind="karras"``
KARRAS_RHO = 7.0


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

    Returns:
        (steps + 1,) tensor of ``dtype`` on ``device``.
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
    """Validate a user time grid: 1-D, ≥ 2 points, strictly decreasing, inside [0, 1].

    Returns it as a (N+1,) tensor of ``dtype`` on ``device``; errors name ``name``.
    """
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


def default_grid_kind(method: str) -> str:
    """The grid ``sample`` builds for ``steps`` when ``grid_kind`` is not given:
    ``"logsnr"`` for the multistep samplers (those with ``lower_order_final``), ``"uniform"``
    for the others (the measurements: docs/theory/multistep.md, "The default grid")."""
    info = get_method(method, caller="sample")
    multistep = info.family == "model" and "lower_order_final" in info.options
    return "logsnr" if multistep else "uniform"


def final_time(model, t_min, sigma_min) -> float:
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
