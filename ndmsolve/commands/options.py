"""Declared options shared by the subcommands: one list gives the argparse flags (with
their defaults in ``--help``), the TOML config file's keys and the value checks, so a
bad value or unknown key is reported before any work starts.

Precedence: built-in default < ``--config FILE.toml`` < an explicit flag.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Option", "UsageError", "add_options", "resolve", "run_command", "ints"]


class UsageError(ValueError):
    """A bad option, config key or value: reported as one line, exit status 2."""


def ints(value) -> tuple:
    """'1,2,2' or [1, 2, 2] -> (1, 2, 2); '' or [] -> ()."""
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"expected comma-separated integers, got {value!r}") from None
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(value)
    raise ValueError(f"expected a list of integers, got {value!r}")


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    help: str
    type: Callable = str
    choices: Sequence | None = None
    check: Callable[[Any], str | None] | None = None  # value -> error text or None
    flag: bool = True  # also a command-line flag (else config file only)

    @property
    def dest(self) -> str:
        return self.name

    def convert(self, value, where: str):
        if value is None:
            return None
        try:
            if self.type is bool:
                if not isinstance(value, bool):
                    raise ValueError(f"expected true or false, got {value!r}")
                out = value
            elif self.type in (int, float):
                word = "an integer" if self.type is int else "a number"
                ok = (int,) if self.type is int else (int, float)
                if isinstance(value, bool) or not isinstance(value, ok):
                    raise ValueError(f"expected {word}, got {value!r}")
                out = self.type(value)
            else:
                out = self.type(value)
        except (TypeError, ValueError) as e:
            raise UsageError(f"{where}{self.name}: {e}") from None
        if self.choices is not None and out not in self.choices:
            raise UsageError(f"{where}{self.name} must be one of {list(self.choices)}, got {out!r}")
        if self.check is not None:
            msg = self.check(out)
            if msg:
                raise UsageError(f"{where}{self.name} {msg}, got {out!r}")
        return out


def positive(v) -> str | None:
    return None if v > 0 else "must be positive"


def non_negative(v) -> str | None:
    return None if v >= 0 else "must be non-negative"


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """One flag per option (``--batch-size``; booleans as ``--x/--no-x``), help with the default."""
    for opt in options:
        if not opt.flag:
            continue
        flag = "--" + opt.name.replace("_", "-")
        default = opt.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = f"{opt.help} (default: {shown})"
        if opt.type is bool:
            parser.add_argument(
                flag, dest=opt.dest, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        else:
            metavar = (
                "{" + ",".join(map(str, opt.choices)) + "}" if opt.choices else opt.name.upper()
            )
            kind = opt.type if opt.type in (int, float) else str
            parser.add_argument(
                flag, dest=opt.dest, default=None, metavar=metavar, help=text, type=kind
            )


def _read_toml(path: str) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--config {path!r}: no such file")
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"--config {path!r} is not valid TOML: {e}") from None


def resolve(args: argparse.Namespace, options: Sequence[Option], config: str | None = None) -> dict:
    """The final value of every option (defaults, then the config file, then flags), checked."""
    by_name = {o.name: o for o in options}
    values = {o.name: o.default for o in options}
    if config:
        table = _read_toml(config)
        unknown = sorted(set(table) - set(by_name))
        if unknown:
            raise UsageError(
                f"--config {config!r}: unknown key(s) {unknown}; valid keys: {sorted(by_name)}"
            )
        for k, v in table.items():
            values[k] = by_name[k].convert(v, f"--config {config!r}: ")
    for o in options:
        v = getattr(args, o.dest, None)
        if o.flag and v is not None:
            values[o.name] = o.convert(v, "--")
    for o in options:  # defaults and config values pass the same checks
        if values[o.name] is not None and o.check is not None:
            o.convert(values[o.name], "")
    return values


def run_command(
    name: str, fn: Callable[[argparse.Namespace], int]
) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: user-facing errors become one line on stderr and exit status 2."""
    from ..checkpoint import CheckpointError
    from ..config import ConfigError

    def wrapped(args) -> int:
        try:
            return fn(args)
        except (UsageError, CheckpointError, ConfigError, FileNotFoundError, ImportError) as e:
            print(
                f"ndmsolve {name}: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                file=sys.stderr,
            )
            return 2

    return wrapped
