"""Fixed-step explicit RK over a given time grid (either direction).

The loop is kept lean: stage times are precomputed as 0-dim tensors and step sizes as
Python floats, so a step is only field calls and fused adds. NaN/inf detection costs
one reduction per step and no host sync: each step appends ``y.sum()`` to a device-side
list, checked once at the end. NaN/inf, once in the state, stays non-finite under every
later RK update, so the first non-finite sum is the step that produced it (the final
state confirms it, ruling out a sum that merely overflowed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import FAULTS, Field, NonFiniteError, Solution, locate
from .registry import register
from .rk import make_fixed_step
from .tableaus import Tableau, euler, heun, midpoint, rk4

__all__ = ["solve_fixed", "stage_times", "fixed_loop", "check_finite_steps"]


def stage_times(grid: Tensor, tab: Tableau) -> list[list[Tensor]]:
    """Per step, the ``s`` stage times ``t_i + c_j h_i`` as 0-dim tensors of ``grid``'s dtype.

    ``grid``: (N+1,). Nodes 0 and 1 reuse the grid points exactly (no rounding drift);
    the others are formed in float64 and then cast. Equal nodes share one tensor.
    """
    g64 = grid.double()
    cols = {}
    for c in tab.c:
        if c in cols:
            continue
        if c == 0.0:
            cols[c] = grid[:-1]
        elif c == 1.0:
            cols[c] = grid[1:]
        else:
            cols[c] = (g64[:-1] + c * (g64[1:] - g64[:-1])).to(grid.dtype)
    per_node = {c: list(col.unbind()) for c, col in cols.items()}
    return [[per_node[c][i] for c in tab.c] for i in range(grid.numel() - 1)]


def fixed_loop(
    f: Field,
    tab: Tableau,
    y: Tensor,
    ts: Sequence[Sequence[Tensor]],
    hs: Sequence[float],
    save_after: Sequence[bool],
):
    """Run the steps; no host syncs.

    Args:
        ts: per step, its stage times (``stage_times``); hs: per step, ``h`` as a float.
        save_after: per step, whether to keep the state it produces.

    Returns:
        ``(y, saved, sums)``: final state, the kept states in order, and per step the
        0-dim float64 sum of the state it produced (for ``check_finite_steps``).

    Raises:
        NonFiniteError: the field reported a NaN/inf output itself (``FAULTS``), with
            the step's index and the evaluation's time (``partial``: the step's start).
    """
    step = make_fixed_step(tab)
    # Half precision would overflow a long sum of finite values; accumulate in float32.
    acc = torch.float32 if y.dtype in (torch.float16, torch.bfloat16) else None
    saved, sums = [], []
    for i in range(len(hs)):
        try:
            y = step(f, ts[i], hs[i], y)
        except FAULTS as e:  # the field reported NaN/inf itself: name the step
            t_i = float(ts[i][0])  # c_0 = 0: the step's start
            partial = Solution(y=y, nfe=i * tab.stages, n_accepted=i, method=tab.name, t=t_i)
            raise locate(e, tab.name, i, t_i, t_i + hs[i], partial=partial) from None
        sums.append(y.sum(dtype=acc))
        if save_after[i]:
            saved.append(y)
    return y, saved, sums


def check_finite_steps(sums: Tensor, y: Tensor) -> int | None:
    """Index of the first step whose state went non-finite, or ``None``.

    ``sums``: per step, the state's sum; ``y``: the final state. One host sync when all is
    well. A sum can also overflow for a finite state, so a non-finite sum only counts
    when the final state confirms it (NaN/inf, once in the state, stays there).
    """
    bad = ~torch.isfinite(sums)
    if not bool(bad.any()) or bool(torch.isfinite(y).all()):
        return None
    return int(bad.nonzero()[0, 0])


def solve_fixed(
    f: Field, y0: Tensor, grid: Tensor, tab: Tableau, *, save_idx: Sequence[int] | None = None
) -> Solution:
    """Integrate ``f`` over ``grid`` with fixed steps of the tableau ``tab``.

    Args:
        f: field ``f(t, y) -> dy/dt``, ``t`` a 0-dim tensor of ``y0``'s dtype.
        y0: initial state, any shape, at ``grid[0]``.
        grid: (N+1,) strictly monotone times (either direction), dtype/device of ``y0``.
        save_idx: increasing grid indices whose states to return in ``ys`` (or None).

    Returns:
        ``Solution`` with ``y`` at ``grid[-1]``, ``ts = grid[save_idx]`` and ``ys`` of shape
        ``(len(save_idx), *y0.shape)``; ``nfe = N * stages``.

    Raises:
        NonFiniteError: a step produced NaN/inf; ``.step`` is its index, ``.t`` the time
            it started from, ``.partial`` holds y0 or the last good saved state.
    """
    n = grid.numel() - 1
    times = grid.double().tolist()  # the one host sync, before the loop
    hs = [b - a for a, b in zip(times[:-1], times[1:])]
    ts = stage_times(grid, tab)
    save_idx = list(save_idx or ())
    save_after = [False] * n
    for j in save_idx:
        if j > 0:
            save_after[j - 1] = True
    y, saved, sums = fixed_loop(f, tab, y0, ts, hs, save_after)
    nfe = n * tab.stages
    states = [y0] * (bool(save_idx) and save_idx[0] == 0) + saved  # grid index order
    first_bad = check_finite_steps(torch.stack(sums), y)
    if first_bad is not None:
        raise _nonfinite(tab.name, grid, save_idx, states, y0, first_bad, nfe)
    sol = Solution(y=y, nfe=nfe, n_accepted=n, method=tab.name, t=times[-1])
    if save_idx:
        sol.ts, sol.ys = grid[save_idx], torch.stack(states)
    return sol


def _nonfinite(
    method: str,
    grid: Tensor,
    save_idx: list[int],
    states: list[Tensor],
    y0: Tensor,
    step: int,
    nfe: int,
) -> NonFiniteError:
    """The error for a fixed-grid solve whose step ``step`` went non-finite."""
    good = [(j, s) for j, s in zip(save_idx, states) if j <= step]
    last_j, last_y = good[-1] if good else (0, y0)
    partial = Solution(y=last_y, nfe=nfe, n_accepted=step, method=method, t=float(grid[last_j]))
    if good:
        partial.ts = grid[[j for j, _ in good]]
        partial.ys = torch.stack([s for _, s in good])
    t_bad, t_next = float(grid[step]), float(grid[step + 1])
    return NonFiniteError(
        f"{method}: the state became NaN/inf in step {step} (t={t_bad:.6g} -> {t_next:.6g}); "
        f"check the field near t={t_bad:.6g}",
        t=t_bad,
        step=step,
        partial=partial,
    )


def _fixed_method(tab: Tableau):
    """The registry's ``run`` for a fixed-step tableau: the CUDA-graph loop where it
    applies (``cuda_graph``: "auto" = on CUDA without autograd, True, False), else eager."""

    def run(f: Field, y0: Tensor, grid: Tensor, *, save_idx=None, cuda_graph="auto") -> Solution:
        use_graph = y0.is_cuda and (
            cuda_graph is True or (cuda_graph == "auto" and not torch.is_grad_enabled())
        )
        if use_graph:
            from .cudagraph import solve_fixed_graphed

            sol = solve_fixed_graphed(f, y0, grid, tab, save_idx=save_idx)
            if sol is not None:
                return sol
        return solve_fixed(f, y0, grid, tab, save_idx=save_idx)

    return run


for _tab, _what in (
    (euler, "explicit Euler"),
    (midpoint, "explicit midpoint"),
    (heun, "Heun (explicit trapezoidal)"),
    (rk4, "classical Runge-Kutta"),
):
    register(
        _tab.name,
        family="ode",
        stepping="fixed",
        order=_tab.order,
        nfe_per_step=_tab.stages,
        run=_fixed_method(_tab),
        cuda_graph=True,
        needs_jvp=True,
        description=f"{_what}, order {_tab.order}",
    )
