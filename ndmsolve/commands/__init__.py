"""The ``ndmsolve`` subcommands, one module each; ``cli.py`` only registers them."""
