"""How many draws of t does ``ndmsolve likelihood``'s ELBO need?

The ELBO bits/dim of a point averaged over K draws of t has variance var_x-part plus
var_t / K, where var_t is the variance over draws of t for one point (mean over points) and
var_x the variance over points of the exact per-point ELBO. Over n points the reported
standard error is sqrt((var_x + var_t / K) / n). This measures var_t and var_x on a
checkpoint (``--draws`` single draws per point; ``elbo_bits_per_dim(..., n_t=1)``, the
command's estimator) and prints the standard error for K = 1, 2, 4, ..., 128.

Run: ``ndmsolve train --data digits --model ddpm --steps 300 --batch-size 64 --lr 4e-3
--warmup-steps 30 --lr-schedule cosine --ema-decay 0.99 --base 16 --mults 1,2
--attn-levels "" --no-mid-attn --out /tmp/digits_tiny`` (a tiny, briefly trained model), then
``python -m benchmarks.elbo_draws /tmp/digits_tiny/checkpoint.pt`` ->
``benchmarks/results/elbo_draws_digits_cpu.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

import ndmsolve as nd
from benchmarks import common
from ndmsolve.checkpoint import read_checkpoint
from ndmsolve.data.sets import load_dataset


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--draws", type=int, default=16, help="single draws of t per point")
    p.add_argument("--split", default="test")
    p.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "results/elbo_draws_digits_cpu.json")
    )
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    state = read_checkpoint(a.checkpoint)
    model = nd.load_model(a.checkpoint)
    ds = load_dataset(state["data"], a.split, seed=state["train_config"].get("seed", 0))
    x = ds.x
    vals = []
    for k in range(a.draws):
        g = torch.Generator().manual_seed(10_000 + k)
        r = nd.elbo_bits_per_dim(
            model, x, generator=g, n_t=1, n_bins=ds.n_bins, dtype=torch.float32
        )
        vals.append(r.bpd.double())
    v = torch.stack(vals)  # (draws, n)
    n, K = v.shape[1], v.shape[0]
    var_t = float(v.var(0).mean())  # within-point, over draws
    var_x = max(float(v.mean(0).var()) - var_t / K, 0.0)  # between points, exact ELBO
    se = {k: math.sqrt((var_x + var_t / k) / n) for k in (1, 2, 4, 8, 16, 32, 64, 128)}
    result = {
        "benchmark": "elbo_draws",
        "checkpoint": str(a.checkpoint),
        "data": state["data"],
        "split": a.split,
        "n": n,
        "draws": K,
        "train_steps": state.get("step"),
        "elbo_bpd_mean": float(v.mean()),
        "var_t": var_t,
        "var_x": var_x,
        "se_by_draws": se,
    }
    print(
        f"{state['data']} {a.split}: ELBO {float(v.mean()):.4f} bits/dim; per-draw sd "
        f"{math.sqrt(var_t):.3f}, between-point sd {math.sqrt(var_x):.3f} (n = {n})"
    )
    for k, s in se.items():
        print(f"  {k:>4} draws: SE {s:.4f} bits/dim")
    common.write_json_atomic(Path(a.out), result, prefix=".elbo_draws.", suffix=".tmp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
