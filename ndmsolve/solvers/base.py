"""What every solver shares: the result type, the typed errors and an NFE-counting field.

Solvers know nothing about diffusion. A field is any callable ``f(t, y) -> dy/dt`` with
``t`` a 0-dim tensor (torchdiffeq's convention) and ``y`` a tensor of any shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

Field = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Solution:
    """Result of every solve.

    Attributes:
        y: state at the last time reached, shape ``y0.shape``.
        ts: saved times, shape ``(S,)``, or ``None`` when nothing was saved.
        ys: saved states, shape ``(S, *y0.shape)``, or ``None``.
        nfe: number of field evaluations over the batch (rejected steps included;
            for SDEs a drift+diffusion pair evaluated at one point counts once).
        n_accepted, n_rejected: step statistics (fixed-step solves reject nothing).
        method: the method's name.
        t: the time ``y`` belongs to (``t1`` for a finished solve).
        stats: free-form extra statistics (e.g. ``{"h_last": ...}``).
    """

    y: Tensor
    ts: Optional[Tensor] = None
    ys: Optional[Tensor] = None
    nfe: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    method: str = ""
    t: float = float("nan")
    stats: dict = field(default_factory=dict)


class SolverError(RuntimeError):
    """A solve that could not finish. ``partial`` holds the solution up to ``t``."""

    def __init__(self, message: str, *, t: float, step: int, partial: Optional[Solution] = None):
        super().__init__(message)
        self.t = float(t)
        self.step = int(step)
        self.partial = partial


class NonFiniteError(SolverError):
    """A state or field value became NaN/inf at time ``t`` in step ``step``."""


class StepLimitError(SolverError):
    """An adaptive solve used ``max_steps`` steps before reaching ``t1``."""


class CountedField:
    """Wraps a field and counts its evaluations (one call = one NFE over the batch)."""

    __slots__ = ("f", "nfe")

    def __init__(self, f: Field):
        self.f = f
        self.nfe = 0

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        self.nfe += 1
        return self.f(t, y)


def all_finite(x: Tensor) -> bool:
    """True when every entry of ``x`` is finite (one host sync)."""
    return bool(torch.isfinite(x).all())
