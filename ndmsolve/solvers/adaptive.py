"""Adaptive explicit RK: an embedded pair's step and error estimate in the shared adaptive loop.

Split as in diffrax: the tableau gives the step and its error estimate (``rk.rk_step``), a
controller (``controllers.PIController``) turns the error ratio into the next step size,
and ``loops.AdaptiveRun`` decides acceptance, saving and failure. The error ratio is
``norm(err / (atol + rtol·max(|y0|, |y1|)))`` (``norms``); the step size is one scalar
for the whole batch. Saved states come from the step's interpolant (``dense``) by default,
so ``save_at`` changes no step; ``dense=False`` clips steps onto the save times instead.
Behaviour on NaN/inf and step collapse: docs/theory/solvers.md.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import FAULTS, CountedField, Field, NonFiniteError, Solution, time_tensor
from .controllers import PIController, pi_controller
from .dense import dense_polynomials, interpolate
from .loops import AdaptiveRun, Proposal, collapse_error
from .norms import Norm, error_ratio, resolve_norm, rms_norm, scalar_norm
from .registry import register
from .rk import rk_step
from .tableaus import Tableau, bosh3, dopri5, tsit5

__all__ = [
    "PIController",
    "solve_adaptive",
    "initial_step",
    "error_ratio",
    "collapse_error",
    "EmbeddedRK",
]


def initial_step(
    f: Field,
    t0: float,
    y0: Tensor,
    f0: Tensor,
    direction: float,
    order: int,
    rtol: float,
    atol: float,
    norm: Norm = rms_norm,
) -> float:
    """Hairer, Nørsett & Wanner (Solving ODEs I, II.4) starting step; one field call.
    Its three norms are the solve's error norm (RMS in the book).

    Returns a signed step (sign ``direction``). ``f`` is called once more at
    ``t0 + h0``; callers count that evaluation.
    """
    with torch.no_grad():
        scale = y0.abs().mul(rtol).add_(atol)
        d0, d1 = torch.stack(
            [scalar_norm(norm, y0 / scale), scalar_norm(norm, f0 / scale)]
        ).tolist()
        h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
        f1 = f(time_tensor(t0 + direction * h0, y0), torch.add(y0, f0, alpha=direction * h0))
        d2 = float(scalar_norm(norm, (f1 - f0) / scale)) / h0
    if not math.isfinite(d2):
        return direction * h0  # the trial point is bad; let step rejection shrink from h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return direction * min(100 * h0, h1)


class EmbeddedRK:
    """The ``loops.AdaptiveStepper`` of an embedded RK pair: ``rk_step`` from ``(t, y)``
    with the first stage ``k0`` carried over (FSAL) or evaluated after each accepted step."""

    retry_faults = True  # a NaN/inf report from the field shrinks the step onto it
    limit_hint = " (the problem may be stiff)"

    def __init__(self, f: Field, tab: Tableau, rtol: float, atol: float, norm: Norm):
        self.f, self.tab, self.name = CountedField(f), tab, tab.name
        self.rtol, self.atol, self.norm = rtol, atol, norm
        self.k0 = self.last = None  # last: (y, ks, h) of the last attempt, for interpolation

    @property
    def nfe(self) -> int:
        return self.f.nfe

    def stats(self, h: float, final: bool) -> dict:
        return {"h_last": h} if final else {"h": h}

    def start(self, run: AdaptiveRun, h0: float | None) -> float:
        """Evaluate the first stage at ``(t0, y0)``; the first step (``h0``, or Hairer's)."""
        t0, y0, tab = run.t0, run.y0, self.tab
        h = math.nan
        try:
            self.k0 = self.f(time_tensor(t0, y0), y0)
            if h0 is None:
                tol = (self.rtol, self.atol, self.norm)
                h = initial_step(self.f, t0, y0, self.k0, run.direction, tab.order, *tol)
        except FAULTS as e:  # the field reported NaN/inf itself before the first step
            raise run.located(e, None) from None
        if not bool(torch.isfinite(self.k0).all()):
            raise NonFiniteError(
                f"{tab.name}: the field is NaN/inf at the initial state (t={t0:.6g})",
                t=t0,
                step=0,
                partial=run.partial(),
            )
        return h if h0 is None else run.direction * abs(float(h0))

    def attempt(self, run: AdaptiveRun, t_new: float, h: float) -> Proposal:
        t, y = run.t, run.y
        # One host-to-device copy for all stage times (one per stage would each block on CUDA).
        stage_t = torch.tensor(
            [t_new if c == 1.0 else t + c * h for c in self.tab.c], dtype=y.dtype, device=y.device
        ).unbind()
        y1, ks, err = rk_step(self.f, self.tab, stage_t, h, y, self.k0)
        self.last = (y, ks, h)
        with torch.no_grad():  # step control is not differentiated through
            ratio = error_ratio(err, y, y1, self.rtol, self.atol, self.norm)
        return Proposal(y1, ratio)

    def accept(self, run: AdaptiveRun) -> None:
        ks = self.last[1]
        try:
            self.k0 = ks[-1] if self.tab.fsal else self.f(time_tensor(run.t, run.y0), run.y)
        except FAULTS as e:
            raise run.located(e, None) from None

    def interpolate(self, thetas: list[float]) -> list[Tensor]:
        y, ks, h = self.last
        return interpolate(self.tab, y, ks, h, thetas)


def solve_adaptive(
    f: Field,
    y0: Tensor,
    t0: float,
    t1: float,
    tab: Tableau,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
    h0: float | None = None,
    save_at: Tensor | None = None,
    controller=None,
    norm="rms",
    dense: bool | None = None,
    pi_coeffs: tuple[float, float] | None = None,
) -> Solution:
    """Integrate ``f`` from ``t0`` to ``t1`` (either direction) with an embedded pair.

    Args:
        f: field ``f(t, y) -> dy/dt``; ``t`` a 0-dim tensor of ``y0``'s dtype.
        y0: initial state, any shape.
        t0, t1: start and end times (floats, ``t0 != t1``).
        tab: a tableau with ``b_err`` (bosh3, dopri5, tsit5).
        rtol, atol: tolerances of the mixed error norm.
        max_steps: bound on attempted (accepted + rejected) steps.
        h0: first step size magnitude; ``None`` picks it by Hairer's rule (+1 NFE).
        save_at: (S,) strictly monotone times in ``[t0, t1]`` in the integration direction.
        controller: a ``controllers`` object; default ``PIController(tab.error_order)``
            with ``pi_coeffs = (pcoeff, icoeff)`` when given.
        norm: the error norm, a name in ``norms.NORMS`` or a callable (``norms`` module).
        dense: save states by the step's interpolant (``dense`` module), so ``save_at``
            changes no step and costs no NFE; default: whenever the tableau has one.
            ``False`` clips steps to land on each save time instead.

    Returns:
        ``Solution`` with ``y`` at ``t1``; ``ts, ys`` ((S,), (S, *y0.shape)) if ``save_at``.
        ``nfe`` counts every field call (initial-step probe and rejected steps included).

    Raises:
        StepLimitError: ``max_steps`` attempts before reaching ``t1``.
        NonFiniteError: the field or the state stayed NaN/inf as the step collapsed.
        SolverError: the step size collapsed for a finite but too large error.
    """
    if not tab.adaptive:
        raise ValueError(f"method {tab.name!r} has no error estimate; use it with fixed steps")
    norm = resolve_norm(norm)
    if controller is not None and pi_coeffs is not None:
        raise ValueError("pass either controller or pi_coeffs, not both")
    controller = controller or pi_controller(tab.error_order, pi_coeffs)
    dense = dense_polynomials(tab) is not None if dense is None else bool(dense)
    stepper = EmbeddedRK(f, tab, rtol, atol, norm)
    run = AdaptiveRun(
        stepper, controller, y0, t0, t1, save_at=save_at, dense=dense, max_steps=max_steps
    )
    run.start(stepper.start(run, h0))
    return run.run()


def _adaptive_method(tab: Tableau):
    def run(f: Field, y0: Tensor, t0: float, t1: float, **kwargs) -> Solution:
        return solve_adaptive(f, y0, t0, t1, tab, **kwargs)

    return run


for _tab, _what in (
    (bosh3, "Bogacki-Shampine 3(2)"),
    (dopri5, "Dormand-Prince 5(4)"),
    (tsit5, "Tsitouras 5(4)"),
):
    register(
        _tab.name,
        family="ode",
        stepping="adaptive",
        order=_tab.order,
        nfe_per_step=_tab.stages - 1 if _tab.fsal else _tab.stages,
        run=_adaptive_method(_tab),
        needs_jvp=True,
        dense_output=True,
        description=f"{_what} embedded pair, PI step control",
    )
