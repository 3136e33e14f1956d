"""Work-precision diagrams of the adaptive ODE solvers, with the mean AND the worst
per-sample error, and the likelihood-tolerance table behind the defaults.

Part ``wp``: four batched problems, each a batch of independent samples solved as one
tensor (one step size for the batch, as in sampling and likelihoods):

    vdp        Van der Pol, mu = 3, 64 initial states, t in [0, 6]
    lv         Lotka-Volterra (1.5, 1, 3, 1), 64 initial states, t in [0, 8]
    linear     stiff-ish linear y' = A_b y, 4-D, eigenvalues -1 ... -60, 64 samples, t in [0, 1]
    ndm        log-densities of a batch of points under a closed-form NDM: the PF-ODE and
               its exact divergence (what nd.log_likelihood integrates), 2-D Gaussian
               mixture, time-varying affine transform, float64

Methods: ndmsolve's bosh3/dopri5/tsit5 under each error norm (rms, sample_max, max), the
likelihood default (``LIKELIHOOD_DEFAULTS``), and torchdiffeq's bosh3/dopri5 (its RMS
norm), over a range of tolerances rtol = atol. Reference: scipy's DOP853 at rtol = atol =
1e-12 (1e-11 for ndm); the closed form exp(A t) for linear. Per sample the error is the
max-abs error of its final state (ndm: |log p error| in nats). Recorded per run: NFE, wall
seconds (one run each, same process; the machine's load is not controlled), mean and
worst over the batch.

Headline: at equal NFE (log-log interpolation of each worst-error curve at the NFE values
both reach), torchdiffeq dopri5's worst-sample error over ours.

Part ``table``: nd.log_likelihood on the ndm case with 512 points, several point sets
(seeds), reference scipy DOP853 at 1e-11: NFE, mean and worst error at tol 1e-3, 1e-4,
1e-5, for the old default (dopri5, rms) and the new one.

    python -m benchmarks.work_precision [--part wp,table] [--quick] [--seeds 0,1,2]

Writes ``benchmarks/results/work_precision_cpu.json`` and ``work_precision_cpu.png``.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
from scipy.integrate import solve_ivp

import ndmsolve as nd
from benchmarks import common
from ndmsolve.likelihood import AugmentedField, Divergence, standard_normal_logp
from ndmsolve.solvers import solve
from ndmsolve.solvers.api import PER_SAMPLE_CONTROL

#: nd.log_likelihood's defaults (method and step control)
LIKELIHOOD_DEFAULTS = {"method": "tsit5", **PER_SAMPLE_CONTROL}

_HERE = os.path.dirname(os.path.abspath(__file__))

RESULTS = os.path.join(_HERE, "results")
F64 = torch.float64


# --------------------------------------------------------------------------- problems
class Problem:
    """A batch problem: ``f(t, y)`` on y (B, d), ``y0``, ``t1``, and how to score."""

    def __init__(self, name, f, y0, t1, ref=None, score=None, ref_tol=1e-12):
        self.name, self.f, self.y0, self.t1 = name, f, y0, t1
        self.score = score or (lambda y, ref: (y - ref).abs().amax(1))
        self.ref = ref if ref is not None else scipy_reference(f, y0, t1, ref_tol)


def scipy_reference(f, y0: torch.Tensor, t1: float, tol: float) -> torch.Tensor:
    """The whole batch as one system through scipy's DOP853 at rtol = atol = tol."""
    shape = y0.shape

    def fun(t, y):
        with torch.no_grad():
            return (
                f(torch.tensor(t, dtype=F64), torch.from_numpy(y).reshape(shape))
                .reshape(-1)
                .numpy()
            )

    out = solve_ivp(fun, (0.0, t1), y0.reshape(-1).numpy(), method="DOP853", rtol=tol, atol=tol)
    if not out.success:
        raise RuntimeError(f"scipy reference failed: {out.message}")
    return torch.from_numpy(out.y[:, -1]).reshape(shape)


