"""``python -m ndmsolve``: the same command as ``ndmsolve``."""

import sys

from .commands import main

sys.exit(main())
