"""The ``ndmsolve`` command's former home, kept for ``from ndmsolve.cli import main``: the
command line is ``ndmsolve.commands``."""

from .commands import build_parser, main
from .commands.demo import DEMO, QUICK

__all__ = ["main", "build_parser", "DEMO", "QUICK"]

if __name__ == "__main__":
    import sys

    sys.exit(main())
