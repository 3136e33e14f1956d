"""What every solver shares: the result type, the typed errors and an NFE-counting field.

Solvers know nothing about diffusion. A field is any callable ``f(t, y) -> dy/dt`` with
``t`` a 0-dim tensor (torchdiffeq's convention) and ``y`` a tensor of any shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .._checks import NonFiniteOutputError
from .cudagraph import field_id

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
    ts: Tensor | None = None
    ys: Tensor | None = None
    nfe: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    method: str = ""
    t: float = float("nan")
    stats: dict = field(default_factory=dict)


def save_targets(save_at, t0: float, t1: float, y0: Tensor):
    """The stopping points of an adaptive solve with ``save_at``.

    Returns ``(targets, save_flags, saved_t, saved_y)``: the times the step is clipped
    to land on (the save times after ``t0``, then ``t1`` unless it is the last save
    time), whether each is a save time, and the lists of saved times/states, which
    already hold ``y0`` for save times equal to ``t0``.
    """
    save_ts = (
        [] if save_at is None else [float(s) for s in torch.as_tensor(save_at).double().tolist()]
    )
    saved_t: list[float] = []
    saved_y: list[Tensor] = []
    while save_ts and save_ts[0] == t0:  # save_at may include t0 itself
        saved_t.append(save_ts.pop(0))
        saved_y.append(y0)
    targets = save_ts + ([] if save_ts and save_ts[-1] == t1 else [t1])
    save_flags = [True] * len(save_ts) + [False] * (len(targets) - len(save_ts))
    return targets, save_flags, saved_t, saved_y


def attach_saved(sol: Solution, saved_t: list, saved_y: list, like: Tensor) -> Solution:
    """Set ``sol.ts`` / ``sol.ys`` from the saved times and states (if any), ``ts`` in
    ``like``'s dtype and device; returns ``sol``."""
    if saved_y:
        sol.ts = torch.tensor(saved_t, dtype=like.dtype, device=like.device)
        sol.ys = torch.stack(saved_y)
    return sol


def merge_solutions(sols: list, y: Tensor, dim: int = 0) -> Solution:
    """One ``Solution`` for chunks solved one after another: ``y`` (the concatenated
    states), ``nfe`` and step counts summed over the chunks, saved states concatenated
    along the batch (``ys`` dim ``dim + 1``); ``stats["chunks"]`` keeps each chunk's
    ``(nfe, n_accepted, n_rejected)``."""
    first = sols[0]
    return Solution(
        y=y,
        ts=first.ts,
        ys=None if first.ys is None else torch.cat([s.ys for s in sols], dim=dim + 1),
        nfe=sum(int(s.nfe) for s in sols),
        n_accepted=sum(s.n_accepted for s in sols),
        n_rejected=sum(s.n_rejected for s in sols),
        method=first.method,
        t=first.t,
        stats={"chunks": [(int(s.nfe), s.n_accepted, s.n_rejected) for s in sols]},
    )


class SolverError(RuntimeError):
    """A solve that could not finish. ``partial`` holds the solution up to ``t``."""

    def __init__(self, message: str, *, t: float, step: int, partial: Solution | None = None):
        super().__init__(message)
        self.t = float(t)
        self.step = int(step)
        self.partial = partial

    def with_context(self, context: str) -> SolverError:
        """The same error (type, t, step, partial) with ``context`` appended to the message."""
        return _rebuild(self, f"{self}{context}")


class NonFiniteError(SolverError):
    """A state or field value became NaN/inf at time ``t`` in step ``step``.

    ``quantity`` says what: ``"the state"``, or a network's output (e.g. ``"x_hat (the
    output of predictor (MLP))"``) when the field itself reported it. ``step`` is -1 only
    while a field's report travels up to the solver, which fills it in (``locate``).
    """

    def __init__(
        self,
        message: str,
        *,
        t: float,
        step: int,
        partial: Solution | None = None,
        quantity: str = "the state",
    ):
        super().__init__(message, t=t, step=step, partial=partial)
        self.quantity = quantity


def _rebuild(err: SolverError, message: str) -> SolverError:
    extra = {"quantity": err.quantity} if isinstance(err, NonFiniteError) else {}
    return type(err)(message, t=err.t, step=err.step, partial=err.partial, **extra)


#: what a field raises when its own output is NaN/inf: a model's check (``_checks``) or
#: ``field_fault``; the solver loops catch these and say in which step it happened
FAULTS = (NonFiniteError, NonFiniteOutputError)


