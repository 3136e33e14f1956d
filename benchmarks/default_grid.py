"""Which grid and final step should ``nd.sample``'s fixed-step methods use by default?

The closed-form 5-component Gaussian mixture of ``benchmarks/fewstep.py`` (exact
predictor, identity transform, so every error is the sampler's) under three schedules:

* ``ddpm``: DDPM's linear β as a continuous VP schedule, −log ᾱ(t) = 1e-4 + β0 t +
  ½(β1 − β0) t² with β0 = 0.1, β1 = 20 (λ from 9.2 at t = 0 to −10.05 at t = 1): a grid
  uniform in t is far from uniform in λ (its last step spans λ 9.2 → 4), as with
  diffusers' tables;
* ``cosine``: ``CosineLogSNR(-15, 15)`` (the class default);
* ``linear`` (``--schedules``; not run by default): ``LinearLogSNR(-10, 10)``, where
  ``uniform`` and ``logsnr`` coincide.

For every method (``euler``, ``heun``, ``ddim`` and the multistep samplers), grid kind
(``uniform``, ``logsnr``, ``karras``), final step (z at t = 0; or x̂ at σ/α = s_min,
``denoise=True``, with s_min the schedule's end or 0.06, 0.12) and, for the
multistep methods, ``lower_order_final`` True/False, at budgets of 5, 10, 20 and 50 NFE
(``denoise`` costs one; a configuration that does not fit a budget is skipped), it
records over ``--seeds`` seeds (same z_1, data draw and directions per seed for every
configuration, so differences are paired):

* ``sw1``: sliced W1 to an independent data draw of ``--n`` points (256 directions; the
  floor is the same distance between two data draws);
* ``err``: mean distance to the exact PF-ODE endpoint from the same z_1 (RK4 in float64,
  ``--ref-steps`` steps uniform in λ), or to x̂ there for ``denoise``.

The summary gives, per schedule, method and budget, each rule's mean ± s.e. and its ratio
to the best configuration; ``defaults`` checks the per-method defaults of ``nd.sample``
(no grid or final-step argument) against the best grid.

Results (``benchmarks/results/default_grid_cpu.json``; n = 500, 3 seeds, floor 0.097 ±
0.024): the multistep samplers on the log-SNR grid, ending with z at t = 0 with
``lower_order_final=True`` (their defaults), are within 1.13x of the best configuration at 20
and 50 NFE on both schedules (``unipc_3m`` at 20 NFE: 0.111 vs 0.108 under cosine, 0.109 vs
0.108 under DDPM's β), where a uniform-t grid breaks the 3-prediction methods (``unipc_3m``
0.164 and 0.270). At 5-10 NFE no single rule is best: under the cosine ±15 schedule uniform
in t (5-10 NFE) or x̂ at σ/α = 0.12 (10 NFE) is 1.5-2.7x better than the default; under
DDPM's β the default is within 1.26x at 10 NFE and 1.0-1.74x at 5. ``lower_order_final``
False helps only the 2-prediction methods at 5 NFE with x̂ ends, and hurts the
3-prediction ones (kept True). ``ddim`` is best on the uniform grid on both schedules (kept
uniform), as is ``heun`` under cosine (kept uniform; under DDPM's β log-SNR is 1.06-1.15x
better). Returning x̂ at σ/α = 0.12 (``denoise=True, sigma_min=0.12``) is the best end at
10-50 NFE but changes what ``sample`` returns, so it stays a recipe, not a default.

Run: ``python -m benchmarks.default_grid`` (1 thread, ~5 CPU minutes) ->
``benchmarks/results/default_grid_cpu.json``; ``--quick`` for the smoke test.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

import ndmsolve as nd
from benchmarks import common, fewstep
from ndmsolve.metrics import SlicedWasserstein
from ndmsolve.sampling.multistep import MULTISTEP_METHODS

METHODS = ("euler", "heun", "ddim", *MULTISTEP_METHODS)
QUICK_METHODS = ("euler", "ddim", "dpmpp_3m", "unipc_2m")
GRIDS = ("uniform", "logsnr", "karras")
S_MINS = (0.06, 0.12)
NFES = (5, 10, 20, 50)


class DDPMLinearBeta(nd.Schedule):
    """DDPM's linear β as a continuous VP schedule (no closed-form inverse: bisection)."""

    def __init__(self, b0: float = 0.1, b1: float = 20.0, c0: float = 1e-4):
        super().__init__()
        self.b0, self.b1, self.c0 = b0, b1, c0
        ends = self.log_snr(torch.tensor([1.0, 0.0], dtype=torch.float64))
        self.logsnr_min, self.logsnr_max = float(ends[0]), float(ends[1])

    def log_snr(self, t):
        u = self.c0 + self.b0 * t + 0.5 * (self.b1 - self.b0) * t**2  # −log ᾱ
        return -torch.log(torch.expm1(u))  # log(ᾱ/(1 − ᾱ))


