"""The experiments users run (each module one study): ``sweep``, the NFE-vs-quality sweep
(``nfe_sweep``); import the others by module, e.g. ``from ndmsolve.studies import ot``."""

from .nfe_sweep import sweep

__all__ = ["sweep"]
