"""Time grids for fixed-step solvers (ODE and SDE alike) and save-time handling.

All checks raise ValueError/TypeError naming the argument. Times are handled in float64
on the host at setup (once per solve), never inside a step loop.
"""

from __future__ import annotations

import bisect
import math
from typing import Union

import torch
from torch import Tensor

__all__ = ["as_time", "make_grid", "check_save_at", "merge_save_times"]

TimeLike = Union[float, int, Tensor]


def as_time(value: TimeLike, name: str) -> float:
    """A finite scalar time (float, int or 0-dim/one-element tensor) as a Python float."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a real number or a scalar tensor, got {type(value).__name__}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _close(a: float, b: float, dtype: torch.dtype) -> bool:
    # Endpoints given in the working dtype may differ from float t0/t1 by rounding.
    return abs(a - b) <= 4 * torch.finfo(dtype).eps * max(1.0, abs(a), abs(b))


def make_grid(
    t0: TimeLike,
    t1: TimeLike,
    steps: int | None,
    grid: Tensor | None,
    dtype: torch.dtype,
    device: Union[str, torch.device, None],
) -> Tensor:
    """The time grid of a fixed-step solve: exactly one of ``steps`` and ``grid``.

    Args:
        t0, t1: start and end times, ``t0 != t1``; either direction.
        steps: number of uniform steps (int >= 1): ``steps + 1`` points from t0 to t1.
        grid: explicit 1-D times, strictly monotone from ``t0`` to ``t1`` (its first and
            last entries must equal them up to rounding in ``dtype``).
        dtype, device: of the returned grid (use the state's).

    Returns:
        (N+1,) tensor with ``grid[0] == t0`` and ``grid[-1] == t1`` exactly (in ``dtype``).
    """
    t0, t1 = as_time(t0, "t0"), as_time(t1, "t1")
    if t0 == t1:
        raise ValueError(f"t0 and t1 must differ, got t0 = t1 = {t0}")
    if (steps is None) == (grid is None):
        raise ValueError(
            "fixed-step methods need exactly one of steps= (uniform grid) and grid= "
            f"(explicit times); got {'both' if steps is not None else 'neither'}"
        )
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise TypeError(f"steps must be an int, got {type(steps).__name__}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        g = torch.linspace(t0, t1, steps + 1, dtype=torch.float64)
    else:
        if not isinstance(grid, Tensor):
            if isinstance(grid, (list, tuple)):
                grid = torch.tensor(grid, dtype=torch.float64)
            else:
                raise TypeError(f"grid must be a 1-D tensor of times, got {type(grid).__name__}")
        if grid.ndim != 1 or grid.numel() < 2:
            raise ValueError(
                f"grid must be a 1-D tensor with at least 2 times, got shape {tuple(grid.shape)}"
            )
        if not grid.is_floating_point():
            raise TypeError(f"grid must be a floating tensor, got dtype {grid.dtype}")
        g = grid.detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(g).all()):
            raise ValueError("grid must be finite, got NaN or inf")
        d = (g[1:] - g[:-1]) * (1.0 if t1 > t0 else -1.0)
        if not bool((d > 0).all()):
            raise ValueError(
                f"grid must be strictly {'increasing' if t1 > t0 else 'decreasing'} "
                f"from t0={t0} to t1={t1}"
            )
        check_dtype = (
            grid.dtype if grid.dtype in (torch.float16, torch.bfloat16, torch.float32) else dtype
        )
        if not (_close(float(g[0]), t0, check_dtype) and _close(float(g[-1]), t1, check_dtype)):
            raise ValueError(
                f"grid must start at t0={t0} and end at t1={t1}, "
                f"got {float(g[0])} ... {float(g[-1])}"
            )
        g = g.clone()
    g[0], g[-1] = t0, t1
    return g.to(device=device, dtype=dtype)


def check_save_at(save_at, t0: float, t1: float) -> Tensor:
    """Validate ``save_at``: non-empty 1-D finite times within [t0, t1], strictly monotone
    in the integration direction. Returns them as a float64 CPU tensor."""
    if isinstance(save_at, (list, tuple)):
        save_at = torch.tensor(save_at, dtype=torch.float64)
    if not isinstance(save_at, Tensor):
        raise TypeError(f"save_at must be a 1-D tensor of times, got {type(save_at).__name__}")
    if save_at.ndim != 1 or save_at.numel() == 0:
        raise ValueError(
            f"save_at must be a non-empty 1-D tensor, got shape {tuple(save_at.shape)}"
        )
    if not save_at.is_floating_point():
        raise TypeError(f"save_at must be a floating tensor, got dtype {save_at.dtype}")
    s = save_at.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(s).all()):
        raise ValueError("save_at must be finite, got NaN or inf")
    lo, hi = min(t0, t1), max(t0, t1)
    tol = 4 * torch.finfo(save_at.dtype).eps * max(1.0, abs(lo), abs(hi))
    if float(s.min()) < lo - tol or float(s.max()) > hi + tol:
        raise ValueError(
            f"save_at must lie within [t0, t1] = [{t0}, {t1}], "
            f"got values in [{float(s.min())}, {float(s.max())}]"
        )
    d = (s[1:] - s[:-1]) * (1.0 if t1 > t0 else -1.0)
    if not bool((d > 0).all()):
        raise ValueError(
            f"save_at must be strictly {'increasing' if t1 > t0 else 'decreasing'} "
            "(the integration direction)"
        )
    # Times within rounding of an end point are that end point (no sliver steps).
    s = torch.where((s - t0).abs() <= tol, torch.full_like(s, t0), s)
    s = torch.where((s - t1).abs() <= tol, torch.full_like(s, t1), s)
    return s.clamp(lo, hi)


def merge_save_times(grid: Tensor, save_at: Tensor | None) -> tuple[Tensor, list[int] | None]:
    """Put the save times on the grid.

    A save time within rounding of a grid point uses that point; any other is inserted
    as an extra grid point (so the solve takes one more, shorter step there).

    Args:
        grid: (N+1,) strictly monotone times. save_at: (S,) from ``check_save_at`` or None.

    Returns:
        ``(grid', save_idx)``: the possibly longer grid (same dtype/device) and, per save
        time, its index in ``grid'`` (``None`` when ``save_at`` is None).
    """
    if save_at is None:
        return grid, None
    g = grid.detach().to("cpu", torch.float64).tolist()
    span = abs(g[-1] - g[0])
    tol = 4 * torch.finfo(grid.dtype).eps * max(1.0, abs(g[0]), abs(g[-1])) + 1e-12 * span
    sign = 1.0 if g[-1] > g[0] else -1.0

    def nearest(keys: list[float], k: float) -> int:
        i = bisect.bisect_left(keys, k)
        return min((j for j in (i - 1, i) if 0 <= j < len(keys)), key=lambda j: abs(keys[j] - k))

    keys = [sign * p for p in g]  # increasing
    extra = [s for s in save_at.tolist() if abs(keys[nearest(keys, sign * s)] - sign * s) > tol]
    points = sorted(g + extra, key=lambda p: sign * p)
    keys = [sign * p for p in points]
    idx = [nearest(keys, sign * s) for s in save_at.tolist()]
    new = torch.tensor(points, dtype=torch.float64).to(device=grid.device, dtype=grid.dtype)
    if len(points) == len(g):
        new = grid  # unchanged: keep the caller's exact values
    return new, idx
