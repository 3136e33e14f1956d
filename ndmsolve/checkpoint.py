"""The one checkpoint format ndmsolve writes (demo, ``train``, the image commands).

A checkpoint is a ``torch.save`` zip file holding a dict:

    format, format_version, library_version   what wrote it (checked on reading)
    config         the model's configuration (``ndmsolve.config.to_config``) or None
    config_error   why there is no configuration (a module that is not configurable)
    dtype          the model's parameter dtype (str)
    model          raw weights (state_dict);  ema  the EMA's state (``EMA.state_dict()``)
    optimizer, scheduler, step, losses, generators, rng, ...   training state

``nd.load_model(path)`` rebuilds a ready NDM from it, no user code needed (EMA weights by
default). Files are written atomically (``ndmsolve.io.atomic_write``): a crash mid-write
leaves the previous checkpoint intact. Reading a truncated, empty, foreign or newer file
raises ``CheckpointError`` naming the file and what is wrong.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Union

import torch
from torch import nn

from .config import ConfigError, from_config, to_config
from .io import atomic_write
from .version import __version__

__all__ = [
    "CheckpointError",
    "CheckpointWriteError",
    "FORMAT",
    "FORMAT_VERSION",
    "save_checkpoint",
    "read_checkpoint",
    "load_checkpoint",
    "restore_entries",
    "load_model",
    "capture_rng",
    "restore_rng",
    "one_line",
]

PathLike = Union[str, os.PathLike]

FORMAT = "ndmsolve-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: truncated, empty, foreign, newer or mismatched."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (disk full, quota, read-only, permissions, ...); the
    file at the path, if any, is unchanged. ``errno`` is the cause's; the message is one
    line naming the path, the reason and what is kept."""


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc``: itself, or one in its ``__cause__``/``__context__`` chain
    (torch.save wraps a failed write in a RuntimeError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _kept(path: Path) -> str:
    """What a failed write leaves at ``path``, for the error message."""
    if not path.is_file():
        return "no previous checkpoint"
    try:
        step = read_checkpoint(path).get("step")
    except (CheckpointError, OSError):
        return "the previous file is kept (unreadable as a checkpoint)"
    return (
        "the previous checkpoint is kept"
        if step is None
        else (f"the previous checkpoint (step {step}) is kept")
    )


# ANSI/VT escape sequences (CSI, OSC, two-byte ESC forms) and the other control characters:
# torch's messages carry bold markers that a terminal would obey.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|\x9b[0-?]*[ -/]*[@-~]"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def one_line(error) -> str:
    """An exception's (or a string's) text as one printable line: terminal control
    sequences removed, its lines joined with "; " (an empty text: the exception's type)."""
    text = _CONTROL.sub("", str(error))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return "; ".join(lines)


def _first_line(error) -> str:
    text = one_line(error)
    return text.split("; ")[0] if text else "no detail"


def _key_mismatch(expected, stored, limit: int = 5) -> str | None:
    """ "missing N key(s) [...]; unexpected M key(s) [...]" (first ``limit`` of each), or None."""
    parts = []
    for what, keys in (
        ("missing", [k for k in expected if k not in stored]),
        ("unexpected", [k for k in stored if k not in expected]),
    ):
        if keys:
            more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
            parts.append(f"{what} {len(keys)} key(s) {keys[:limit]}{more}")
    return "; ".join(parts) or None


def _load_state(module: nn.Module, weights, where: str, target: str = "") -> None:
    """``module.load_state_dict(weights)``; a mismatch is a ``CheckpointError`` listing the
    missing and unexpected keys, or the shape mismatches."""
    if not isinstance(weights, dict):
        raise CheckpointError(f"{where} is not a state_dict (a {type(weights).__name__})")
    target = target or f"the given {type(module).__name__}"
    keys = _key_mismatch(list(module.state_dict()), list(weights))
    if keys:
        raise CheckpointError(f"{where} does not fit {target}: {keys}")
    try:
        module.load_state_dict(weights)
    except RuntimeError as e:
        details = one_line(e).split("; ")
        shown = details[1:4] or details
        more = f" and {len(details) - 4} more" if len(details) > 4 else ""
        raise CheckpointError(f"{where} does not fit {target}: {'; '.join(shown)}{more}") from None


def capture_rng() -> dict:
    """The global RNG states: torch's CPU generator and, when CUDA is initialised, every GPU's."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Set the global RNG states saved by ``capture_rng``."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _state(value):
    if isinstance(value, torch.Generator):
        return value.get_state()
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, torch.Generator) for v in value)
    ):
        return [v.get_state() for v in value]
    if hasattr(value, "state_dict") and callable(
        value.state_dict
    ):  # modules, optimizers, EMA, schedulers
        return value.state_dict()
    return value


def _dtype_of(module: nn.Module) -> str | None:
    for p in module.parameters():
        return str(p.dtype).removeprefix("torch.")
    return None


def save_checkpoint(path: PathLike, obj: dict | None = None, **entries) -> Path:
    """Write a checkpoint to ``path`` atomically; returns the path.

    A failed write (disk full, read-only, ...) raises ``CheckpointWriteError``, one line,
    and leaves the previous file at ``path`` and no temporary file.

    ``obj`` (a dict) and ``entries`` are merged. Values with a ``state_dict()`` (modules,
    optimizers, ``EMA``, LR schedulers) are stored as it; a ``torch.Generator`` (or a list of
    them) as its state. A ``model`` module also stores its configuration and dtype, so
    ``load_model`` can rebuild it; the global RNG states are stored under ``rng`` unless given.
    """
    payload = dict(obj or {})
    payload.update(entries)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__}
    model = payload.get("model")
    if isinstance(model, nn.Module):
        try:
            header["config"] = to_config(model)
            header["config_error"] = None
        except ConfigError as e:
            header["config"], header["config_error"] = None, str(e)
        header["dtype"] = _dtype_of(model)
    payload.setdefault("rng", capture_rng())
    payload = {**header, **{k: _state(v) for k, v in payload.items()}}
    # Serialised in memory, then written with plain file writes: a failed write raises
    # the OSError itself (torch.save to a file wraps it in a RuntimeError).
    buffer = io.BytesIO()
    try:
        torch.save(payload, buffer)
        return atomic_write(path, lambda f: f.write(buffer.getbuffer()))
    except (OSError, RuntimeError) as e:
        err = _os_error(e)
        if err is None:
            raise
        reason = err.strerror or (os.strerror(err.errno) if err.errno else str(err))
        out = CheckpointWriteError(f"cannot write checkpoint {path}: {reason}; {_kept(Path(path))}")
        out.errno, out.path = err.errno, str(path)
        raise out from None


def read_checkpoint(path: PathLike, map_location="cpu") -> dict:
    """Read and validate a checkpoint; returns its dict. ``CheckpointError`` if unusable."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} is a folder, not a checkpoint file"
            + (
                f" (did you mean {str(path / 'checkpoint.pt')!r}?)"
                if (path / "checkpoint.pt").is_file()
                else ""
            )
        )
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}: no such file")
    where = f"checkpoint {str(path)!r}"
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"{where} is empty (0 bytes): not a checkpoint (a write that never started?)"
        )
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise CheckpointError(
            f"{where} is not a torch.save zip file (starts with {magic!r}): a foreign file"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()  # CRC of every member: catches truncation and flipped bytes
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CheckpointError(
            f"{where} is truncated or corrupt ({size} bytes; the zip archive is incomplete: {e})"
        ) from None
    if bad is not None:
        raise CheckpointError(
            f"{where} is truncated or corrupt (member {bad!r} fails its CRC check)"
        )
    try:
        # weights_only: tensors, numbers, strings and containers only; no pickled code runs.
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{where} holds objects other than tensors and plain data, so ndmsolve "
            f"did not write it (torch refused: {_first_line(e)})"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, KeyError, ValueError) as e:
        raise CheckpointError(
            f"{where} is truncated or corrupt ({type(e).__name__}: {_first_line(e)})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{where} is not an ndmsolve checkpoint (no {FORMAT!r} header; "
            f"a file saved by other code?)"
        )
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has format version {version!r} (written by ndmsolve "
            f"{state.get('library_version')}); this ndmsolve {__version__} reads versions "
            f"up to {FORMAT_VERSION}: upgrade ndmsolve"
        )
    return state


