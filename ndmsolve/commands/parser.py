"""The ``ndmsolve`` command: the top-level parser and ``main``.

    ndmsolve demo | train | sample | likelihood | sweep [--help]

Each subcommand is one module of ``ndmsolve.commands`` with a ``register(sub)`` that adds
its parser and sets ``func`` (parsed flags -> exit code).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence

import torch

from . import demo, likelihood, sample, sweep, train

__all__ = ["build_parser", "main"]

SUBCOMMANDS = (demo, train, sample, likelihood, sweep)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``ndmsolve`` with every subcommand registered."""
    # No abbreviated flags: a new flag would otherwise change what an abbreviation means.
    parser = argparse.ArgumentParser(
        prog="ndmsolve",
        description="Neural Diffusion Models: learned forward processes, samplers and likelihoods.",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        parser_class=functools.partial(argparse.ArgumentParser, allow_abbrev=False),
    )
    for command in SUBCOMMANDS:
        command.register(sub)
    return parser


def _positive(args: argparse.Namespace, name: str) -> str | None:
    """The error for a ``--name`` below 1 (None: unset or positive)."""
    value = getattr(args, name, None)
    if value is not None and value < 1:
        return f"--{name} must be a positive integer, got {value}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ndmsolve`` command on ``argv`` (default: ``sys.argv[1:]``); returns the
    process exit code (0 done, 2 a usage error, 1 a failed run)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help or a usage error: argparse already printed
        return int(e.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    msg = _positive(args, "steps") or _positive(args, "threads")
    if msg:
        print(f"ndmsolve {args.command}: error: {msg}", file=sys.stderr)
        return 2
    old_threads, threads = torch.get_num_threads(), getattr(args, "threads", None)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return args.func(args)
    finally:
        torch.set_num_threads(old_threads)