def models() -> dict:
    """{schedule name: closed-form NDM (float64)} on fewstep's mixture."""
    base = fewstep.mixture_models()[0]["mixture"]
    data = base.predictor.data
    out = {}
    for name, sched in (
        ("ddpm", DDPMLinearBeta()),
        ("cosine", nd.CosineLogSNR(-15.0, 15.0)),
        ("linear", nd.LinearLogSNR(-10.0, 10.0)),
    ):
        pred = nd.ExactPredictor(data, sched, shared_time=True)
        out[name] = nd.NDM(pred, schedule=sched, data_shape=(2,)).double()
    return out, lambda n, g: data.sample(n, generator=g)


def configs(model, quick: bool) -> list:
    """fewstep's configuration tuples (library, method, grid, final, s_min, rho, lof, ext)."""
    grids = GRIDS if type(model.schedule) is not nd.LinearLogSNR else ("logsnr", "karras")
    s_mins = fewstep.model_s_mins(model, S_MINS[-1:] if quick else S_MINS)
    out = []
    for m in QUICK_METHODS if quick else METHODS:
        lofs = (True, False) if m in MULTISTEP_METHODS else (None,)
        for g in grids:
            out += [("ndmsolve", m, g, "z", None, None, lof, None) for lof in lofs]
            if m in ("euler", "heun"):
                continue
            out += [("ndmsolve", m, g, "x_hat", s, None, lof, None) for s in s_mins for lof in lofs]
    return out


def rule(c) -> str:
    """The configuration less its method: grid / final / lower-order policy."""
    _, _, g, final, s, _, lof, _ = c
    end = "z" if s is None else f"x_hat@{s:.3g}"
    return f"{g}/{end}" + ("" if lof is None else f"/lof={lof}")


def default_run(model, z1, method, nfe):
    """``nd.sample`` with only ``steps``: the defaults under test (steps = nfe / per-step)."""
    steps = nfe // nd.solvers.METHODS[method].nfe_per_step
    if steps < nd.solvers.METHODS[method].min_steps:
        return None
    res = nd.sample(model, z1=z1, method=method, steps=steps)
    return res.samples, res.nfe, steps


def defaults_rows(model, draw, seeds, n, nfes, ref_steps) -> dict:
    """{(method, nfe): {"sw1", "err", "nfe"}} of the default call, on the seeds of ``evaluate``."""
    out = {}
    for seed in seeds:
        z1, data, dirs, _ = fewstep.seed_setup(model, draw, n, seed, torch.float64)
        sw1 = SlicedWasserstein(data, dirs, p=1.0)
        ref = fewstep.reference(model, z1, [0.0], ref_steps)[0.0]
        for nfe in nfes:
            for m in METHODS:
                got = default_run(model, z1.clone(), m, nfe)
                if got is None:
                    continue
                x, used, _ = got
                r = out.setdefault((m, nfe), {"sw1": [], "err": [], "nfe": used})
                r["sw1"].append(sw1(x))
                # the default ends with z at t_min = 0 unless it denoises: compare like with like
                r["err"].append(float((x - ref[0]).norm(dim=1).mean()))
    return out