def load_checkpoint(path: PathLike, map_location="cpu", **targets) -> dict:
    """Read a checkpoint and restore ``targets`` in place; returns the stored dict.

    Keyword ``targets`` (e.g. ``model=net, optimizer=opt, ema=ema, generator=g``) are
    restored from the entries of the same name (``load_state_dict`` or, for generators,
    ``set_state``). A missing entry or mismatched state raises ``CheckpointError``.
    """
    state = read_checkpoint(path, map_location)
    restore_entries(state, path, **targets)
    return state


def restore_entries(state: dict, path: PathLike, **targets) -> None:
    """``load_checkpoint``'s restoring half, for a ``state`` already read from ``path``
    (a caller that checks entries first need not read the file twice)."""
    for name, target in targets.items():
        if name not in state or state[name] is None:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has no entry {name!r} "
                f"(has {sorted(k for k, v in state.items() if v is not None)})"
            )
        try:
            if isinstance(target, torch.Generator):
                target.set_state(state[name])
            elif isinstance(target, (list, tuple)) and all(
                isinstance(g, torch.Generator) for g in target
            ):
                if len(target) != len(state[name]):
                    raise ValueError(
                        f"{len(state[name])} generator states stored, {len(target)} given"
                    )
                for g, s in zip(target, state[name]):
                    g.set_state(s)
            elif isinstance(target, nn.Module):
                _load_state(target, state[name], f"checkpoint {str(path)!r}: entry {name!r}")
            else:
                target.load_state_dict(state[name])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(
                f"checkpoint {str(path)!r}: entry {name!r} does not fit the given "
                f"{type(target).__name__}: {_first_line(e)}"
            ) from None


