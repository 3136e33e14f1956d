"""Declared options shared by the subcommands: one list gives the argparse flags (with
their defaults in ``--help``), the TOML config file's keys and the value checks, so a
bad value or unknown key is reported before any work starts.

Precedence: built-in default < ``--config FILE.toml`` < an explicit flag.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Option",
    "UsageError",
    "Labels",
    "add_options",
    "resolve",
    "run_command",
    "ints",
    "positive",
    "non_negative",
    "seed_range",
    "check_out_file",
    "check_device",
    "add_command",
    "lock_out",
    "EMA",
    "DEVICE",
    "THREADS",
]


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
    flags: tuple[str, ...] = ()  # the flags, first shown in messages (default: --name-dashed)
    aliases: tuple[str, ...] = ()  # older flags still accepted, e.g. ("--n",)

    @property
    def dest(self) -> str:
        return self.name

    @property
    def flag_name(self) -> str:
        """The flag as users type it: ``--batch-size`` for the option ``batch_size``."""
        return self.flags[0] if self.flags else "--" + self.name.replace("_", "-")

    def all_flags(self) -> tuple[str, ...]:
        return (self.flag_name, *self.flags[1:], *self.aliases)

    def convert(self, value, label: str = ""):
        """``value`` (from a flag, a config file or the default) converted and checked;
        errors are ``UsageError`` naming ``label`` (default: the flag)."""
        label = label or self.flag_name
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
            raise UsageError(f"{label}: {e}") from None
        if isinstance(out, float) and not math.isfinite(out):
            raise UsageError(f"{label} must be a finite number, got {out!r}")
        if self.choices is not None and out not in self.choices:
            raise UsageError(f"{label} must be one of {list(self.choices)}, got {out!r}")
        if self.check is not None:
            msg = self.check(out)
            if msg:
                raise UsageError(f"{label} {msg}, got {out!r}")
        return out


def positive(v) -> str | None:
    return None if v > 0 else "must be positive"


def non_negative(v) -> str | None:
    return None if v >= 0 else "must be non-negative"


def seed_range(v) -> str | None:
    # torch.Generator.manual_seed takes a signed 64-bit integer (the seed plus offsets).
    return None if 0 <= v < 2**62 else "must lie in [0, 2**62)"


EMA = Option("ema", True, "use the EMA weights (--no-ema: the raw weights)", bool)
DEVICE = Option("device", "auto", "auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
THREADS = Option("threads", 1, "torch intra-op threads", int, check=positive)


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """One flag per option (``--batch-size``; booleans as ``--x/--no-x``), help with the default.

    Each alias gets its own destination, so messages can name the flag that was typed."""
    for opt in options:
        if not opt.flag:
            continue
        default = opt.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        names = (opt.flag_name, *opt.flags[1:])
        dests = [(names, opt.dest, f"{opt.help} (default: {shown})")]
        dests += [
            ((a,), _alias_dest(opt, i), f"same as {opt.flag_name}")
            for i, a in enumerate(opt.aliases)
        ]
        for flags, dest, text in dests:
            if opt.type is bool:
                parser.add_argument(
                    *flags,
                    dest=dest,
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=text,
                )
            else:
                metavar = (
                    "{" + ",".join(map(str, opt.choices)) + "}" if opt.choices else opt.name.upper()
                )
                kind = opt.type if opt.type in (int, float) else str
                parser.add_argument(
                    *flags, dest=dest, default=None, metavar=metavar, help=text, type=kind
                )


def _alias_dest(opt: Option, i: int) -> str:
    return f"{opt.dest}__alias{i}"


class Labels(dict):
    """Option name -> how the user gave it: the flag as typed (``--batch-size``), the TOML
    key and file (``batch_size in run.toml``), or, for a default, its flag. ``given``: the
    names set by a flag or the config file."""

    def __init__(self):
        super().__init__()
        self.given: set[str] = set()


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


def _typed(args: argparse.Namespace, opt: Option) -> tuple[str, Any] | None:
    """(flag as typed, value) of ``opt`` on the command line, or None when not given."""
    found = [(opt.flag_name, getattr(args, opt.dest, None))]
    found += [(a, getattr(args, _alias_dest(opt, i), None)) for i, a in enumerate(opt.aliases)]
    found = [(f, v) for f, v in found if v is not None]
    if len(found) > 1:
        raise UsageError(f"{found[0][0]} and {found[1][0]} are the same option: give one")
    return found[0] if found else None


def resolve(
    args: argparse.Namespace,
    options: Sequence[Option],
    config: str | None = None,
    labels: Labels | None = None,
) -> dict:
    """The final value of every option (defaults, then the config file, then flags), checked.

    ``labels`` (optional, filled in): how each option was given, for messages."""
    by_name = {o.name: o for o in options}
    values = {o.name: o.default for o in options}
    labels = Labels() if labels is None else labels
    labels.update({o.name: o.flag_name for o in options})
    if config:
        table = _read_toml(config)
        unknown = sorted(set(table) - set(by_name))
        if unknown:
            raise UsageError(
                f"--config {config!r}: unknown key(s) {unknown}; valid keys: {sorted(by_name)}"
            )
        for k, v in table.items():
            labels[k] = f"{k} in {config}"
            labels.given.add(k)
            values[k] = by_name[k].convert(v, labels[k])
    for o in options:
        typed = _typed(args, o) if o.flag else None
        if typed is not None:
            labels[o.name] = typed[0]
            labels.given.add(o.name)
            values[o.name] = o.convert(typed[1], typed[0])
    for o in options:  # defaults pass the same checks
        if o.name not in labels.given and values[o.name] is not None:
            o.convert(values[o.name], labels[o.name])
    return values


def add_command(
    sub,
    name: str,
    help: str,
    doc: str,
    run: Callable[[argparse.Namespace], int],
    options: Sequence[Option],
    before: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """Register and return the subcommand ``name`` on ``sub``: its description is the first
    paragraph of ``doc`` (the module docstring), its flags those ``before`` adds, then those
    of ``options``; ``run`` is wrapped by ``run_command``."""
    p = sub.add_parser(
        name,
        help=help,
        description=doc.split("\n\n")[0].removeprefix(f"``ndmsolve {name}``: "),
    )
    if before is not None:
        before(p)
    add_options(p, options)
    p.set_defaults(func=run_command(name, run))
    return p


def run_command(
    name: str, fn: Callable[[argparse.Namespace], int]
) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: user-facing errors become one line on stderr and exit status 2."""
    from ..checkpoint import CheckpointError, one_line
    from ..config import ConfigError

    def wrapped(args) -> int:
        try:
            return fn(args)
        except (UsageError, CheckpointError, ConfigError, FileNotFoundError, ImportError) as e:
            print(f"ndmsolve {name}: error: {one_line(e)}", file=sys.stderr)
            return 2

    return wrapped


