"""Fixed-step explicit RK over a given time grid (either direction), eager or as a CUDA graph.

Stage times are precomputed as 0-dim tensors and step sizes as Python floats, so a step
is only field calls and fused adds; the step loop is ``loops.run_fixed`` (no host sync,
NaN/inf located once at the end). On CUDA without autograd the whole loop is captured as
a CUDA graph and replayed (``cudagraph``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import cudagraph
from .base import Field, Solution, locate
from .loops import fixed_solution, run_fixed, save_after
from .registry import register
from .rk import make_fixed_step
from .tableaus import Tableau, euler, heun, midpoint, rk4

__all__ = ["solve_fixed", "solve_fixed_graphed", "stage_times", "fixed_loop"]


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
    stage_t: Sequence[Sequence[Tensor]],
    hs: Sequence[float],
    keep: Sequence[bool],
):
    """``loops.run_fixed`` for the tableau ``tab``; no host syncs.

    Args:
        stage_t: per step, its stage times (``stage_times``); hs: per step, ``h`` as a float.
        keep: per step, whether to keep the state it produces.

    Returns:
        ``(y, saved, sums)``: final state, the kept states in order, and per step the
        0-dim sum of the state it produced (for ``loops.first_nonfinite``).

    Raises:
        NonFiniteError: the field reported a NaN/inf output itself (``FAULTS``), with
            the step's index and the evaluation's time (``partial``: the step's start).
    """
    step = make_fixed_step(tab)

    def on_fault(e, i, y):
        t_i = float(stage_t[i][0])  # c_0 = 0: the step's start
        partial = Solution(y=y, nfe=i * tab.stages, n_accepted=i, method=tab.name, t=t_i)
        return locate(e, tab.name, i, t_i, t_i + hs[i], partial=partial)

    return run_fixed(lambda i, y: step(f, stage_t[i], hs[i], y), y, len(hs), keep, on_fault)


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
    save_idx = list(save_idx or ())
    run = fixed_loop(f, tab, y0, stage_times(grid, tab), hs, save_after(n, save_idx))
    return fixed_solution(tab.name, grid, y0, run, save_idx, n * tab.stages)


def solve_fixed_graphed(
    f: Field, y0: Tensor, grid: Tensor, tab: Tableau, *, save_idx: Sequence[int] | None = None
) -> Solution | None:
    """``solve_fixed`` through a captured CUDA graph (``cudagraph``); same arguments and
    result, plus ``stats["cuda_graph"]``. ``None`` (after a warning, once per cache key)
    when the loop cannot be captured; the caller then runs the eager loop."""
    n = grid.numel() - 1
    hs = (grid[1:].double() - grid[:-1].double()).tolist()
    save_idx = list(save_idx or ())
    keep = save_after(n, save_idx)
    key = (cudagraph.field_id(f), tuple(y0.shape), y0.dtype, y0.device)
    key += (tuple(grid.double().tolist()), tab.name, tuple(save_idx))
    held = {}  # the stage times, built at capture; the entry keeps them alive for replays

    def times():
        if "t" not in held:
            held["t"] = stage_times(grid, tab)
        return held["t"]

    def warmup(y):
        for _ in range(2):
            fixed_loop(f, tab, y, times()[:1], hs[:1], [False])

    def body(y):
        y, saved, sums = fixed_loop(f, tab, y, times(), hs, keep)
        return y, torch.stack(saved) if saved else None, torch.stack(sums)

    out = cudagraph.replay(key, y0, body, warmup, keep=(f, held), what=tab.name)
    if out is None:
        return None
    y, ys, sums = out
    run = (y, [] if ys is None else list(ys.unbind(0)), sums)
    return fixed_solution(
        tab.name, grid, y0, run, save_idx, n * tab.stages, result_stats={"cuda_graph": True}
    )


def _fixed_method(tab: Tableau):
    """The registry's ``run`` for a fixed-step tableau: the CUDA-graph loop where it
    applies (``cuda_graph``: "auto" = on CUDA without autograd, True, False), else eager."""

    def run(f: Field, y0: Tensor, grid: Tensor, *, save_idx=None, cuda_graph="auto") -> Solution:
        use_graph = y0.is_cuda and (
            cuda_graph is True or (cuda_graph == "auto" and not torch.is_grad_enabled())
        )
        if use_graph:
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
