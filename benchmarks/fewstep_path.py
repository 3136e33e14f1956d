"""Why few-step multistep samplers fail on a trained NDM: x̂ and F along exact PF-ODE paths.

For each demo model (``fewstep.py``'s ``demo-NDM`` and ``demo-DDPM``), from ``--n`` fixed
draws z_1 (seed 1000), in float64:

* ``rk4``: RK4 self-convergence, uniform in λ, at 50/100/200 steps against 400: the mean
  and max distance to the 400-step path at several t (where the error accrues);
* ``profile``: along the 400-step path, binned in t: mean |x̂|, mean |dx̂/dλ̃| and
  |d²x̂/dλ̃²| (λ̃ = λ/2, finite differences) and mean |F(x̂, t) − x̂| (how far the learned
  transform is from the identity at the predictions);
* ``local``: the one-step error (mean distance to the exact path) of each step of a 10-
  and a 20-step λ-uniform subgrid, started from the exact state with the exact past
  predictions, for NDM-DDIM and ``dpmpp_2m`` combining in x (F at the extrapolated D) or
  in F (``extrapolate="F"``), with max |D − x̂| of the extrapolation.

Run: ``python -m benchmarks.fewstep_path --checkpoints runs/demo/ndm.pt runs/demo/ddpm.pt``
(~1 CPU minute) -> ``benchmarks/results/fewstep_path_cpu.json``; ``--quick`` for the
smoke test (briefly trained models).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import ndmsolve as nd
from benchmarks import common, fewstep
from ndmsolve.sampling.multistep import multistep_weights

T_AT = (0.9, 0.7, 0.5, 0.3, 0.1, 0.0)
EDGES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0)


def rk4_path(model, z1, steps):
    grid = nd.make_time_grid(steps, "logsnr", model.schedule, dtype=torch.float64)
    return grid, nd.sample(model, z1=z1, method="rk4", grid=grid, return_path=True).path


def convergence(model, z1, ref_steps):
    g_ref, p_ref = rk4_path(model, z1, ref_steps)
    out = {}
    for steps in (ref_steps // 8, ref_steps // 4, ref_steps // 2):
        g, p = rk4_path(model, z1, steps)
        d = (p - p_ref[:: ref_steps // steps]).norm(dim=-1)  # (steps+1, B)
        at = {}
        for t in T_AT:
            i = int((g - t).abs().argmin())
            at[f"{float(g[i]):.3g}"] = {"mean": float(d[i].mean()), "max": float(d[i].max())}
        out[str(steps)] = at
    return out, g_ref, p_ref


@torch.no_grad()
def profile(model, g, p):
    B = p.shape[1]
    xh = torch.stack([model.x_hat(p[i], g[i].expand(B)) for i in range(len(g))])
    Fx = torch.stack([model.F(xh[i], g[i].expand(B)) for i in range(len(g))])
    lam = 0.5 * model.schedule.log_snr(g)
    dl = lam[1:] - lam[:-1]
    d1 = (xh[2:] - xh[1:-1]).norm(dim=-1) / dl[1:, None]
    d2 = (xh[2:] - 2 * xh[1:-1] + xh[:-2]).norm(dim=-1) / (dl[1:, None] ** 2)
    gi, x_in, F_in = g[1:-1], xh[1:-1], Fx[1:-1]
    rows = []
    for hi, lo in zip(EDGES[:-1], EDGES[1:], strict=True):
        sel = (gi <= hi) & (gi > lo)
        rows.append(
            {
                "t": [lo, hi],
                "x_hat_norm": float(x_in[sel].norm(dim=-1).mean()),
                "dx_hat_dlam": float(d1[sel].mean()),
                "d2x_hat_dlam2": float(d2[sel].mean()),
                "d2x_hat_dlam2_p99": float(d2[sel].flatten().quantile(0.99)),
                "F_minus_x": float((F_in[sel] - x_in[sel]).norm(dim=-1).mean()),
            }
        )
    return rows, xh


@torch.no_grad()
def local_errors(model, g, p, xh, steps):
    """One-step errors on a ``steps``-step subgrid of the exact path ``(g, p)``."""
    k = (len(g) - 1) // steps
    idx = list(range(0, len(g), k))
    lam = (0.5 * model.schedule.log_snr(g[idx])).tolist()
    pred, _ = multistep_weights("dpmpp_2m", lam, False)
    B = p.shape[1]
    rows = []
    for i in range(steps):
        a, b = idx[i], idx[i + 1]
        t, s = g[a].expand(B), g[b].expand(B)
        (al_t, si_t), (al_s, si_s) = (model.schedule.alpha_sigma(g[j : j + 1]) for j in (a, b))

        def step(F_s, F_t, a=a):
            return al_s * F_s + (si_s / si_t) * (p[a] - al_t * F_t)

        w = pred[i]
        xs = [xh[idx[i - 1]], xh[a]] if len(w) == 2 else [xh[a]]
        D = sum(wj * x for wj, x in zip(w, xs, strict=True))
        runs = {
            "ddim": step(model.F(xh[a], s), model.F(xh[a], t)),
            "dpmpp_2m_x": step(model.F(D, s), model.F(D, t)),
            "dpmpp_2m_F": step(
                sum(wj * model.F(x, s) for wj, x in zip(w, xs, strict=True)),
                sum(wj * model.F(x, t) for wj, x in zip(w, xs, strict=True)),
            ),
        }
        row = {"t": float(g[a]), "max_D_minus_x_hat": float((D - xh[a]).norm(dim=-1).max())}
        row.update({k: float((z - p[b]).norm(dim=-1).mean()) for k, z in runs.items()})
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--n", type=int, default=None, help="paths (default 500; quick 32)")
    ap.add_argument("--checkpoints", nargs=2, metavar=("NDM", "DDPM"), default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    n = a.n or (32 if a.quick else 500)
    ref_steps = 80 if a.quick else 400
    t0 = time.process_time()
    models, _, info = fewstep.demo_models(20, 16 if a.quick else 128, 0, a.checkpoints)
    z1 = torch.randn(n, 2, generator=torch.Generator().manual_seed(1000), dtype=torch.float64)
    result = {
        "meta": {
            "benchmark": "fewstep_path",
            "device": "cpu",
            "device_name": common.device_name(torch.device("cpu")),
            "torch": torch.__version__,
            "quick": a.quick,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "config": {"n": n, "z1_seed": 1000, "ref_steps": ref_steps, "demo": info},
        "models": {},
    }
    for name in ("demo-NDM", "demo-DDPM"):
        m = models[name].double()
        conv, g, p = convergence(m, z1, ref_steps)
        prof, xh = profile(m, g, p)
        result["models"][name] = {
            "rk4": conv,
            "profile": prof,
            "local": {str(s): local_errors(m, g, p, xh, s) for s in (10, 20)},
        }
    result["meta"]["cpu_s"] = time.process_time() - t0
    out = Path(a.out) / ("fewstep_path_quick.json" if a.quick else "fewstep_path_cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    common.write_json_atomic(out, result, prefix=".fewstep_path", suffix=".json")
    print(f"wrote {out} ({result['meta']['cpu_s']:.0f} CPU s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
