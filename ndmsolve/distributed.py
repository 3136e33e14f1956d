"""torch.distributed helpers: rank and world size, rank-0 work, sums across ranks.

ndmsolve uses PyTorch's own engine: ``torchrun --nproc_per_node K -m ndmsolve train ...``
sets the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...), ``init_from_env`` starts the
process group (NCCL on GPUs, gloo on CPU) and training wraps the loss in
DistributedDataParallel. Without a process group every function here is the
single-process identity, so the same code runs either way.
"""

from __future__ import annotations

import datetime
import os
import re
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "is_distributed",
    "rank",
    "world_size",
    "init_from_env",
    "describe_timeout",
    "train_timeout",
    "GLOO_TIMEOUT_S",
    "all_reduce_sum",
    "all_gather_objects",
    "barrier",
    "default_device",
]


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def default_device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` when GPUs are present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(
            "cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count()
        )
    return torch.device("cpu")


GLOO_TIMEOUT_S = 120.0  # gloo's own default is 30 min: a stopped rank would hang that long
_timeout_s: float | None = None  # the process group's timeout, for the messages


def init_from_env(backend: str | None = None, timeout: float | None = None) -> bool:
    """Start the process group from torchrun's environment variables, if they are set.

    Returns True when this process is one of several (WORLD_SIZE > 1). The backend is NCCL
    when CUDA is available, else gloo, unless ``backend`` is given. ``timeout`` (seconds):
    how long a collective waits for the other ranks before it raises (a lost or stopped
    rank ends the job instead of hanging it); default: PyTorch's (30 min on gloo) — see
    ``train_timeout`` for the short one ``ndmsolve train`` uses.
    """
    if timeout is not None and not (0 < timeout < float("inf")):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(default_device())
        global _timeout_s
        _timeout_s = timeout
        kw = {} if timeout is None else {"timeout": datetime.timedelta(seconds=timeout)}
        dist.init_process_group(backend, **kw)
    return dist.get_world_size() > 1


def train_timeout(given: float | None) -> float | None:
    """The process-group timeout of ``ndmsolve train``: ``given``, else ``GLOO_TIMEOUT_S``
    on gloo (no CUDA), else None (NCCL's default). Short on gloo because training's
    collectives come every step: only a lost rank keeps the others waiting that long (the
    likelihood command, whose ranks may finish their shards minutes apart, keeps PyTorch's)."""
    if given is not None:
        return given
    return None if torch.cuda.is_available() else GLOO_TIMEOUT_S


def describe_timeout(e: BaseException) -> str | None:
    """One line for a collective that timed out or lost a peer (else None), naming this
    rank and the timeout. gloo's text names neither the peer nor the collective, only the
    wait ("Timed out waiting 3000ms for recv operation"); its source-path prefix is cut."""
    text = str(e).strip()
    words = ("timed out", "timeout", "connection closed", "connection reset", "broken pipe")
    # Before the group is up (a rank lost during start-up) torchrun's variables say who.
    world = world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
    me = rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))
    if world <= 1 or not any(w in text.lower() for w in words):
        return None
    first = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0])
    limit = f"{_timeout_s:g} s" if _timeout_s is not None else "the backend's default"
    return (
        f"rank {me} of {world}: the other processes did not answer within "
        f"--dist-timeout ({limit}): one stopped or died ({first})"
    )


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of ``t`` over all ranks (a new tensor; ``t`` itself without a group)."""
    if not is_distributed():
        return t
    out = t.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_objects(obj: Any) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (a one-element list without a group)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()
