"""Guards of a training run: an exclusive lock on its output folder, and signal handling
that lets the run stop at a step boundary with its checkpoint saved.

    with folder_lock(out):            # a second process on ``out`` gets FolderLockedError
        with Interrupts() as stop:    # SIGTERM / SIGINT only set stop.signal
            ...
"""

from __future__ import annotations

import contextlib
import os
import signal as _signal
import socket
import threading
import warnings
from pathlib import Path
from typing import Union

__all__ = [
    "LOCK_NAME",
    "FolderLockedError",
    "TrainingInterrupted",
    "folder_lock",
    "Interrupts",
]

PathLike = Union[str, os.PathLike]

LOCK_NAME = ".ndmsolve.lock"


class FolderLockedError(RuntimeError):
    """Another process (pid ``pid`` on ``host``) holds the lock of ``folder``."""

    def __init__(self, folder: Path, pid: int | None, host: str | None):
        self.folder, self.pid, self.host = folder, pid, host
        who = f"process {pid}" if pid is not None else "another process"
        if host and host != socket.gethostname():
            who += f" on {host}"
        super().__init__(
            f"{str(folder)!r} is in use by {who} (lock file {LOCK_NAME}); wait for it to finish "
            f"or choose another folder"
        )


class TrainingInterrupted(KeyboardInterrupt):
    """``train`` stopped on SIGTERM or SIGINT after step ``step``.

    ``checkpoint`` is the path saved at that step, or None (no ``checkpoint=`` given, or a
    second signal abandoned the run before the save began: then ``kept_step`` is the step
    of the checkpoint left on disk, or None). ``signal`` is the signal number. A
    ``KeyboardInterrupt`` subclass, so ``except Exception`` does not swallow it.
    """

    def __init__(self, step: int, checkpoint, signal: int, kept_step: int | None = None):
        self.step, self.checkpoint, self.signal, self.kept_step = (
            step,
            checkpoint,
            signal,
            kept_step,
        )
        super().__init__(self.message())

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 SIGINT, 143 SIGTERM)."""
        return 128 + int(self.signal)

    def message(self, resume_hint: str | None = "resume=True") -> str:
        """One line; ``resume_hint`` is how to continue (None: not said)."""
        head = f"interrupted ({_signal.Signals(self.signal).name}) at step {self.step}"
        if self.checkpoint is not None:
            more = f"; continue with {resume_hint}" if resume_hint else ""
            return f"{head}; checkpoint saved to {self.checkpoint}{more}"
        if self.kept_step is not None:
            return f"{head}; not saved (second signal); the checkpoint of step {self.kept_step} is kept"
        return f"{head}; nothing saved"


# ----------------------------------------------------------------- folder lock
_held: dict[str, list] = {}  # real path of the lock file -> [fd, depth, thread id]
_held_guard = threading.Lock()


def _read_holder(path: Path) -> tuple[int | None, str | None]:
    try:
        pid, host = path.read_text().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None, None  # the holder has not written its pid yet


def _acquire(path: Path) -> int:
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderLockedError(path.parent, *_read_holder(path)) from None
        # A releasing holder unlinks the file before closing it: lock only the file at `path`.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            return fd
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: PathLike, *, enabled: bool = True):
    """Hold an exclusive lock on ``folder`` (created if missing) for the ``with`` block.

    The lock is ``fcntl.flock`` on ``folder/.ndmsolve.lock`` (holding "pid host"), so the
    kernel releases it when the process dies; the file is removed on release. Re-entrant
    in the thread that holds it (the command and ``train`` both take it); another process
    or thread gets ``FolderLockedError`` at once. ``enabled=False`` (torch.distributed
    ranks other than 0) does nothing. An unwritable folder raises the ``OSError``.
    """
    if not enabled:
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    key = os.path.realpath(path)
    with _held_guard:
        entry = _held.get(key)
        if entry is not None and entry[2] != threading.get_ident():
            raise FolderLockedError(folder, os.getpid(), socket.gethostname())
        if entry is None:
            try:
                fd = _acquire(path)
            except ImportError:  # no fcntl (Windows)
                warnings.warn(
                    f"no file locking on this platform: {folder} is not locked", stacklevel=3
                )
                fd = None
            entry = _held[key] = [fd, 0, threading.get_ident()]
        entry[1] += 1
    try:
        yield
    finally:
        with _held_guard:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                if entry[0] is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)  # while still locked: see _acquire
                    os.close(entry[0])


# ----------------------------------------------------------------- signals
class Interrupts:
    """SIGTERM and SIGINT handling for a training loop, as a context manager.

    The first signal only sets ``signal`` (the loop finishes its step, saves and raises
    ``TrainingInterrupted``). A second one while ``saving()`` is deferred until the save is
    done; outside a save it abandons the run at once (``TrainingInterrupted`` with no
    checkpoint, raised from the handler). The previous handlers are restored on exit.
    Handlers can only be installed in the main thread: elsewhere nothing is installed and
    the signals keep their previous behaviour; a signal the process ignores (``SIG_IGN``,
    as a shell script's background jobs do SIGINT) stays ignored.
    """

    SIGNALS = (_signal.SIGINT, _signal.SIGTERM)

    def __init__(self):
        self.signal: int | None = None
        self.step = 0  # the last completed step (for the abandon message)
        self.kept_step: int | None = None  # the step of the checkpoint on disk
        self._saving = False
        self._deferred: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                # An ignored signal stays ignored (nohup, a script's background job).
                if _signal.getsignal(s) is not _signal.SIG_IGN:
                    self._previous[s] = _signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            _signal.signal(s, h)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signal is None:
            self.signal = signum
        elif self._saving:
            self._deferred = signum
        else:
            raise TrainingInterrupted(self.step, None, signum, self.kept_step)

    def flags(self, like):
        """This process's request as a (2,) tensor of (SIGINT, SIGTERM) flags, 0 or 1, with
        ``like``'s dtype and device (built without a host-device copy): summed over the
        ranks and read back with ``decode``."""
        out = like.new_zeros(2)
        if self.signal is not None:
            out[int(self.signal == _signal.SIGTERM)] = 1
        return out

    @staticmethod
    def decode(n_sigint: float, n_sigterm: float) -> int | None:
        """The signal all ranks stop for, from the summed flags (SIGTERM wins), or None."""
        if n_sigterm > 0:
            return int(_signal.SIGTERM)
        return int(_signal.SIGINT) if n_sigint > 0 else None

    @contextlib.contextmanager
    def saving(self, step: int, path):
        """Defer second signals while the checkpoint ``path`` of ``step`` is written."""
        self._saving = True
        try:
            yield
            self.kept_step = step
        finally:
            self._saving = False
        if self._deferred is not None:
            raise TrainingInterrupted(step, path, self.signal or self._deferred)
