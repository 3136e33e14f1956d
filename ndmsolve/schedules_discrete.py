"""``DiscreteSchedule`` (a DDPM/diffusers ᾱ table as a ``Schedule``), now in
``ndmsolve.schedules``; this module keeps the old import path."""

from .schedules import INTERPOLATIONS, DiscreteSchedule

__all__ = ["DiscreteSchedule", "INTERPOLATIONS"]