def _grid_states(n: int, lo, hi, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor(lo, dtype=F64), torch.tensor(hi, dtype=F64)
    return lo + (hi - lo) * torch.rand(n, len(lo), generator=g, dtype=F64)


def vdp(n: int) -> Problem:
    mu = 3.0

    def f(t, y):
        return torch.stack([y[:, 1], mu * (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]], 1)

    return Problem("vdp", f, _grid_states(n, (-2.5, -3.0), (2.5, 3.0), 0), 6.0)


def lotka_volterra(n: int) -> Problem:
    a, b, c, d = 1.5, 1.0, 3.0, 1.0

    def f(t, y):
        return torch.stack(
            [a * y[:, 0] - b * y[:, 0] * y[:, 1], -c * y[:, 1] + d * y[:, 0] * y[:, 1]], 1
        )

    return Problem("lv", f, _grid_states(n, (0.5, 0.5), (4.0, 3.0), 1), 8.0)


def stiff_linear(n: int) -> Problem:
    g = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=F64))
    A = q @ torch.diag(torch.tensor([-1.0, -5.0, -20.0, -60.0], dtype=F64)) @ q.T
    A = A + 0.5 * (torch.randn(4, 4, generator=g, dtype=F64))  # non-normal, still stable
    y0 = torch.randn(n, 4, generator=g, dtype=F64)
    ref = y0 @ torch.linalg.matrix_exp(A).T

    def f(t, y):
        return y @ A.T

    return Problem("linear", f, y0, 1.0, ref=ref)


def ndm_case():
    """The closed-form NDM: 3-component 2-D mixture, affine F(x, t), LinearLogSNR(-10, 10)."""
    t = lambda *v: torch.tensor(v, dtype=F64)  # noqa: E731
    covs = torch.tensor(
        [[[0.20, 0.05], [0.05, 0.10]], [[0.10, 0.0], [0.0, 0.25]], [[0.15, -0.05], [-0.05, 0.10]]],
        dtype=F64,
    )
    data = nd.GaussianMixture(t(0.5, 0.3, 0.2), t([-1.5, 0.0], [1.0, 1.0], [1.0, -1.5]), covs)
    tr = nd.AffineTimeTransform(t(0.6, -0.4), t(0.3, 0.2), t(1.0, -0.6), t(-0.4, 0.5))
    sched = nd.LinearLogSNR(-10.0, 10.0)
    return data, nd.NDM(nd.ExactPredictor(data, sched, tr), tr, sched, data_shape=(2,))


def ndm_points(n: int, seed: int):
    data, model = ndm_case()
    return model, data.sample(n, torch.Generator().manual_seed(seed))


def ndm_problem(n: int, seed: int = 0) -> Problem:
    model, z0 = ndm_points(n, seed)
    field = AugmentedField(Divergence(model.velocity, "exact", None), (2,), n)
    y0 = torch.cat([z0, z0.new_zeros(n, 1)], 1)

    def logp(y):
        return standard_normal_logp(y[:, :2]) + y[:, 2]

    p = Problem(
        "ndm", field, y0, 1.0, score=lambda y, ref: (logp(y) - logp(ref)).abs(), ref_tol=1e-11
    )
    return p


# --------------------------------------------------------------------------- runs
def configs(quick: bool):
    ours = [
        (f"{m}/{nrm}", m, {"norm": nrm})
        for m in ("bosh3", "dopri5", "tsit5")
        for nrm in ("rms", "sample_max", "max")
    ]
    if quick:
        ours = [c for c in ours if c[1] == "tsit5" and c[2]["norm"] != "max"]
    default = dict(LIKELIHOOD_DEFAULTS)
    method = default.pop("method")
    ours.append(("default", method, default))
    theirs = [
        (f"torchdiffeq:{m}", f"torchdiffeq:{m}", {})
        for m in (("dopri5",) if quick else ("bosh3", "dopri5"))
    ]
    return ours + theirs


def run_one(p: Problem, method: str, kw: dict, tol: float) -> dict:
    t0 = time.perf_counter()
    with torch.no_grad():
        sol = solve(p.f, p.y0, 0.0, p.t1, method, rtol=tol, atol=tol, max_steps=100_000, **kw)
    wall = time.perf_counter() - t0
    err = p.score(sol.y, p.ref)
    return {
        "tol": tol,
        "nfe": int(sol.nfe),
        "wall_s": wall,
        "mean": float(err.mean()),
        "worst": float(err.max()),
    }


