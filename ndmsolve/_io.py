"""Atomic file writing, shared by checkpoints, figures and the benchmark scripts."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Optional, Union

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write_fn: Callable[[IO], object], *, binary: bool = True,
                 prefix: Optional[str] = None, suffix: str = ".tmp",
                 file_mode: Optional[int] = None) -> Path:
    """Write ``path`` by calling ``write_fn(f)`` on a temporary file in the same folder,
    then fsync and ``os.replace`` it into place: a reader (or a crash mid-write) never
    sees a half-written file, and a previous file at ``path`` stays intact on failure.

    The parent folder is created if needed. The temporary file is named
    ``prefix + <random> + suffix`` (``prefix`` defaults to ``".<name>."``) and is removed
    if anything fails. ``mkstemp`` creates it with mode 0600; ``file_mode`` (e.g. 0o644)
    sets another before the move. ``binary=False`` opens it in text mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}." if prefix is None else prefix,
                               suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        if file_mode is not None:
            os.chmod(tmp, file_mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
