"""CUDA-graph fast path for fixed-step ODE solves on CUDA tensors.

A fixed-step solve has static shapes and a static time grid, so its whole step loop can
be captured once as a CUDA graph and replayed: one launch instead of thousands of
kernel launches, no Python in the loop. Used by ``solve`` when ``y0`` is on CUDA,
``cuda_graph`` allows it and autograd is off (sampling runs under ``torch.no_grad`` or
``torch.inference_mode``; capturing backward passes is out of scope).

Cache: one captured graph per (field, shape, dtype, device, grid, method, save indices)
(the field by identity, or by its ``graph_key`` attribute when it has one),
least recently used first out, ``MAX_CACHED`` entries. An entry holds a strong reference
to the field so its id cannot be reused by another object while the graph lives. The
graph reads the field's parameters from their memory at replay, so in-place weight
updates (``optimizer.step``, ``load_state_dict``) are seen; replacing parameter tensors
is not — call ``clear_cache()`` then.

If capture fails (e.g. the field syncs with the host via ``.item()``/``print``, or uses
an op that cannot be captured) ``solve`` warns once per cache key and runs eagerly.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor

from .base import Field, Solution
from .fixed import _nonfinite, check_finite_steps, fixed_loop, stage_times
from .tableaus import Tableau

__all__ = ["solve_fixed_graphed", "clear_cache", "MAX_CACHED"]

MAX_CACHED = 8
_CACHE: OrderedDict[tuple, object] = OrderedDict()
_FAILED = object()  # capture failed for this key: run eagerly without re-trying


class _Captured:
    __slots__ = ("replay", "field", "static_y", "ts", "y_out", "ys_out", "sums_out")


def clear_cache() -> None:
    """Drop every captured graph (frees their memory pools)."""
    _CACHE.clear()


def _field_id(f: Field):
    # A field object rebuilt per call (e.g. a sampler's wrapper around one model) names
    # its identity with ``graph_key``, so repeated solves replay instead of re-capturing.
    key = getattr(f, "graph_key", None)
    if key is not None:
        return ("graph_key",) + tuple(key)
    # A bound method is a new object at each attribute access; key on its parts.
    self_ = getattr(f, "__self__", None)
    func = getattr(f, "__func__", None)
    return (id(self_), id(func)) if self_ is not None and func is not None else (id(f),)


def capture_cuda(warmup, body, device: torch.device):
    """Run ``warmup()`` on a side stream, then capture ``body()`` as a CUDA graph.

    Returns the graph's ``replay``. (Indirection point: tests without a GPU substitute
    a function that returns ``body`` itself, i.e. replay = re-run eagerly.)
    """
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        # Lazy initialisations (cuBLAS/cuDNN handles, autotuning) must not happen
        # inside the graph, so one step runs first, off the capture.
        warmup()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            body()
    except Exception:
        torch.cuda.synchronize(device)  # let the failed capture's stream settle first
        raise
    return graph.replay


_capture_fn = capture_cuda


def _capture(
    f: Field, y0: Tensor, grid: Tensor, tab: Tableau, hs: list[float], save_after: Sequence[bool]
) -> _Captured:
    c = _Captured()
    c.field, c.static_y, c.ts = f, y0.detach().clone(), stage_times(grid, tab)

    def warmup():
        for _ in range(2):
            fixed_loop(f, tab, c.static_y, c.ts[:1], hs[:1], [False])

    def body():
        y, saved, sums = fixed_loop(f, tab, c.static_y, c.ts, hs, save_after)
        c.y_out, c.sums_out = y, torch.stack(sums)
        c.ys_out = torch.stack(saved) if saved else None

    c.replay = _capture_fn(warmup, body, y0.device)
    return c


def solve_fixed_graphed(
    f: Field, y0: Tensor, grid: Tensor, tab: Tableau, *, save_idx: Sequence[int] | None = None
) -> Solution | None:
    """``fixed.solve_fixed`` through a captured CUDA graph; same arguments and result.

    Returns ``None`` (after a warning, once per cache key) when the loop cannot be
    captured; the caller then runs the eager loop.
    """
    n = grid.numel() - 1
    hs = (grid[1:].double() - grid[:-1].double()).tolist()
    save_idx = list(save_idx or ())
    save_after = [False] * n
    for j in save_idx:
        if j > 0:
            save_after[j - 1] = True
    key = (
        _field_id(f),
        tuple(y0.shape),
        y0.dtype,
        y0.device,
        tuple(grid.double().tolist()),
        tab.name,
        tuple(save_idx),
    )
    entry = _CACHE.get(key)
    if entry is None:
        try:
            entry = _capture(f, y0, grid, tab, hs, save_after)
        except Exception as exc:  # any capture failure: eager fallback, announced
            warnings.warn(
                f"CUDA-graph capture of the {tab.name} loop failed ({type(exc).__name__}: {exc}); "
                "running eagerly. A field that syncs with the host (.item(), print, "
                "data-dependent shapes) cannot be captured; pass cuda_graph=False to silence this.",
                RuntimeWarning,
                stacklevel=3,
            )
            entry = _FAILED
        _CACHE[key] = entry
        while len(_CACHE) > MAX_CACHED:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    if entry is _FAILED:
        return None

    entry.static_y.copy_(y0)
    entry.replay()
    # Outputs live in the graph's pool and are overwritten by the next replay: copy them.
    y = entry.y_out.clone()
    states = [y0] if save_idx and save_idx[0] == 0 else []
    if entry.ys_out is not None:
        states += list(entry.ys_out.clone().unbind(0))
    nfe = n * tab.stages
    first_bad = check_finite_steps(entry.sums_out, y)
    if first_bad is not None:
        raise _nonfinite(tab.name, grid, save_idx, states, y0, first_bad, nfe)
    sol = Solution(
        y=y, nfe=nfe, n_accepted=n, method=tab.name, t=float(grid[-1]), stats={"cuda_graph": True}
    )
    if save_idx:
        sol.ts, sol.ys = grid[save_idx], torch.stack(states)
    return sol
