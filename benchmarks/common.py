"""Pieces shared by the benchmark scripts: device naming, run metadata, timing and
atomic JSON output.

The scripts run as ``python -m benchmarks.x`` and are also loaded by file path from the
smoke tests; each puts this folder on ``sys.path`` before ``import _common``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch

from ndmsolve.io import atomic_write


# --------------------------------------------------------------------------- environment
def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo (else what platform knows)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(mod) -> str | None:
    """``mod.__version__`` (``"unknown"`` without one; ``None`` if the module is missing)."""
    return None if mod is None else getattr(mod, "__version__", "unknown")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- command line
def add_run_args(p: argparse.ArgumentParser, rounds_help: str) -> None:
    """Options drift_cost and likelihood_cost share: device, size, threads, timing.
    Their own options go between these and ``add_cases_args``'s."""
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="tiny sizes, few rounds (smoke test)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads on CPU")
    p.add_argument("--rounds", type=int, default=None, help=rounds_help)
    p.add_argument("--min-time", type=float, default=None, help="seconds per variant per round")


def add_cases_args(p: argparse.ArgumentParser, cases, out_dir: str) -> None:
    """``--cases`` (a comma-separated subset of ``cases``) and ``--out-dir``."""
    p.add_argument(
        "--cases", default="mlp,conv", help="comma-separated subset of " + ",".join(cases)
    )
    p.add_argument("--out-dir", default=out_dir)


def run_meta(benchmark: str, a: argparse.Namespace, device: torch.device, rounds: int) -> dict:
    """The header of a drift_cost / likelihood_cost result (threads: None on CUDA)."""
    return {
        "benchmark": benchmark,
        "device": a.device,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "quick": a.quick,
        "rounds": rounds,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --------------------------------------------------------------------------- timing
def time_all(
    fns: dict[str, Callable],
    device,
    rounds: int,
    min_time: float,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds per call, rounds interleaved across variants (load hits all alike).

    Each callable is called ``warmup`` times, then once more to size a round: calls per
    round are chosen so each round lasts about ``min_time``. ``clock`` is wall time by
    default; ``time.process_time`` gives this process's CPU time, which a shared machine's
    load does not inflate (on CPU at one thread).
    """
    number = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        sync(device)
        t0 = clock()
        fn()
        sync(device)
        number[name] = max(1, int(min_time / max(clock() - t0, 1e-9)))
    samples: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            t0 = clock()
            for _ in range(number[name]):
                fn()
            sync(device)
            samples[name].append((clock() - t0) / number[name])
    return {n: statistics.median(s) for n, s in samples.items()}


# --------------------------------------------------------------------------- output
def write_json_atomic(
    path, data, *, prefix: str, suffix: str, sort_keys: bool = True, file_mode: int | None = None
) -> None:
    """``data`` as indented JSON plus a newline, written atomically (temporary file
    ``prefix*suffix`` in the same folder, removed on failure; see ``ndmsolve.io``)."""

    def dump(fh):
        json.dump(data, fh, indent=2, sort_keys=sort_keys)
        fh.write("\n")

    atomic_write(path, dump, binary=False, prefix=prefix, suffix=suffix, file_mode=file_mode)
