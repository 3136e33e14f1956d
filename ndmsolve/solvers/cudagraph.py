"""CUDA-graph capture and replay of a step loop, cached by key (a leaf: imports nothing of ndmsolve).

A fixed-step solve has static shapes and a static time grid, so its whole step loop can
be captured once as a CUDA graph and replayed: one launch instead of thousands of
kernel launches, no Python in the loop. ``fixed.solve_fixed_graphed`` uses it when ``y0``
is on CUDA, ``cuda_graph`` allows it and autograd is off (capturing backward passes is out
of scope).

Cache: one captured graph per key (the caller's: field identity ``field_id``, shape,
dtype, device, grid, method, save indices), least recently used first out,
``MAX_CACHED`` entries. An entry holds a strong reference to the field so its id cannot
be reused by another object while the graph lives. The graph reads the field's
parameters from their memory at replay, so in-place weight updates (``optimizer.step``,
``load_state_dict``) are seen; replacing parameter tensors is not — call ``clear_cache()``.

If capture fails (e.g. the field syncs with the host via ``.item()``/``print``, or uses
an op that cannot be captured) ``replay`` warns once per key and returns ``None``; the
caller then runs eagerly.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["replay", "field_id", "capture_cuda", "clear_cache", "MAX_CACHED"]

MAX_CACHED = 8
_CACHE: OrderedDict[tuple, object] = OrderedDict()
_FAILED = object()  # capture failed for this key: run eagerly without re-trying


class _Captured:
    __slots__ = ("replay", "keep", "static_x", "out")


def clear_cache() -> None:
    """Drop every captured graph (frees their memory pools)."""
    _CACHE.clear()


def field_id(f: Callable) -> tuple:
    """A field's identity for cache keys: its ``graph_key`` attribute when it has one (a
    wrapper rebuilt per call names the field it wraps), a bound method by its parts
    (a new object at each attribute access), else ``id(f)``."""
    key = getattr(f, "graph_key", None)
    if key is not None:
        return ("graph_key",) + tuple(key)
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


def _capture(keep, x: Tensor, body, warmup) -> _Captured:
    c = _Captured()
    c.keep, c.static_x = keep, x.detach().clone()

    def run_body():
        c.out = body(c.static_x)

    c.replay = _capture_fn(lambda: warmup(c.static_x), run_body, x.device)
    return c


def replay(
    key: tuple,
    x: Tensor,
    body: Callable[[Tensor], tuple],
    warmup: Callable[[Tensor], object],
    *,
    keep=None,
    what: str = "step",
) -> tuple | None:
    """``body(x)`` through the CUDA graph cached under ``key`` (captured on first use).

    Args:
        key: the cache key; x: the one input tensor (copied into the graph's static input).
        body: ``body(x_static) -> tuple`` of tensors (or ``None`` entries), the captured work.
        warmup: run (twice is the caller's choice) before capture, off the graph.
        keep: an object the entry holds a reference to (the field, so its id stays unique).
        what: names the loop in the warning of a failed capture.

    Returns:
        ``body``'s tuple, each tensor cloned out of the graph's pool; ``None`` (after a
        warning, once per key) when the loop cannot be captured.
    """
    entry = _CACHE.get(key)
    if entry is None:
        try:
            entry = _capture(keep, x, body, warmup)
        except Exception as exc:  # any capture failure: eager fallback, announced
            warnings.warn(
                f"CUDA-graph capture of the {what} loop failed ({type(exc).__name__}: {exc}); "
                "running eagerly. A field that syncs with the host (.item(), print, "
                "data-dependent shapes) cannot be captured; pass cuda_graph=False to silence this.",
                RuntimeWarning,
                stacklevel=4,
            )
            entry = _FAILED
        _CACHE[key] = entry
        while len(_CACHE) > MAX_CACHED:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    if entry is _FAILED:
        return None
    entry.static_x.copy_(x)
    entry.replay()
    # Outputs live in the graph's pool and are overwritten by the next replay: copy them.
    return tuple(None if o is None else o.clone() for o in entry.out)
