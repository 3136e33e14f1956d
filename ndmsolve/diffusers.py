"""The diffusers adapter, now ``ndmsolve.fields.diffusers``; this module keeps the old
import path (``nd.diffusers.DiffusersPredictor``, ``from ndmsolve.diffusers import ...``)."""

from .fields.diffusers import (
    PREDICTION_TYPES,
    DiffusersPredictor,
    diffusers_grid,
    from_diffusers,
)

__all__ = ["DiffusersPredictor", "from_diffusers", "diffusers_grid", "PREDICTION_TYPES"]
