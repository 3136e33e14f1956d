"""``python -m ndmsolve``: the same command as ``ndmsolve``."""

import sys

from .cli import main

sys.exit(main())
