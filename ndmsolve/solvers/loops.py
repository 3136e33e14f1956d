"""The two step loops every ndmsolve method runs: fixed steps over a grid, and adaptive steps.

- ``run_fixed``: a scheme's ``step(i, y) -> y`` over N grid steps with no host sync; per
  step one device-side sum of the state, checked once at the end (``first_nonfinite``).
  Shared by the fixed-step ODE tableaus (eager and CUDA-graph) and the fixed-step SDE
  schemes.
- ``AdaptiveRun``: step clipping onto save times and ``t1``, accept/reject by a controller
  (``controllers``), saving (clipped or dense), step-collapse detection, the step limit,
  and the partial result of a failed solve. Shared by the embedded RK pairs (``adaptive``)
  and the embedded Euler–Maruyama/Heun pair (``sde``); each supplies only an
  ``AdaptiveStepper`` (an attempt returning the proposal and its error ratio).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from .base import (
    FAULTS,
    NonFiniteError,
    Solution,
    SolverError,
    StepLimitError,
    attach_saved,
    locate,
    save_targets,
)

__all__ = [
    "save_after",
    "run_fixed",
    "first_nonfinite",
    "nonfinite_step_error",
    "fixed_solution",
    "Proposal",
    "AdaptiveStepper",
    "AdaptiveRun",
    "collapse_error",
]


# --------------------------------------------------------------------------- fixed steps
def save_after(n: int, save_idx: Sequence[int]) -> list[bool]:
    """Per step of an N-step grid, whether to keep the state it produces (grid index
    ``i + 1`` in ``save_idx``; index 0 is the initial state, kept by the caller)."""
    flags = [False] * n
    for j in save_idx:
        if j > 0:
            flags[j - 1] = True
    return flags


def run_fixed(
    step: Callable[[int, Tensor], Tensor],
    y: Tensor,
    n: int,
    keep: Sequence[bool],
    on_fault: Callable[[Exception, int, Tensor], Exception],
):
    """Run ``y = step(i, y)`` for ``i < n``; no host syncs.

    Returns ``(y, saved, sums)``: the final state, the states of the steps with
    ``keep[i]`` in order, and per step the 0-dim sum of the state it produced (for
    ``first_nonfinite``). A field's own NaN/inf report (``base.FAULTS``) in step ``i``
    raises ``on_fault(err, i, y_before)``.
    """
    # Half precision would overflow a long sum of finite values; accumulate in float32.
    acc = torch.float32 if y.dtype in (torch.float16, torch.bfloat16) else None
    saved, sums = [], []
    for i in range(n):
        try:
            y = step(i, y)
        except FAULTS as e:
            raise on_fault(e, i, y) from None
        sums.append(y.sum(dtype=acc))
        if keep[i]:
            saved.append(y)
    return y, saved, sums


def first_nonfinite(sums: Tensor, y: Tensor) -> int | None:
    """Index of the first step whose state went non-finite, or ``None``.

    ``sums``: (N,) per step, the state's sum; ``y``: the final state. One host sync when
    all is well. A sum can also overflow for a finite state, so a non-finite sum only
    counts when the final state confirms it (NaN/inf, once in the state, stays there).
    """
    bad = ~torch.isfinite(sums)
    if not bool(bad.any()) or bool(torch.isfinite(y).all()):
        return None
    return int(bad.nonzero()[0, 0])


def nonfinite_step_error(
    method: str,
    grid: Tensor,
    save_idx: list[int],
    states: list[Tensor],
    y0: Tensor,
    step: int,
    nfe: int,
    *,
    check: str = "the field",
    stats: dict | None = None,
) -> NonFiniteError:
    """The error of a fixed-grid solve whose step ``step`` went non-finite; ``partial``
    holds the last good saved state (or ``y0``) and the saved states up to it."""
    good = [(j, s) for j, s in zip(save_idx, states) if j <= step]
    last_j, last_y = good[-1] if good else (0, y0)
    partial = Solution(
        y=last_y, nfe=nfe, n_accepted=step, method=method, t=float(grid[last_j]), stats=stats or {}
    )
    if good:
        partial.ts = grid[[j for j, _ in good]]
        partial.ys = torch.stack([s for _, s in good])
    t_bad, t_next = float(grid[step]), float(grid[step + 1])
    return NonFiniteError(
        f"{method}: the state became NaN/inf in step {step} (t={t_bad:.6g} -> {t_next:.6g}); "
        f"check {check} near t={t_bad:.6g}",
        t=t_bad,
        step=step,
        partial=partial,
    )


def fixed_solution(
    method: str,
    grid: Tensor,
    y0: Tensor,
    run: tuple,
    save_idx: list[int],
    nfe: int,
    *,
    check: str = "the field",
    stats: dict | None = None,
    result_stats: dict | None = None,
) -> Solution:
    """The ``Solution`` of ``run = run_fixed(...)`` (``(y, saved, sums)``, ``sums`` a list or
    stacked) over ``grid`` ((N+1,)) with ``save_idx`` kept, or the ``nonfinite_step_error``
    (naming ``check``). ``stats`` go to the solution and a partial one, ``result_stats``
    to the solution only."""
    y, saved, sums = run
    states = [y0] * (bool(save_idx) and save_idx[0] == 0) + list(saved)  # grid index order
    first_bad = first_nonfinite(sums if isinstance(sums, Tensor) else torch.stack(sums), y)
    if first_bad is not None:
        raise nonfinite_step_error(
            method, grid, save_idx, states, y0, first_bad, nfe, check=check, stats=stats
        )
    all_stats = {**(stats or {}), **(result_stats or {})}
    sol = Solution(
        y=y, nfe=nfe, n_accepted=grid.numel() - 1, method=method, t=float(grid[-1]), stats=all_stats
    )
    if save_idx:
        sol.ts, sol.ys = grid[save_idx], torch.stack(states)
    return sol


# --------------------------------------------------------------------------- adaptive steps
class Proposal(NamedTuple):
    """One attempted step: the proposed state (``y0.shape``) and its 0-dim error ratio
    (computed without autograd), or ``fault``, the field's own NaN/inf report."""

    y: Tensor | None
    ratio: Tensor | None
    fault: Exception | None = None