def output_quantity(name: str) -> str:
    """How an error names the output of network ``name`` ("predictor (MLP)", ...)."""
    return f"x_hat (the output of {name})" if name.startswith("predictor") else f"{name}'s output"


def field_fault(err: NonFiniteOutputError, t) -> NonFiniteError:
    """A model's non-finite report ``err`` as the ``NonFiniteError`` of a field evaluated
    at time ``t``; ``step`` is -1 until the solver running the field fills it in."""
    t = float(t)
    quantity = output_quantity(err.name)
    return NonFiniteError(f"{quantity} is NaN/inf at t={t:.6g}", t=t, step=-1, quantity=quantity)


def locate(
    err: Exception,
    method: str,
    step: int,
    t_from: float,
    t_to: float | None,
    *,
    partial: Solution | None = None,
    step_word: str = "step",
) -> Exception:
    """A field's fault (one of ``FAULTS``) raised in step ``step`` (from ``t_from`` to
    ``t_to``, or None before the first step) of ``method``, as a ``NonFiniteError`` whose message names both; ``err``
    itself when it already names its step (a nested solve). A model's own report
    (``NonFiniteOutputError``) carries no time: ``t_from`` stands for it."""
    if isinstance(err, NonFiniteError):
        if err.step >= 0:
            return err
        t, quantity = err.t, err.quantity
    else:
        t, quantity = float(t_from), output_quantity(err.name)
    span = "" if t_to is None else f" (t={float(t_from):.6g} -> {float(t_to):.6g})"
    return NonFiniteError(
        f"{method}: {quantity} is NaN/inf at t={t:.6g}, in {step_word} {step}{span}",
        t=t,
        step=step,
        partial=partial,
        quantity=quantity,
    )


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


def time_tensor(value: float, like: Tensor) -> Tensor:
    """A Python time as the 0-dim tensor a field receives (``like``'s dtype and device)."""
    return torch.tensor(value, dtype=like.dtype, device=like.device)


def all_finite(x: Tensor) -> bool:
    """True when every entry of ``x`` is finite (one host sync)."""
    return bool(torch.isfinite(x).all())


class CheckedField:
    """Wraps a user's field: its first result must be a tensor of ``y``'s shape and dtype
    (an error naming the field then, not a broadcast error steps later)."""

    __slots__ = ("f", "name", "checked")

    def __init__(self, f: Field, name: str = "f"):
        self.f, self.name, self.checked = f, name, False

    @property
    def graph_key(self) -> tuple:
        """The wrapped field's identity, so a CUDA graph captured for it is replayed."""
        return ("checked",) + field_id(self.f)

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        out = self.f(t, y)
        if not self.checked:
            if not isinstance(out, Tensor):
                raise TypeError(f"{self.name}(t, y) must return a tensor, got {type(out).__name__}")
            if out.shape != y.shape:
                raise ValueError(
                    f"{self.name}(t, y) must return y's shape {tuple(y.shape)}, "
                    f"got {tuple(out.shape)}"
                )
            if out.dtype != y.dtype:
                raise TypeError(
                    f"{self.name}(t, y) must return y's dtype {y.dtype}, got {out.dtype}"
                )
            self.checked = True
        return out


def check_grid_step(z: Tensor, grid: Tensor, step: int, *, nfe: int, method: str) -> None:
    """Raise ``NonFiniteError`` (t, step and the partial solution) if state ``z``, reached at
    ``grid[step + 1]`` by a grid sampler, holds NaN/inf."""
    if all_finite(z):
        return
    t = float(grid[step + 1])
    partial = Solution(y=z, nfe=nfe, n_accepted=step + 1, method=method, t=t)
    raise NonFiniteError(
        f"{method or 'grid'} sampler produced NaN/inf at t={t:.6g} (step {step}): the state "
        f"is NaN/inf",
        t=t,
        step=step,
        partial=partial,
    )


def grid_solution(z: Tensor, grid: Tensor, ys, *, nfe: int, method: str, stats: dict) -> Solution:
    """The ``Solution`` of a grid sampler that took every step of ``grid`` ((N+1,)); ``ys`` is
    the list of the N+1 states when the path was saved, else None."""
    return Solution(
        y=z,
        ts=grid.clone() if ys is not None else None,
        ys=torch.stack(ys) if ys is not None else None,
        nfe=nfe,
        n_accepted=grid.shape[0] - 1,
        n_rejected=0,
        method=method,
        t=float(grid[-1]),
        stats=stats,
    )