def refuse_other_kind(method, labels, fixed_only: tuple, adaptive_only: tuple) -> None:
    """Refuse options that ``method`` (a registry ``Method``) would ignore: ``fixed_only``
    (step counts, grids) with an adaptive method, ``adaptive_only`` (tolerances) with a
    fixed-step one; the message names the flags as typed."""
    L = labels
    if method.adaptive:
        wrong = [n for n in fixed_only if n in L.given]
        if wrong:
            raise UsageError(
                f"{', '.join(L[n] for n in wrong)}: {method.name!r} is adaptive (it chooses its "
                f"own steps): give {L['rtol']} (and {L['atol']}) instead, or a fixed-step --method"
            )
        return
    wrong = [n for n in adaptive_only if n in L.given]
    if wrong:
        raise UsageError(
            f"{', '.join(L[n] for n in wrong)}: {method.name!r} is a fixed-step method (no "
            f"tolerance): give {L['steps']} instead, or an adaptive --method (e.g. dopri5)"
        )


def check_device(device: str, label: str) -> None:
    """Refuse ``--device cuda`` (named ``label``) where no CUDA device is available."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{label} cuda: no CUDA device is available")


def lock_out(held: contextlib.ExitStack, out: Path, enabled: bool = True) -> None:
    """Hold the lock of the output folder ``out`` (``--out``) until ``held`` closes; a
    folder locked by another run or not writable is a ``UsageError``."""
    from .._guard import FolderLockedError, folder_lock

    try:
        held.enter_context(folder_lock(out, enabled=enabled))
    except FolderLockedError as e:
        raise UsageError(f"--out {e}") from None
    except OSError as e:
        raise UsageError(f"--out {str(out)!r} is not writable: {e.strerror or e}") from None


def check_out_file(path: str, label: str, suffix: str | None = None) -> Path:
    """An output file the command will write: not a folder (nor ending with a slash), with
    ``suffix`` when given, and a creatable, writable parent folder. Checked before any work."""
    if path.endswith(("/", os.sep)) or Path(path).is_dir():
        raise UsageError(
            f"{label} {path!r} is a folder; give a file name, e.g. {path.rstrip('/')}/out{suffix or ''}"
        )
    out = Path(path)
    if suffix is not None and out.suffix.lower() != suffix:
        raise UsageError(f"{label} must name a {suffix} file, got {path!r}")
    parent = out.parent
    while not parent.exists():  # the folder is created later: its nearest existing ancestor
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{label} {path!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{label} {path!r}: the folder {str(parent)!r} is not writable")
    return out
