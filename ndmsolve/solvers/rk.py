"""One explicit Runge–Kutta step driven by a tableau; shared by fixed and adaptive loops.

Linear combinations use ``torch.add(y, k, alpha=h*a)`` (one fused kernel per term) and
skip zero coefficients, so e.g. Euler is exactly one field call plus one kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import Field
from .tableaus import Tableau

__all__ = ["rk_step", "make_fixed_step", "combine"]


def combine(y: Tensor, ks: Sequence[Tensor], terms, h: float) -> Tensor:
    """``y + h Σ_j w_j k_j`` over the (j, w_j) in ``terms``; a new tensor unless empty."""
    out = y
    for n, (j, w) in enumerate(terms):
        # The first add allocates a fresh tensor; the rest accumulate into it in place
        # (add's backward does not need its output, so this is autograd-safe).
        out = torch.add(y, ks[j], alpha=h * w) if n == 0 else out.add_(ks[j], alpha=h * w)
    return out


def rk_step(
    f: Field,
    tab: Tableau,
    stage_t: Sequence[Tensor],
    h: float,
    y: Tensor,
    k0: Tensor | None = None,
) -> tuple[Tensor, list[Tensor], Tensor | None]:
    """One explicit RK step of size ``h`` from ``y`` (any shape).

    Args:
        f: field ``f(t, y) -> dy/dt``.
        tab: the tableau.
        stage_t: stage times, one 0-dim tensor per stage (``stage_t[i] = t + c_i h``; pass the
            exact end time where ``c_i == 1``).
        h: signed step size (Python float, so no device sync is needed to use it).
        y: state at ``stage_t[0]``.
        k0: ``f(stage_t[0], y)`` if already known (FSAL reuse); saves one evaluation.

    Returns:
        ``(y1, ks, err)``: the new state (``y.shape``), the ``s`` stage derivatives and
        the embedded local error estimate ``h Σ b_err_i k_i`` (``None`` without one).
        For an FSAL tableau ``ks[-1] == f(t + h, y1)``.
    """
    rows, b, e = tab.sparse
    ks = [f(stage_t[0], y) if k0 is None else k0]
    yi = y
    for i in range(1, tab.stages):
        yi = combine(y, ks, rows[i], h)
        ks.append(f(stage_t[i], yi))
    # FSAL: the last stage's input already is y + h Σ b_j k_j.
    y1 = yi if tab.fsal else combine(y, ks, b, h)
    err = None
    if e is not None:
        err = torch.mul(ks[e[0][0]], h * e[0][1])
        for j, w in e[1:]:
            err.add_(ks[j], alpha=h * w)
    return y1, ks, err


def make_fixed_step(tab: Tableau):
    """``step(f, stage_t, h, y) -> y1``: ``rk_step`` without stage list or error estimate
    returned, its coefficients bound once (the fixed-step loop calls it every step)."""
    rows, b, _ = tab.sparse
    s = tab.stages
    if s == 1:
        ((_, w),) = b  # one-stage methods (Euler): a single fused update

        def step(f, stage_t, h, y):
            return torch.add(y, f(stage_t[0], y), alpha=h * w)

        return step

    def step(f, stage_t, h, y):
        ks = [f(stage_t[0], y)]
        for i in range(1, s):
            ks.append(f(stage_t[i], combine(y, ks, rows[i], h)))
        return combine(y, ks, b, h)

    return step