def equal_nfe_ratio(ours: list, theirs: list) -> dict:
    """theirs' worst error over ours at equal NFE: both curves interpolated log-log at the
    NFE values inside both ranges (their measured NFE points there)."""

    def curve(rows):
        rows = sorted(rows, key=lambda r: r["nfe"])
        return np.log([r["nfe"] for r in rows]), np.log([max(r["worst"], 1e-300) for r in rows])

    xo, yo = curve(ours)
    xt, yt = curve(theirs)
    lo, hi = max(xo[0], xt[0]), min(xo[-1], xt[-1])
    xs = np.unique(np.concatenate([xo, xt]))
    xs = xs[(xs >= lo) & (xs <= hi)]
    if xs.size == 0:
        return {"nfe": [], "ratio": [], "min": None, "median": None}
    ratio = np.exp(np.interp(xs, xt, yt) - np.interp(xs, xo, yo))
    return {
        "nfe": np.exp(xs).round().astype(int).tolist(),
        "ratio": ratio.tolist(),
        "min": float(ratio.min()),
        "median": float(np.median(ratio)),
    }


def part_wp(quick: bool) -> dict:
    n = 4 if quick else 64
    problems = [vdp(n), lotka_volterra(n), stiff_linear(n), ndm_problem(8 if quick else 256)]
    tols = {
        "quick": [1e-3, 1e-5],
        "ode": [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8],
        "ndm": [1e-3, 1e-4, 1e-5, 1e-6, 1e-7],
    }
    out = {}
    for p in problems:
        ts = tols["quick"] if quick else tols["ndm" if p.name == "ndm" else "ode"]
        rows = {}
        for label, method, kw in configs(quick):
            rows[label] = [run_one(p, method, kw, tol) for tol in ts]
            last = rows[label][-1]
            print(
                f"  {p.name:7s} {label:22s} tol {ts[-1]:.0e}: NFE {last['nfe']:5d} "
                f"mean {last['mean']:.2e} worst {last['worst']:.2e}",
                flush=True,
            )
        head = {
            k: equal_nfe_ratio(rows[k], rows["torchdiffeq:dopri5"])
            for k in rows
            if not k.startswith("torchdiffeq")
        }
        mean_head = {}
        for k in rows:
            if k.startswith("torchdiffeq"):
                continue
            swapped = [dict(r, worst=r["mean"]) for r in rows[k]]
            theirs = [dict(r, worst=r["mean"]) for r in rows["torchdiffeq:dopri5"]]
            mean_head[k] = equal_nfe_ratio(swapped, theirs)
        out[p.name] = {
            "batch": int(p.y0.shape[0]),
            "runs": rows,
            "worst_ratio_torchdiffeq_dopri5_over_ours": head,
            "mean_ratio_torchdiffeq_dopri5_over_ours": mean_head,
        }
        d = head["default"]
        print(
            f"  {p.name}: torchdiffeq dopri5 worst / ours (default) at equal NFE: "
            f"min {d['min']}, median {d['median']}",
            flush=True,
        )
    return out


