"""ODE/SDE solvers for any field ``f(t, y)``; ``solve`` is the front door.

``METHODS`` lists every name ``solve`` accepts besides the ``torchdiffeq:``/``torchsde:``
backends; ``BrownianPath`` lets several SDE solves share one Brownian path.
"""
from . import tableaus
from .api import all_methods, make_grid, solve
from .brownian import BrownianPath
from .base import NonFiniteError, Solution, SolverError, StepLimitError

__all__ = ["solve", "Solution", "SolverError", "NonFiniteError", "StepLimitError", "METHODS",
           "tableaus", "make_grid", "all_methods", "BrownianPath"]


def __getattr__(name):
    if name == "METHODS":
        return all_methods()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
