"""Adaptive explicit RK with an embedded error estimate and a PI step-size controller.

Split as in diffrax: the tableau gives the step and its error estimate (``rk.rk_step``),
``PIController`` turns the error into the next step size, and the loop here decides
acceptance, saving and failure.

- Error norm: ``norm(err / (atol + rtol·max(|y0|, |y1|)))`` with ``norm`` one of
  ``norms.NORMS`` ("rms" over the whole tensor, "sample_max", "max") or a callable; the
  step size is one scalar for the whole batch. A step is accepted when it is ≤ 1.
- One host sync per attempted step (the accept/reject decision needs it); the error
  norm and a finiteness probe of the new state come back together.
- Saving: by default ``save_at`` states come from the step's interpolant (``dense``
  module: dopri5's and tsit5's continuous extensions, cubic Hermite for bosh3), so saving
  changes no step and costs no NFE. With ``dense=False`` steps are clipped to land exactly
  on each requested time instead (saved states carry the solver's full accuracy); after a
  clipped step the controller resumes from the larger of its proposal and the step it
  wanted before clipping, so dense ``save_at`` does not throttle the step size.
- ``max_steps`` bounds attempted steps (accepted + rejected), so a solve always ends.
- NaN/inf: a non-finite trial step is rejected and the step shrunk by ``factormin``;
  ``NonFiniteError`` is raised only if the step size collapses (below ~10 ulps of t)
  while the last trial was non-finite. A collapse with a finite error raises
  ``SolverError`` (e.g. a blow-up or a tolerance the dtype cannot meet). A field that
  reports its own NaN/inf output (``base.FAULTS``, e.g. an NDM's predictor check) is
  treated like a non-finite trial: the step shrinks onto the time where it starts, and
  the error names that time, the step and the quantity.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import (
    FAULTS,
    CountedField,
    Field,
    NonFiniteError,
    Solution,
    SolverError,
    StepLimitError,
    attach_saved,
    locate,
    save_targets,
    time_tensor,
)
from .dense import dense_polynomials, interpolate
from .norms import Norm, resolve_norm, rms_norm
from .registry import register
from .rk import rk_step
from .tableaus import Tableau, bosh3, dopri5, tsit5

__all__ = ["PIController", "solve_adaptive", "initial_step", "error_ratio"]


class PIController:
    """PI step-size controller (Söderlind; as diffrax's ``PIDController`` with dcoeff=0).

    With ``r_n`` the error ratio of the current step and ``r_{n-1}`` that of the last
    accepted one, ``k`` the tableau's ``error_order``:

        factor = safety · r_n^(−(icoeff + pcoeff)/k) · r_{n−1}^(pcoeff/k)

    clipped to ``[1, factormax]`` after an accepted step and to ``[factormin, safety]``
    after a rejected one (a rejected step always shrinks; an accepted one never does).
    ``pcoeff=0, icoeff=1`` is the classical I controller. The defaults (0.2, 0.4) are a
    damped PI choice from the literature that copes with the mildly stiff fields of
    diffusion sampling near t = 0 without many rejections.
    """

    def __init__(
        self,
        error_order: int,
        *,
        pcoeff: float = 0.2,
        icoeff: float = 0.4,
        safety: float = 0.9,
        factormin: float = 0.2,
        factormax: float = 10.0,
    ):
        if not (0.0 < factormin < 1.0 < factormax) or not (0.0 < safety <= 1.0):
            raise ValueError("PIController needs 0 < factormin < 1 < factormax and 0 < safety <= 1")
        if icoeff + pcoeff <= 0 or pcoeff < 0:
            raise ValueError("PIController needs pcoeff >= 0 and icoeff + pcoeff > 0")
        self.k = float(error_order)
        self.pcoeff, self.icoeff = float(pcoeff), float(icoeff)
        self.safety, self.factormin, self.factormax = (
            float(safety),
            float(factormin),
            float(factormax),
        )
        self.prev_ratio = 1.0  # error ratio of the last accepted step

    def propose(self, h: float, ratio: float, accepted: bool) -> float:
        """Next step size after a step of size ``h`` with error ratio ``ratio``."""
        if not math.isfinite(ratio):
            return h * self.factormin
        if ratio == 0.0:
            factor = self.factormax
        else:
            factor = (
                self.safety
                * ratio ** (-(self.icoeff + self.pcoeff) / self.k)
                * self.prev_ratio ** (self.pcoeff / self.k)
            )
        if accepted:
            factor = min(max(factor, 1.0), self.factormax)
            # A zero error carries no information for the P term; keep the old ratio then.
            if ratio > 0.0:
                self.prev_ratio = ratio
        else:
            factor = min(max(factor, self.factormin), self.safety)
        return h * factor


def _pair(pi_coeffs) -> tuple[float, float]:
    ok = (
        isinstance(pi_coeffs, (tuple, list))
        and len(pi_coeffs) == 2
        and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in pi_coeffs)
    )
    if not ok:
        raise ValueError(f"pi_coeffs must be a pair (pcoeff, icoeff) of numbers, got {pi_coeffs!r}")
    return float(pi_coeffs[0]), float(pi_coeffs[1])


def error_ratio(
    err: Tensor, y0: Tensor, y1: Tensor, rtol: float, atol: float, norm: Norm = rms_norm
) -> Tensor:
    """0-dim ``norm(err / (atol + rtol·max(|y0|, |y1|)))`` (``norms`` module)."""
    scale = torch.maximum(y0.abs(), y1.abs()).mul_(rtol).add_(atol)
    return _scalar(norm(err / scale))


def _scalar(r) -> Tensor:
    """A norm's value, checked to be 0-dim (a shape check: no host sync)."""
    if not isinstance(r, Tensor) or r.ndim != 0:
        raise ValueError(
            f"norm must return a 0-dim tensor, got "
            f"{tuple(r.shape) if isinstance(r, Tensor) else type(r).__name__}"
        )
    return r


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
        d0, d1 = torch.stack([_scalar(norm(y0 / scale)), _scalar(norm(f0 / scale))]).tolist()
        h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
        f1 = f(time_tensor(t0 + direction * h0, y0), torch.add(y0, f0, alpha=direction * h0))
        d2 = float(_scalar(norm((f1 - f0) / scale))) / h0
    if not math.isfinite(d2):
        return direction * h0  # the trial point is bad; let step rejection shrink from h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return direction * min(100 * h0, h1)


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
    controller: PIController | None = None,
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
        controller: step-size controller; default ``PIController(tab.error_order)`` with
            ``pi_coeffs = (pcoeff, icoeff)`` when given.
        norm: the error norm, a name in ``norms.NORMS`` or a callable (``norms`` module).
        dense: save states by the step's interpolant (``dense`` module), so ``save_at``
            changes no step and costs no NFE; default: whenever the tableau has one.
            ``False`` clips steps to land on each save time instead (full step accuracy
            at the saved times, more steps).

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
    fc = CountedField(f)
    if controller is not None and pi_coeffs is not None:
        raise ValueError("pass either controller or pi_coeffs, not both")
    if controller is None:
        pc = (
            {}
            if pi_coeffs is None
            else dict(zip(("pcoeff", "icoeff"), _pair(pi_coeffs), strict=True))
        )
        controller = PIController(tab.error_order, **pc)
    ctrl = controller
    direction = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)
    # Steps below ~10 ulps of t (in y's dtype: the field sees t in that dtype) are collapse.
    h_min_rel = 10 * torch.finfo(y0.dtype).eps

    targets, save_flags, saved_t, saved_y = save_targets(save_at, t0, t1, y0)
    dense = dense_polynomials(tab) is not None if dense is None else bool(dense)
    pending: list[float] = []  # dense: save times not reached yet
    if dense:  # steps aim at t1 only; save times are interpolated as steps pass them
        pending = [tt for tt, flag in zip(targets, save_flags) if flag]
        targets, save_flags = [t1], [False]

    t, y = t0, y0
    n_acc = n_rej = 0

    def partial() -> Solution:
        sol = Solution(
            y=y,
            nfe=fc.nfe,
            n_accepted=n_acc,
            n_rejected=n_rej,
            method=tab.name,
            t=t,
            stats={"h": h},
        )
        return attach_saved(sol, saved_t, saved_y, y0)

    h = float("nan")
    try:
        k0 = fc(time_tensor(t0, y0), y0)
        if h0 is None:
            h = initial_step(fc, t0, y0, k0, direction, tab.order, rtol, atol, norm)
    except FAULTS as e:  # the field reported NaN/inf itself before the first step
        raise locate(e, tab.name, 0, t0, None, partial=partial()) from None
    if not bool(torch.isfinite(k0).all()):
        raise NonFiniteError(
            f"{tab.name}: the field is NaN/inf at the initial state (t={t0:.6g})",
            t=t0,
            step=0,
            partial=partial(),
        )
    if h0 is not None:
        h = direction * abs(float(h0))
    h = direction * min(abs(h), span)
    fault = None  # the field's own NaN/inf report in the last attempt

    ti = 0  # index of the next target
    while ti < len(targets):
        target = targets[ti]
        if n_acc + n_rej >= max_steps:
            raise StepLimitError(
                f"{tab.name}: reached max_steps={max_steps} attempted steps at t={t:.6g} before "
                f"t1={t1:.6g} ({n_acc} accepted, {n_rej} rejected); raise max_steps or loosen "
                f"rtol/atol (the problem may be stiff)",
                t=t,
                step=n_acc,
                partial=partial(),
            )
        # Clip to land exactly on the next save/end time.
        clipped = abs(h) >= abs(target - t)
        h_try = (target - t) if clipped else h
        t_new = target if clipped else t + h_try
        # One host-to-device copy for all stage times (one per stage would each block on CUDA).
        stage_t = torch.tensor(
            [t_new if c == 1.0 else t + c * h_try for c in tab.c], dtype=y0.dtype, device=y0.device
        ).unbind()
        try:
            y1, ks, err = rk_step(fc, tab, stage_t, h_try, y, k0)
            fault = None
        except FAULTS as e:  # the field's own NaN/inf report: rejected like a NaN state
            fault = locate(e, tab.name, n_acc, t, t_new)
        if fault is None:
            with torch.no_grad():  # step control is not differentiated through
                probe = torch.stack(
                    [
                        error_ratio(err, y, y1, rtol, atol, norm).double(),
                        y1.sum(dtype=torch.float64),
                    ]
                )
            ratio, ysum = probe.tolist()  # the one sync per attempt
        else:
            ratio = ysum = math.nan
        finite = math.isfinite(ratio) and math.isfinite(ysum)
        accepted = finite and ratio <= 1.0
        h_next = ctrl.propose(h_try, ratio if finite else math.inf, accepted)
        if accepted:
            n_acc += 1
            if pending and direction * (pending[0] - t_new) <= 0:  # save times in (t, t_new]
                n_in = 0
                while n_in < len(pending) and direction * (pending[n_in] - t_new) <= 0:
                    n_in += 1
                inside, pending = pending[:n_in], pending[n_in:]
                thetas = [(s - t) / h_try for s in inside if s != t_new]
                saved_y.extend(interpolate(tab, y, ks, h_try, thetas))
                if inside[-1] == t_new:
                    saved_y.append(y1)
                saved_t.extend(inside)
            t, y = t_new, y1
            try:
                k0 = ks[-1] if tab.fsal else fc(time_tensor(t, y0), y)
            except FAULTS as e:
                raise locate(e, tab.name, n_acc, t, None, partial=partial()) from None
            if clipped:
                h_next = direction * max(abs(h_next), abs(h))
                if save_flags[ti]:
                    saved_t.append(t)
                    saved_y.append(y)
                ti += 1
        else:
            n_rej += 1
        h = direction * min(abs(h_next), span)
        if ti < len(targets) and abs(h) < h_min_rel * max(abs(t), span):
            raise collapse_error(
                tab.name, h, t, n_acc, ratio if finite else math.nan, fault, partial()
            )

    sol = partial()
    sol.t = t1
    sol.stats = {"h_last": h}
    return sol


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