def part_table(seeds: list, quick: bool) -> dict:
    n = 8 if quick else 512
    tols = [1e-3, 1e-4] if quick else [1e-3, 1e-4, 1e-5]
    old_pi = (0.2, 0.4)  # solve's PI controller, nd.log_likelihood's before
    variants = {
        "dopri5, rms (old default)": dict(method="dopri5", norm="rms", pi_coeffs=old_pi),
        "tsit5, rms": dict(method="tsit5", norm="rms", pi_coeffs=old_pi),
        "tsit5, sample_max": dict(method="tsit5", norm="sample_max", pi_coeffs=old_pi),
        "new default": {},
    }  # nothing passed: nd.log_likelihood's own defaults
    rows = {k: {str(t): [] for t in tols} for k in variants}
    agree = []
    for seed in seeds:
        model, z0 = ndm_points(n, seed)
        p = ndm_problem(n, seed)
        ref = standard_normal_logp(p.ref[:, :2]) + p.ref[:, 2]
        ours_tight = nd.log_likelihood(model, z0, "dopri5", trace="exact", rtol=1e-10, atol=1e-10)
        agree.append(float((ours_tight.logp - ref).abs().max()))
        for name, kw in variants.items():
            for tol in tols:
                res = nd.log_likelihood(model, z0, trace="exact", rtol=tol, atol=tol, **kw)
                e = (res.logp - ref).abs()
                rows[name][str(tol)].append(
                    {"seed": seed, "nfe": res.nfe, "mean": float(e.mean()), "worst": float(e.max())}
                )
        print(
            f"  seed {seed} done (ours dopri5 1e-10 vs DOP853 1e-11: {agree[-1]:.1e})", flush=True
        )

    def summary(vals):
        a = np.asarray(vals, dtype=float)
        se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else None
        return {"mean": float(a.mean()), "se": se, "max": float(a.max())}

    table = {}
    for name in variants:
        table[name] = {}
        for tol in tols:
            r = rows[name][str(tol)]
            table[name][str(tol)] = {
                k: summary([x[k] for x in r]) for k in ("nfe", "mean", "worst")
            }
            s = table[name][str(tol)]
            print(
                f"  {name:26s} tol {tol:.0e}: NFE {s['nfe']['mean']:6.1f} "
                f"mean {s['mean']['mean']:.2e} worst {s['worst']['mean']:.2e} "
                f"(max over seeds {s['worst']['max']:.2e})",
                flush=True,
            )
    return {
        "points": n,
        "seeds": seeds,
        "tols": tols,
        "variants": {k: dict(v) for k, v in variants.items()},
        "per_seed": rows,
        "summary": table,
        "ours_1e-10_vs_dop853_max_abs": agree,
    }


def plot(wp: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ndmsolve.io import atomic_write

    names = list(wp)
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 7.5), squeeze=False)
    for j, name in enumerate(names):
        runs = wp[name]["runs"]
        for label, rows in runs.items():
            if label.startswith(("bosh3/max", "dopri5/max")):
                continue
            style = (
                dict(lw=2.2, color="k")
                if label == "default"
                else dict(lw=1.2, ls="--")
                if label.startswith("torchdiffeq")
                else dict(lw=1.0)
            )
            for i, xkey in enumerate(("nfe", "wall_s")):
                x = [r[xkey] for r in rows]
                (line,) = axes[i, j].loglog(
                    x, [r["worst"] for r in rows], marker="o", ms=3, label=label, **style
                )
                axes[i, j].loglog(
                    x,
                    [r["mean"] for r in rows],
                    marker=".",
                    ms=2,
                    alpha=0.35,
                    color=line.get_color(),
                    lw=0.8,
                    ls=":",
                )
        axes[0, j].set_title(f"{name} (batch {wp[name]['batch']})")
        axes[0, j].set_xlabel("NFE")
        axes[1, j].set_xlabel("wall seconds")
    axes[0, 0].set_ylabel("worst-sample error (solid); mean (dotted)")
    axes[1, 0].set_ylabel("worst-sample error (solid); mean (dotted)")
    axes[0, -1].legend(fontsize=6)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", default="wp,table")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", default=RESULTS)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    parts = set(a.part.split(","))
    res = {
        "meta": {
            "benchmark": "work_precision",
            "device": "cpu",
            "device_name": common.device_name(torch.device("cpu")),
            "torch": torch.__version__,
            "threads": a.threads,
            "quick": a.quick,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "likelihood_defaults": {
                k: v if isinstance(v, (str, int, float)) else list(v)
                for k, v in LIKELIHOOD_DEFAULTS.items()
            },
        }
    }
    os.makedirs(a.out_dir, exist_ok=True)
    stem = "work_precision_cpu" + ("_quick" if a.quick else "")
    if "wp" in parts:
        print("[wp] work-precision", flush=True)
        res["wp"] = part_wp(a.quick)
        plot(res["wp"], os.path.join(a.out_dir, stem + ".png"))
    if "table" in parts:
        print("[table] likelihood tolerance table", flush=True)
        res["table"] = part_table([int(s) for s in a.seeds.split(",")], a.quick)
    common.write_json_atomic(
        os.path.join(a.out_dir, stem + ".json"), res, prefix=f".{stem}.", suffix=".json"
    )
    return res


if __name__ == "__main__":
    main()