def load_model(
    path: PathLike, *, ema: bool = True, map_location="cpu", trainable: bool = False
) -> nn.Module:
    """Rebuild the model stored in a checkpoint, ready to sample (eval mode, no gradients).

    Args:
        path: any checkpoint ndmsolve wrote.
        ema: load the EMA weights (default) or, with ``False``, the raw weights.
        map_location: device for the weights (as in ``torch.load``).
        trainable: return it in train mode with ``requires_grad`` on, to continue
            training or fine-tune it with ``nd.train.train`` (default: frozen, eval mode).
    """
    if not isinstance(trainable, bool):
        raise TypeError(f"trainable must be True or False, got {trainable!r}")
    state = read_checkpoint(path, map_location)
    where = f"checkpoint {str(path)!r}"
    if state.get("config") is None:
        why = state.get("config_error") or "no model was stored"
        raise CheckpointError(
            f"{where} stores no model configuration ({why}); build the model yourself "
            f"and restore it with load_checkpoint(path, model=...)"
        )
    try:
        model = from_config(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"{where}: cannot rebuild the model: {e}") from None
    if state.get("dtype"):
        model = model.to(getattr(torch, state["dtype"]))
    if ema:
        if not isinstance(state.get("ema"), dict) or "shadow" not in state["ema"]:
            raise CheckpointError(f"{where} has no EMA weights; pass ema=False for the raw weights")
        weights = state["ema"]["shadow"]
    else:
        if not isinstance(state.get("model"), dict):
            raise CheckpointError(f"{where} has no raw model weights")
        weights = state["model"]
    _load_state(
        model,
        weights,
        f"{where}: entry {'ema' if ema else 'model'!r}",
        f"the {type(model).__name__} of the stored configuration",
    )
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    for p in model.parameters():
        p.requires_grad_(trainable)
    return model.train(trainable)