class AdaptiveStepper(Protocol):
    """What a method supplies to ``AdaptiveRun``.

    ``attempt(run, t_new, h)`` tries the step from ``(run.t, run.y)`` to ``t_new``
    (``h = t_new - run.t``); ``accept(run)`` is called after ``run.t, run.y`` moved to
    the accepted proposal (e.g. to evaluate the next first stage); ``interpolate(thetas)``
    gives states inside the last attempt (dense output; only with ``dense=True``).
    ``retry_faults``: a field's NaN/inf report in ``attempt`` is a rejected step (True)
    or raised as it is (False). ``limit_hint`` ends the step-limit message; ``stats``
    the solution's extra statistics (``final``: of a finished solve).
    """

    name: str
    nfe: int
    retry_faults: bool
    limit_hint: str

    def stats(self, h: float, final: bool) -> dict: ...

    def attempt(self, run: AdaptiveRun, t_new: float, h: float) -> Proposal: ...

    def accept(self, run: AdaptiveRun) -> None: ...

    def interpolate(self, thetas: list[float]) -> list[Tensor]: ...


class AdaptiveRun:
    """One adaptive solve from ``t0`` to ``t1`` (either direction): the loop, and the
    state a stepper and a partial result read (``t``, ``y``, ``h``, ``n_acc``, ``n_rej``).

    Args:
        stepper: the method's ``AdaptiveStepper``; controller: a ``controllers`` object.
        y0: initial state (any shape); t0, t1: floats, ``t0 != t1``.
        save_at: (S,) save times (``base.save_targets``) or ``None``.
        dense: save by the stepper's interpolant (steps aim at ``t1`` only) instead of
            clipping steps onto each save time.
        max_steps: bound on attempted (accepted + rejected) steps.
    """

    def __init__(
        self, stepper, controller, y0: Tensor, t0: float, t1: float, *, save_at, dense, max_steps
    ):
        self.stepper, self.controller, self.y0 = stepper, controller, y0
        self.t0, self.t1, self.max_steps = t0, t1, max_steps
        self.direction = 1.0 if t1 > t0 else -1.0
        self.span = abs(t1 - t0)
        # Steps below ~10 ulps of t (in y's dtype: the field sees t in that dtype) are collapse.
        self.h_min_rel = 10 * torch.finfo(y0.dtype).eps
        self.targets, self.save_flags, self.saved_t, self.saved_y = save_targets(
            save_at, t0, t1, y0
        )
        self.pending: list[float] = []  # dense: save times not reached yet
        if dense:  # interpolated as steps pass them
            self.pending = [tt for tt, f in zip(self.targets, self.save_flags) if f]
            self.targets, self.save_flags = [t1], [False]
        self.t, self.y, self.h = t0, y0, math.nan
        self.n_acc = self.n_rej = 0

    def partial(self, final: bool = False) -> Solution:
        """The solution so far (``y`` at ``t``, counts, saved states)."""
        sol = Solution(
            y=self.y,
            nfe=self.stepper.nfe,
            n_accepted=self.n_acc,
            n_rejected=self.n_rej,
            method=self.stepper.name,
            t=self.t,
            stats=self.stepper.stats(self.h, final),
        )
        return attach_saved(sol, self.saved_t, self.saved_y, self.y0)

    def located(self, err: Exception, t_to: float | None) -> NonFiniteError:
        """A field's NaN/inf report (``base.FAULTS``) in the current step, towards ``t_to``."""
        return locate(err, self.stepper.name, self.n_acc, self.t, t_to, partial=self.partial())

    def start(self, h: float) -> None:
        """Set the first step's size (its sign follows the direction; at most the span)."""
        self.h = self.direction * min(abs(h), self.span)

    def run(self) -> Solution:
        """Step until ``t1``; the finished ``Solution`` (``t = t1``)."""
        ti, cstate = 0, self.controller.init()  # ti: index of the next target
        while ti < len(self.targets):
            if self.n_acc + self.n_rej >= self.max_steps:
                raise self._limit_error()
            target = self.targets[ti]
            # Clip to land exactly on the next save/end time.
            clipped = abs(self.h) >= abs(target - self.t)
            h_try = (target - self.t) if clipped else self.h
            t_new = target if clipped else self.t + h_try
            ratio, fault, prop = self._attempt(t_new, h_try)
            accepted, h_next, cstate = self.controller.adapt(ratio, h_try, cstate)
            if accepted:
                self._accept(prop, t_new, h_try)
                if clipped:
                    # a clip for saving should not throttle the step
                    h_next = self.direction * max(abs(h_next), abs(self.h))
                    if self.save_flags[ti]:
                        self.saved_t.append(self.t)
                        self.saved_y.append(self.y)
                    ti += 1
            else:
                self.n_rej += 1
            self.h = self.direction * min(abs(h_next), self.span)
            if ti < len(self.targets) and abs(self.h) < self.h_min_rel * max(
                abs(self.t), self.span
            ):
                ratio = ratio if math.isfinite(ratio) else math.nan
                raise collapse_error(
                    self.stepper.name, self.h, self.t, self.n_acc, ratio, fault, self.partial()
                )
        sol = self.partial(final=True)
        sol.t = self.t1
        return sol

    def _attempt(self, t_new: float, h: float):
        """``(ratio, fault, proposal)``: ``ratio`` a float, ``inf`` when not finite."""
        try:
            prop = self.stepper.attempt(self, t_new, h)
        except FAULTS as e:  # the field's own NaN/inf report: rejected like a NaN state
            if not self.stepper.retry_faults:
                raise
            prop = Proposal(None, None, locate(e, self.stepper.name, self.n_acc, self.t, t_new))
        if prop.fault is not None:
            return math.inf, prop.fault, prop
        with torch.no_grad():  # step control is not differentiated through
            probe = torch.stack([prop.ratio.double(), prop.y.sum(dtype=torch.float64)])
        ratio, ysum = probe.tolist()  # the one sync per attempt
        finite = math.isfinite(ratio) and math.isfinite(ysum)
        return (ratio if finite else math.inf), None, prop

    def _accept(self, prop: Proposal, t_new: float, h: float) -> None:
        self.n_acc += 1
        pending, d = self.pending, self.direction
        if pending and d * (pending[0] - t_new) <= 0:  # save times in (t, t_new]
            n_in = 0
            while n_in < len(pending) and d * (pending[n_in] - t_new) <= 0:
                n_in += 1
            inside, self.pending = pending[:n_in], pending[n_in:]
            thetas = [(s - self.t) / h for s in inside if s != t_new]
            self.saved_y.extend(self.stepper.interpolate(thetas))
            if inside[-1] == t_new:
                self.saved_y.append(prop.y)
            self.saved_t.extend(inside)
        self.t, self.y = t_new, prop.y
        self.stepper.accept(self)

    def _limit_error(self) -> StepLimitError:
        return StepLimitError(
            f"{self.stepper.name}: reached max_steps={self.max_steps} attempted steps at "
            f"t={self.t:.6g} before t1={self.t1:.6g} ({self.n_acc} accepted, {self.n_rej} "
            f"rejected); raise max_steps or loosen rtol/atol{self.stepper.limit_hint}",
            t=self.t,
            step=self.n_acc,
            partial=self.partial(),
        )


def collapse_error(
    name: str, h: float, t: float, step: int, ratio: float, fault, partial: Solution
) -> SolverError:
    """The error of an adaptive solve whose step size collapsed at ``t``: ``NonFiniteError``
    after a non-finite attempt (``fault``: the field's own report in it, if any; its time
    becomes the error's ``t``), else ``SolverError`` (an error ratio too large)."""
    head = f"{name}: step size collapsed to {abs(h):.3g} at t={t:.6g} (step {step}); "
    if math.isfinite(ratio):
        why = f"the error ratio is {ratio:.3g} even for tiny steps"
        return SolverError(head + why, t=t, step=step, partial=partial)
    if fault is None:
        why = "the field or state is NaN/inf there"
        return NonFiniteError(head + why, t=t, step=step, partial=partial)
    why = f"{fault.quantity} is NaN/inf there (last at t={fault.t:.16g})"
    return NonFiniteError(
        head + why, t=fault.t, step=step, partial=partial, quantity=fault.quantity
    )
