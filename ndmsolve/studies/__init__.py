"""The experiments users run: each a function with numbers and a figure as its result."""
from .nfe_sweep import sweep

__all__ = ["sweep"]
