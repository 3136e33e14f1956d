"""ODE/SDE solvers for any field ``f(t, y)``; ``solve`` is the front door.

``METHODS`` maps every method name (``solve``'s ODE/SDE methods, the model-based NDM
samplers of ``nd.sample``, registered by ``ndmsolve.sampling``, and the
``torchdiffeq:``/``torchsde:`` backends) to its metadata
(``registry.Method``); ``register`` declares a new one. ``BrownianPath`` lets several SDE
solves share one Brownian path.
"""

# The modules that register methods (importing them fills the registry).
from . import adaptive, backends, fixed, sde, tableaus  # noqa: F401
from .api import all_methods, make_grid, solve
from .base import NonFiniteError, Solution, SolverError, StepLimitError
from .brownian import BrownianPath
from .registry import METHODS, Method, get_method, method_names, register

__all__ = [
    "solve",
    "Solution",
    "SolverError",
    "NonFiniteError",
    "StepLimitError",
    "METHODS",
    "Method",
    "register",
    "get_method",
    "method_names",
    "tableaus",
    "make_grid",
    "all_methods",
    "BrownianPath",
]
