"""The ``ndmsolve`` command's former home, kept for ``from ndmsolve.cli import main``: the
command line is ``ndmsolve.commands``."""

from .commands import build_parser, main
from .commands.demo import DEMO, QUICK
from .commands.demo import demo_models as _demo_models  # noqa: F401  (benchmarks/fewstep.py's old name)

__all__ = ["main", "build_parser", "DEMO", "QUICK"]

if __name__ == "__main__":
    import sys

    sys.exit(main())
