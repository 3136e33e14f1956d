"""The experiments users run (each module one study); import the module you need, e.g.
``from ndmsolve.studies import ot``."""