def summarise(res, floors, defaults, nfes) -> list:
    rows = []
    for m in METHODS:
        for nfe in nfes:
            cand = {c: r for (c, nf), r in res.items() if nf == nfe and c[1] == m}
            if not cand:
                continue
            stats = {c: fewstep.stats(r["sw1"]) for c, r in cand.items()}
            best = min(stats, key=lambda c: stats[c]["mean"])
            for c, r in cand.items():
                rows.append(
                    {
                        "method": m,
                        "nfe": nfe,
                        "rule": rule(c),
                        "steps": r["steps"],
                        "sw1": stats[c],
                        "err": fewstep.stats(r["err"]),
                        "sw1_minus_best": fewstep.paired(r["sw1"], cand[best]["sw1"]),
                        "ratio_to_best": stats[c]["mean"] / stats[best]["mean"],
                        "best": c == best,
                    }
                )
            d = defaults.get((m, nfe))
            if d is not None:
                ds = fewstep.stats(d["sw1"])
                rows.append(
                    {
                        "method": m,
                        "nfe": d["nfe"],
                        "rule": "DEFAULT",
                        "sw1": ds,
                        "err": fewstep.stats(d["err"]),
                        "sw1_minus_best": fewstep.paired(d["sw1"], cand[best]["sw1"]),
                        "ratio_to_best": ds["mean"] / stats[best]["mean"],
                        "best_rule": rule(best),
                    }
                )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--n", type=int, default=None, help="samples per run (default 500; quick 200)")
    p.add_argument("--seeds", type=int, default=None, help="seeds (default 3; quick 2)")
    p.add_argument("--nfe", default=None, help="comma-separated budgets (default 5,10,20,50)")
    p.add_argument("--ref-steps", type=int, default=None, help="RK4 steps (default 200)")
    p.add_argument(
        "--schedules", default="ddpm,cosine", help="comma-separated, of ddpm,cosine,linear"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "results/default_grid_cpu.json")
    )
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    n = a.n or (200 if a.quick else 500)
    seeds = list(range(a.seeds or (2 if a.quick else 3)))
    nfes = [int(v) for v in a.nfe.split(",")] if a.nfe else ([5, 10] if a.quick else list(NFES))
    ref_steps = a.ref_steps or (40 if a.quick else 200)
    all_models, draw = models()
    names = a.schedules.split(",")
    t0 = time.process_time()
    result = {
        "benchmark": "default_grid",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": a.threads,
        "n": n,
        "seeds": seeds,
        "nfes": nfes,
        "ref_steps": ref_steps,
        "schedules": {},
    }
    for name in names:
        model = all_models[name]
        res, floors, ref_err = fewstep.evaluate(
            model, draw, configs(model, a.quick), nfes, seeds, n, None, ref_steps
        )
        defaults = defaults_rows(model, draw, seeds, n, nfes, ref_steps)
        result["schedules"][name] = {
            "schedule": repr(model.schedule),
            "floor": fewstep.stats(floors),
            "ref_err": ref_err,
            "rows": summarise(res, floors, defaults, nfes),
        }
        _report(name, result["schedules"][name])
    result["cpu_s"] = time.process_time() - t0
    common.write_json_atomic(Path(a.out), result, prefix=".default_grid.", suffix=".tmp")
    print(f"wrote {a.out} ({result['cpu_s']:.0f} CPU s)")
    return 0


def _report(name, r) -> None:
    f = r["floor"]
    print(f"== {name}: {r['schedule']}  floor {f['mean']:.4f} ± {f['se']:.4f}")
    for row in r["rows"]:
        if row["rule"] == "DEFAULT" or row.get("best"):
            s = row["sw1"]
            extra = f"  (best: {row['best_rule']})" if row["rule"] == "DEFAULT" else ""
            print(
                f"  {row['method']:>9} {row['nfe']:>3} NFE  {row['rule']:<32} "
                f"sw1 {s['mean']:.4f} ± {s['se']:.4f}  x{row['ratio_to_best']:.2f}{extra}"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
