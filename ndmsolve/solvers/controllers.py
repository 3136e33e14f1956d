"""Step-size controllers: an attempted step's error ratio -> accept or reject, and the next step.

One contract, after diffrax's ``AbstractStepSizeController`` (``init`` / ``adapt_step_size``)
and torchode's ``(accept, dt, state)``::

    state = controller.init()
    accept, h_next, state = controller.adapt(ratio, h, state)

``ratio`` is the attempt's error ratio (a Python float, ``inf`` for a non-finite attempt;
``norms`` module), ``h`` the signed step just attempted and ``h_next`` the signed step to
try next. ``state`` is whatever the controller carries from step to step (the PI
controller's last accepted ratio); the controller object itself holds only parameters.
The adaptive loop (``loops.AdaptiveRun``) clips ``h_next`` to the interval and to save
times; the formulas and their sources are in docs/theory/solvers.md.
"""

from __future__ import annotations

import math

__all__ = ["ConstantController", "PIController", "PowerController", "pi_controller"]


class ConstantController:
    """Accept every step and keep its size (fixed steps through the adaptive loop)."""

    def init(self):
        return None

    def adapt(self, ratio: float, h: float, state):
        return True, h, state


class PIController:
    """PI step-size controller (Söderlind 2002; diffrax's ``PIDController`` with dcoeff=0).

    With ``r_n`` the attempt's error ratio, ``r_{n-1}`` that of the last accepted step and
    ``k`` the tableau's ``error_order``:

        factor = safety · r_n^(−(icoeff + pcoeff)/k) · r_{n−1}^(pcoeff/k)

    clipped to ``[1, factormax]`` after an accepted step and to ``[factormin, safety]``
    after a rejected one. ``pcoeff=0, icoeff=1`` is the classical I controller. State:
    ``r_{n-1}`` (``init``: 1.0).
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
        self.safety, self.factormin = float(safety), float(factormin)
        self.factormax = float(factormax)

    def init(self) -> float:
        return 1.0

    def adapt(self, ratio: float, h: float, prev_ratio: float):
        """``(accept, h_next, prev_ratio)`` after a step of size ``h`` with error ratio ``ratio``."""
        if not math.isfinite(ratio):
            return False, h * self.factormin, prev_ratio
        accept = ratio <= 1.0
        if ratio == 0.0:
            factor = self.factormax
        else:
            factor = (
                self.safety
                * ratio ** (-(self.icoeff + self.pcoeff) / self.k)
                * prev_ratio ** (self.pcoeff / self.k)
            )
        if accept:
            factor = min(max(factor, 1.0), self.factormax)
            # A zero error carries no information for the P term; keep the old ratio then.
            if ratio > 0.0:
                prev_ratio = ratio
        else:
            factor = min(max(factor, self.factormin), self.safety)
        return accept, h * factor, prev_ratio


class PowerController:
    """The adaptive SDE method's controller (Jolicoeur-Martineau et al. 2021, Alg. 1):
    ``h_next = h · min(factormax, safety · r^(−exponent))`` whether accepted or not,
    ``factormax`` after a zero error, ``factormin`` after a non-finite attempt. No state."""

    def __init__(
        self,
        *,
        safety: float = 0.9,
        exponent: float = 0.9,
        factormin: float = 0.2,
        factormax: float = 10.0,
    ):
        self.safety, self.exponent = float(safety), float(exponent)
        self.factormin, self.factormax = float(factormin), float(factormax)

    def init(self):
        return None

    def adapt(self, ratio: float, h: float, state):
        if not math.isfinite(ratio):
            return False, h * self.factormin, state
        if ratio == 0.0:
            factor = self.factormax
        else:
            factor = min(self.factormax, self.safety * ratio ** (-self.exponent))
        return ratio <= 1.0, h * factor, state


def pi_controller(error_order: int, pi_coeffs=None) -> PIController:
    """``PIController(error_order)`` with ``pi_coeffs = (pcoeff, icoeff)`` when given
    (ValueError naming ``pi_coeffs`` for anything but a pair of numbers)."""
    if pi_coeffs is None:
        return PIController(error_order)
    ok = (
        isinstance(pi_coeffs, (tuple, list))
        and len(pi_coeffs) == 2
        and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in pi_coeffs)
    )
    if not ok:
        raise ValueError(f"pi_coeffs must be a pair (pcoeff, icoeff) of numbers, got {pi_coeffs!r}")
    return PIController(error_order, pcoeff=float(pi_coeffs[0]), icoeff=float(pi_coeffs[1]))
