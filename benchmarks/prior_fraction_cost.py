"""What the cheaper prior term costs in variance, and what it buys in −ELBO at equal CPU time.

``continuous_loss(prior_fraction=f)`` evaluates the prior's F(x, 1) part on a random
f·B rows weighted by B/m (unbiased; see ``ndmsolve.objectives``). Two measurements against
the exact loss (f = 1), general transform (``ResidualTransform``) at the predictor's width:

* **variance** at fixed weights and batch, over ``--draws`` seeds: the loss estimate's
  variance (batch mean of ``total``), the gradient's total variance tr Var(g) (summed over
  every parameter) for both, and the variance the subset adds, E‖g_f − g_1‖² (paired: the
  same seed gives the same t, ε; the rows are drawn last), on the MLP (checkerboard) and the
  8×8 U-Net;
* **−ELBO at equal CPU time**: the checkerboard MLP trained for ``--cpu-seconds`` of process
  CPU time (one thread) with each f, ``--seeds`` seeds (same initial weights and data stream
  per seed), then ``objectives.held_out_nelbo`` on held-out points; mean ± SE over seeds
  (``metrics.mean_se``) and the paired difference.

    python -m benchmarks.prior_fraction_cost [--quick] [--fraction 0.125]

Writes ``benchmarks/results/prior_fraction_cost_cpu.json`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

import ndmsolve as nd
from ndmsolve.fields import MLP, EpsilonPredictor, UNet
from ndmsolve.io import atomic_write
from ndmsolve.metrics import mean_se
from ndmsolve.objectives import continuous_loss, held_out_nelbo, prior_rows

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _model(case: str, width: int, seed: int = 0) -> nd.NDM:
    torch.manual_seed(seed)
    sched = nd.LinearLogSNR(-12.0, 12.0)
    if case == "mlp":
        net = lambda: MLP(2, hidden=width, depth=3)  # noqa: E731
    else:
        net = lambda: UNet(1, base=width, mults=(1, 2))  # noqa: E731
    return nd.NDM(EpsilonPredictor(net(), sched), nd.ResidualTransform(net()), sched)


def _batch(case: str, B: int, seed: int) -> torch.Tensor:
    if case == "mlp":
        return nd.data.checkerboard(B, torch.Generator().manual_seed(seed))
    return torch.rand(B, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _grad(model, x, seed: int, f: float) -> tuple[float, torch.Tensor]:
    out = continuous_loss(model, x, generator=torch.Generator().manual_seed(seed), prior_fraction=f)
    loss = out.total.mean()
    g = torch.autograd.grad(loss, list(model.parameters()))
    return float(loss.detach()), torch.cat([v.reshape(-1) for v in g])


def variance(case: str, width: int, B: int, draws: int, f: float) -> dict:
    """Loss and gradient variance over ``draws`` seeds, exact vs subset prior (paired)."""
    model, x = _model(case, width), _batch(case, B, 1)
    loss1, lossf, g1, gf = [], [], [], []
    for k in range(draws):
        a, ga = _grad(model, x, k, 1.0)
        b, gb = _grad(model, x, k, f)
        loss1.append(a), lossf.append(b), g1.append(ga), gf.append(gb)
    g1, gf = torch.stack(g1).double(), torch.stack(gf).double()
    l1, lf = torch.tensor(loss1, dtype=torch.float64), torch.tensor(lossf, dtype=torch.float64)
    return dict(
        batch=B,
        width=width,
        draws=draws,
        prior_rows=prior_rows(f, B),
        loss_var_exact=float(l1.var()),
        loss_var_subset=float(lf.var()),
        loss_var_added=float((lf - l1).pow(2).mean()),
        grad_trvar_exact=float(g1.var(0).sum()),
        grad_trvar_subset=float(gf.var(0).sum()),
        grad_var_added=float((gf - g1).pow(2).sum(1).mean()),
        grad_var_added_relative=float((gf - g1).pow(2).sum(1).mean() / g1.var(0).sum()),
    )


def train_cpu(seed: int, f: float, cpu_seconds: float, width: int, B: int, lr: float):
    """Train the checkerboard MLP for ``cpu_seconds`` of process CPU time; (model, steps)."""
    model = _model("mlp", width, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    data_g, loss_g = (torch.Generator().manual_seed(1000 * seed + i) for i in (1, 2))
    steps, t0 = 0, time.process_time()
    while time.process_time() - t0 < cpu_seconds:
        x = nd.data.checkerboard(B, data_g)
        loss = continuous_loss(model, x, generator=loss_g, prior_fraction=f).total.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    return model, steps


def elbo_at_equal_cpu(seeds: int, f: float, cpu_seconds: float, n_eval: int, **kw) -> dict:
    x_eval = nd.data.checkerboard(n_eval, torch.Generator().manual_seed(10_000))
    per = {"exact": [], "subset": []}
    steps = {"exact": [], "subset": []}
    for s in range(seeds):
        for name, frac in (("exact", 1.0), ("subset", f)):
            model, n = train_cpu(s, frac, cpu_seconds, **kw)
            per[name].append(float(held_out_nelbo(model, x_eval, draws=16, generator=s).mean()))
            steps[name].append(n)
            print(f"seed {s} {name}: {n} steps, -ELBO {per[name][-1]:.4f}", file=sys.stderr)
    diff = [b - a for a, b in zip(per["exact"], per["subset"])]
    out = {name: dict(zip(("mean", "se"), mean_se(v)), values=v) for name, v in per.items()}
    for name in per:
        out[name]["steps"] = steps[name]
    out["subset_minus_exact"] = dict(zip(("mean", "se"), mean_se(diff)), values=diff)
    return dict(out, seeds=seeds, cpu_seconds=cpu_seconds, n_eval=n_eval, draws=16, **kw)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    p.add_argument("--fraction", type=float, default=1 / 8, help="prior_fraction (default 1/8)")
    p.add_argument("--cpu-seconds", type=float, default=None, help="per training run (20)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out-dir", default=RESULTS)
    a = p.parse_args(argv)
    try:
        prior_rows(a.fraction, 1)
    except ValueError as e:
        p.error(f"--fraction: {e}")
    if a.seeds < 2:
        p.error(f"--seeds: need at least 2 for a standard error, got {a.seeds}")
    torch.set_num_threads(1)
    q = a.quick
    res = dict(
        benchmark="prior_fraction_cost",
        torch=torch.__version__,
        threads=1,
        quick=q,
        prior_fraction=a.fraction,
        clock="time.process_time (CPU time of this process, 1 thread)",
        load_average_start=list(os.getloadavg()),
        variance={
            "mlp": variance("mlp", 8 if q else 128, 16 if q else 256, 4 if q else 200, a.fraction),
            "unet8": variance("unet8", 4 if q else 32, 2 if q else 64, 3 if q else 30, a.fraction),
        },
    )
    cpu = a.cpu_seconds if a.cpu_seconds is not None else (0.5 if q else 20.0)
    res["elbo_equal_cpu"] = elbo_at_equal_cpu(
        a.seeds, a.fraction, cpu, 64 if q else 2000, width=8 if q else 64, B=256, lr=2e-3
    )
    res["load_average_end"] = list(os.getloadavg())
    path = os.path.join(a.out_dir, "prior_fraction_cost_cpu.json")
    atomic_write(path, lambda fh: fh.write(json.dumps(res, indent=2) + "\n"), binary=False)
    print(json.dumps({k: res[k] for k in ("variance", "elbo_equal_cpu")}, indent=1))
    print(f"wrote {path}")
    return res


if __name__ == "__main__":
    main()
