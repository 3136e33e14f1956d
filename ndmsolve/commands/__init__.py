"""The ``ndmsolve`` command line: ``parser`` (the top-level parser and ``main``) and one
module per subcommand (``demo``, ``train``, ``sample``, ``likelihood``, ``sweep``), with
the declared options they share (``options``) and the networks ``train`` builds
(``models``)."""

from .parser import build_parser, main

__all__ = ["build_parser", "main"]
