"""Atomic file writing, shared by checkpoints, figures and the benchmark scripts."""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Union

PathLike = Union[str, os.PathLike]


def atomic_write(
    path: PathLike,
    write_fn: Callable[[IO], object],
    *,
    binary: bool = True,
    prefix: str | None = None,
    suffix: str = ".tmp",
    file_mode: int | None = None,
) -> Path:
    """Write ``path`` by calling ``write_fn(f)`` on a temporary file in the same folder,
    then fsync and ``os.replace`` it into place: a reader (or a crash mid-write) never
    sees a half-written file, and a previous file at ``path`` stays intact on failure.

    The parent folder is created if needed. The temporary file is named
    ``prefix + <random> + suffix`` (``prefix`` defaults to ``".<name>."``) and is removed
    if anything fails. The file gets the mode ``open()`` would give it, 0666 less the
    user's umask (0644 under umask 022; ``mkstemp`` alone would leave 0600), or
    ``file_mode`` when given. ``binary=False`` opens it in text mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}." if prefix is None else prefix, suffix=suffix, dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode() if file_mode is None else file_mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def stale_temp_files(path: PathLike) -> list[Path]:
    """The temporary files ``atomic_write(path, ...)`` (default prefix and suffix) leaves
    behind when its process is killed mid-write: ``.<name>.<random>.tmp`` beside ``path``.

    Only a process that alone writes ``path`` (e.g. one holding the folder's lock) may
    remove them: a concurrent writer's file matches too.
    """
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: the set-and-restore idiom
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode a newly created file gets: 0666 less the umask."""
    return 0o666 & ~_umask()
