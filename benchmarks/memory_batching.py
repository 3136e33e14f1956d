"""Peak memory of nd.sample and nd.log_likelihood with and without ``batch_size``.

Each measurement runs in a fresh subprocess (so peaks do not carry over) and reports
``resource.getrusage(RUSAGE_SELF).ru_maxrss``. The model is the README's checkerboard NDM
at its sizes (``MLP(2)`` predictor and residual transform, untrained: memory does not
depend on the weights). Sampling: 200 000 points, heun, 20 steps. Likelihood: 20 000
checkerboard points, dopri5 at the default tolerances, Hutchinson (one probe).

    python -m benchmarks.memory_batching            # writes benchmarks/results/memory_batching_cpu.json
    python -m benchmarks.memory_batching --quick    # tiny sizes (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _child(kind: str, n: int, batch_size: int | None) -> dict:
    import torch

    import ndmsolve as nd
    from ndmsolve.data import checkerboard
    from ndmsolve.fields import MLP, EpsilonPredictor

    torch.set_num_threads(1)
    torch.manual_seed(0)
    sched = nd.LinearLogSNR(logsnr_min=-12.0, logsnr_max=12.0)
    model = nd.NDM(
        EpsilonPredictor(MLP(2), sched),
        transform=nd.ResidualTransform(MLP(2, zero_init=True)),
        schedule=sched,
        data_shape=(2,),
    ).eval()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if kind == "sample":
        out = nd.sample(model, n, "heun", steps=20, generator=0, batch_size=batch_size)
    else:
        x = checkerboard(n, generator=torch.Generator().manual_seed(1))
        out = nd.log_likelihood(
            model, x, "dopri5", trace="hutchinson", generator=0, batch_size=batch_size
        )
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rss_mb": peak / 1024, "before_mb": base / 1024, "wall_s": wall, "nfe": out.nfe}


def _measure(kind: str, n: int, batch_size: int | None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.memory_batching", "--child", kind, str(n)]
    cmd.append(str(batch_size or 0))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, cwd=HERE.parent)
    row = json.loads(res.stdout.strip().splitlines()[-1])
    return {"kind": kind, "n": n, "batch_size": batch_size, **row}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--out-dir", default=str(HERE / "results"))
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        kind, n, b = a.child
        print(json.dumps(_child(kind, int(n), int(b) or None)))
        return 0
    sizes = (
        {"sample": (2000, 500), "likelihood": (200, 50)}
        if a.quick
        else {"sample": (200_000, 10_000), "likelihood": (20_000, 2_000)}
    )
    rows = []
    for kind, (n, b) in sizes.items():
        for batch_size in (None, b):
            row = _measure(kind, n, batch_size)
            rows.append(row)
            print(
                f"{kind:10s} n={n:7d} batch_size={str(batch_size):6s} "
                f"peak RSS {row['peak_rss_mb']:7.1f} MB (after import {row['before_mb']:6.1f}) "
                f"NFE {row['nfe']:6d}  {row['wall_s']:6.1f} s",
                flush=True,
            )
    import torch

    from benchmarks.common import device_name, write_json_atomic

    result = {
        "benchmark": "memory_batching",
        "device": "cpu",
        "device_name": device_name(torch.device("cpu")),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": 1,
        "quick": a.quick,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "how": "ru_maxrss of a fresh subprocess per row (MB = KiB / 1024)",
        "rows": rows,
    }
    name = "memory_batching_cpu_quick.json" if a.quick else "memory_batching_cpu.json"
    write_json_atomic(Path(a.out_dir) / name, result, prefix=".memory_batching.", suffix=".tmp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
