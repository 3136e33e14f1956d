"""The NDM's vector fields as ``f(t, z)`` callables for ``nd.solve``.

Each evaluation is one predictor call; times handed in by a solver are clamped to [0, 1]
(``solver_time``) and a non-finite model output becomes the solver's field fault.
"""

from __future__ import annotations

from torch import Tensor

from .._checks import NonFiniteOutputError, solver_time
from ..solvers.base import field_fault
from ..tensors import bcast

__all__ = ["PFODEField", "ReverseDriftField", "DiffusionField"]


class PFODEField:
    """f(t, z) = NDM.velocity(z, t): the probability-flow ODE; t scalar or (B,), z (B, *shape)."""

    def __init__(self, model):
        self.model = model
        self.graph_key = ("pf_ode", id(model))  # one CUDA graph per model, not per call

    def __call__(self, t: Tensor, z: Tensor) -> Tensor:
        try:
            return self.model.velocity(z, solver_time(t, z))
        except NonFiniteOutputError as e:  # the solver adds the step
            raise field_fault(e, t) from None


class ReverseDriftField:
    """f(t, z) = NDM.reverse_drift(z, t): the reverse SDE's drift, (B, *shape)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, t: Tensor, z: Tensor) -> Tensor:
        try:
            return self.model.reverse_drift(z, solver_time(t, z))
        except NonFiniteOutputError as e:  # the solver adds the step
            raise field_fault(e, t) from None


class DiffusionField:
    """g(t, z) = g(t) (additive, diagonal), shaped (B, 1, ..., 1) to broadcast against z."""

    def __init__(self, model):
        self.model = model

    def __call__(self, t: Tensor, z: Tensor) -> Tensor:
        return bcast(self.model.diffusion(solver_time(t, z)), z)
