"""Few-step sampling: ndmsolve's samplers against k-diffusion's at 5/10/20/40 NFE.

Models (2D, so the sliced Wasserstein distance to data is a sharp quality measure):

* ``mixture``: a closed-form 5-component Gaussian mixture, ``LinearLogSNR(-10, 10)``, the
  exact predictor x̂ = E[x | z_t] (``ndmsolve.analytic``), identity transform: a classical
  diffusion, so k-diffusion's samplers apply exactly (as a denoiser D(x, σ) with
  x = z/α, σ = σ_t/α_t). Every difference is discretisation error.
* ``mixture-affine``: the same data under the time-varying affine transform
  F(x, t) = (1 − 0.6 t, 1 − 0.3 t) ⊙ x + t (0.5, −0.5) (an NDM; no peer can sample it).
* ``demo-DDPM``, ``demo-NDM``: the demo's models (checkerboard, ε-parametrised MLP; the
  NDM with a learned residual transform), loaded with ``--checkpoints`` (what
  ``ndmsolve demo`` writes) or trained here briefly. Their error includes the model's
  own; the DDPM is also sampled by k-diffusion.

Configurations. Ours: ``euler``, ``heun`` (PF-ODE), ``ddim`` and the multistep samplers
of ``ndmsolve.sampling.multistep`` (with and without ``lower_order_final``; with
``--extrapolate x,F`` also combining the predictions in F, name suffix ``extrapolate-F``)
on three grids (``uniform`` in t, ``logsnr``, ``karras``), ending at t = 0 with z
(``final=z``) or with one last evaluation returning x̂_θ(z, t_min) (``final=x_hat``,
k-diffusion's final step to σ = 0) for t_min at each noise-to-signal ratio s_min = σ/α
of ``S_MINS``.
k-diffusion: Euler, Heun, DPM-2, LMS, DPM-Solver++(2M) and (3M, η = 0) on its
``karras`` σ grids (ρ in ``KD_RHOS``) and ``exponential`` grid from σ_max = s(t = 1) to
each σ_min in ``S_MINS``, ending at σ = 0 as it does. Budgets are exact predictor counts
(counted by a wrapper, not inferred).

Statistics (paired). Per seed every configuration sees the same z_1 (``--n`` draws), the
same fresh data draw and the same 256 projection directions, so differences between
configurations are paired; each is reported as the mean over seeds of the per-seed
difference ± its standard error. Two measures:

* ``sw1``: sliced W1 between the samples and the data draw (its floor: the same distance
  between two independent data draws of ``--n``, mean ± s.e. over seeds);
* ``err``: mean Euclidean distance of each sample to the exact PF-ODE endpoint from the
  same z_1 (RK4, ``REF_STEPS`` steps uniform in λ through every t_min used; for
  ``final=x_hat`` the exact target is x̂ at the exact state there). It has no sampling
  floor; for the demo models it isolates the solver's error from the model's. (For
  k-diffusion's LMS the last step to σ = 0 is not exactly x̂, so its ``err`` is against a
  slightly different target.)

The best configuration of each library (and each method) at each budget is chosen on the
``--seeds`` selection seeds; choosing over many configurations biases that minimum
down, so the chosen ones are re-run on as many fresh ``confirm`` seeds, which give the
reported comparison (ours-best − k-diffusion-best, each − our Euler) without selection
bias.

Wall time (``--timing``): CPU time of the process (``time.process_time``, 1 torch
thread), the methods interleaved in shuffled order over ``--rounds`` rounds at 10 steps
and ``--n`` samples; per-round ratios to Euler and DDIM, median over rounds.

k-diffusion is driven by ``benchmarks.kdiffusion``; without it the comparison columns are
empty.

Run (the committed results; 1 thread, CPU times in the JSON):

* ``python -m benchmarks.fewstep --models mixture,mixture-affine --timing`` (4000
  samples, 3 selection + 5 confirmation seeds; ~9 CPU minutes) -> ``fewstep_cpu``;
* ``ndmsolve demo --out runs/demo`` (the demo's models, ~2.5 min; the committed demo results
  used the demo's configuration before its input Fourier features and peak lr 8e-3), then
  ``python -m benchmarks.fewstep --models demo --checkpoints runs/demo/ndm.pt
  runs/demo/ddpm.pt --seeds 3 --confirm 3 --nfe 5,10,20 --timing --rounds 10
  --out benchmarks/results/fewstep_demo_cpu.json`` (~7 CPU minutes);
* the same for ``--models demo-DDPM`` with ``--s-mins 0.12,0.25,0.5 --only
  '^(euler/|dpmpp_2m/|unipc_2m/|unipc_3m/|kd:dpmpp_2m/|kd:dpmpp_3m/)'`` ->
  ``fewstep_demo_smin_cpu.json`` (larger σ_min for k-diffusion and ours);
* ``--models demo-NDM`` with ``--extrapolate x,F --only
  '^(euler|heun|ddim|dpmpp_2m|dpmpp_3m|ei_3m|unipc_2m|unipc_3m)/'`` (ours only, each
  multistep configuration combining in x and in F, paired) ->
  ``fewstep_demo_extrapolate_cpu.json`` (~6 CPU minutes).

``--quick`` for the smoke test. Writes ``--out`` (default
``benchmarks/results/fewstep_cpu.json``) and the ``.png`` beside it.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import re
import statistics
import time
from pathlib import Path

import torch

import ndmsolve as nd
from benchmarks import common
from benchmarks.kdiffusion import KD_SAMPLERS, TWO_EVAL, kd_sample, load_kdiffusion, t_of_lambda
from ndmsolve.metrics import SlicedWasserstein, random_directions
from ndmsolve.sampling.multistep import MULTISTEP_METHODS
from ndmsolve.solvers import METHODS
from ndmsolve.studies.nfe_sweep import best_rows, closed_form_models

MULTISTEP = tuple(MULTISTEP_METHODS)
OURS = ("euler", "heun", "ddim", *MULTISTEP)
OUR_GRIDS = ("uniform", "logsnr", "karras")
KD_RHOS = (3.0, 5.0, 7.0, 10.0)
#: noise-to-signal ratios σ/α of the last evaluation for denoising ends (besides the
#: schedule's own end s(t = 0), always included)
S_MINS = (0.015, 0.03, 0.06, 0.12)
#: steps of the RK4 reference solve (uniform in λ; its own error is measured and stored)
REF_STEPS = 400
#: what --timing compares, at 10 steps
TIMED = ("euler", "heun", "ddim", *MULTISTEP)


def configs(
    classical: bool,
    s_mins: list[float],
    grids=OUR_GRIDS,
    quick: bool = False,
    extrapolate=("x",),
) -> list:
    """(library, method, grid, final, s_min, rho, lower_order_final, extrapolate) to scan.

    ``s_min`` None: ends with z at t = 0; ``rho``: k-diffusion's Karras ρ (ours: 7);
    our multistep configurations are repeated for each ``extrapolate`` value.
    """
    s_mins = s_mins[:1] if quick else s_mins
    out = []
    for c in _configs7(classical, s_mins, grids, quick):
        if c[0] == "ndmsolve" and c[1] in MULTISTEP:
            out += [(*c, ext) for ext in extrapolate]
        else:
            out.append((*c, None))
    return out


def _configs7(classical: bool, s_mins: list[float], grids, quick: bool) -> list:
    out = []
    for m in OURS:
        for g in grids:
            if m in MULTISTEP:
                out += [("ndmsolve", m, g, "z", None, None, lof) for lof in (True, False)]
            else:
                out.append(("ndmsolve", m, g, "z", None, None, None))
            if m in ("euler", "heun"):
                continue
            for s in s_mins:
                # without lower-order final steps: k-diffusion's own formulas, whose step to
                # sigma = 0 (our x_hat end) is already the first-order final step
                lofs = (True, False) if m in MULTISTEP else (None,)
                out += [("ndmsolve", m, g, "x_hat", s, None, lof) for lof in lofs]
    if classical:
        for m in KD_SAMPLERS:
            rhos = (7.0,) if (m in TWO_EVAL or quick) else KD_RHOS
            for s in s_mins:
                out += [("k-diffusion", m, "karras", "x_hat", s, r, None) for r in rhos]
                if m not in TWO_EVAL:
                    out.append(("k-diffusion", m, "exponential", "x_hat", s, None, None))
    return out


def our_grids(model) -> tuple[str, ...]:
    """``OUR_GRIDS`` less ``uniform`` where it is the ``logsnr`` grid (λ linear in t)."""
    if type(model.schedule) is nd.LinearLogSNR:
        return tuple(g for g in OUR_GRIDS if g != "uniform")
    return OUR_GRIDS


def config_name(c) -> str:
    lib, m, g, final, s, rho, lof, ext = c
    parts = [m, g if rho is None else f"{g}{rho:g}", final if s is None else f"x_hat@{s:.3g}"]
    if lof is False:
        parts.append("no-lof")
    if ext == "F":
        parts.append("extrapolate-F")
    return ("" if lib == "ndmsolve" else "kd:") + "/".join(parts)


# --------------------------------------------------------------------------- models
def mixture_models():
    f64 = torch.float64
    ang = torch.arange(5, dtype=f64) * (2 * math.pi / 5)
    means = torch.stack([2.0 * torch.cos(ang), 2.0 * torch.sin(ang)], 1)
    rot = torch.stack(
        [
            torch.stack([torch.cos(ang), -torch.sin(ang)], -1),
            torch.stack([torch.sin(ang), torch.cos(ang)], -1),
        ],
        -2,
    )  # (5, 2, 2)
    diag = torch.diag_embed(torch.tensor([[0.35, 0.08]], dtype=f64).expand(5, 2) ** 2)
    covs = rot @ diag @ rot.transpose(1, 2)
    data = nd.GaussianMixture(torch.tensor([0.3, 0.2, 0.2, 0.15, 0.15], dtype=f64), means, covs)
    # closed_form_models' default transform: (1 − 0.6 t, 1 − 0.3 t) ⊙ x + t (0.5, −0.5)
    cf = closed_form_models(data, nd.LinearLogSNR(-10.0, 10.0), shared_time=True)
    models = {"mixture": cf["DDPM"].double(), "mixture-affine": cf["NDM"].double()}

    def draw(n, g):
        return data.sample(n, generator=g)

    return models, draw


def demo_models(train_steps: int, hidden: int, seed: int, checkpoints=None):
    from ndmsolve.commands.demo import demo_models as build_demo_models
    from ndmsolve.data import checkerboard
    from ndmsolve.train import train

    if checkpoints:
        ndm, ddpm = (nd.load_model(p) for p in checkpoints)
        info = {"checkpoints": list(checkpoints)}
    else:
        ndm, ddpm = build_demo_models(hidden)
        x = checkerboard(50_000, torch.Generator().manual_seed(seed))
        info = {"train_steps": train_steps, "hidden": hidden, "train_s": {}}
        for name, m in (("NDM", ndm), ("DDPM", ddpm)):
            t0 = time.perf_counter()
            res = train(
                m,
                x,
                steps=train_steps,
                batch_size=256,
                lr=2e-3,
                progress=False,
                generator=torch.Generator().manual_seed(seed + 1),
            )
            info["train_s"][name] = time.perf_counter() - t0
            if name == "NDM":
                ndm = res.ema_model
            else:
                ddpm = res.ema_model
    models = {"demo-DDPM": ddpm.float().eval(), "demo-NDM": ndm.float().eval()}

    def draw(n, g):
        return checkerboard(n, g)

    return models, draw, info


# --------------------------------------------------------------------------- runs
def t_of_s(schedule, s: float) -> float:
    """The time t with σ_t/α_t = s."""
    lam = torch.tensor([-2.0 * math.log(s)], dtype=torch.float64)
    return float(t_of_lambda(schedule, lam).clamp(0.0, 1.0))


def model_s_mins(model, s_mins=S_MINS) -> list[float]:
    """The schedule's end s(t = 0), then the ``s_mins`` above it."""
    s_end = math.exp(-0.5 * float(model.schedule.log_snr(torch.zeros(1, dtype=torch.float64))))
    return [s_end] + [s for s in s_mins if s > 1.001 * s_end]


def our_sample(model, z1, method, grid, final, nfe, t_min=0.0, lof=None, ext=None):
    """Our sampler at ``nfe`` evaluations, or None when the budget does not fit."""
    per = METHODS[method].nfe_per_step
    steps = (nfe - (final == "x_hat")) // per
    if steps < METHODS[method].min_steps or steps * per + (final == "x_hat") != nfe:
        return None
    kw = {} if lof is None else {"lower_order_final": lof}
    if ext is not None:
        kw["extrapolate"] = ext
    res = nd.sample(
        model,
        z1=z1,
        method=method,
        steps=steps,
        grid_kind=grid,
        denoise=final == "x_hat",
        t_min=t_min,
        **kw,
    )
    return res.samples, res.nfe, steps


def run_config(kd, model, z1, c, nfe):
    lib, m, g, final, s, rho, lof, ext = c
    if lib == "ndmsolve":
        t_min = 0.0 if s is None else t_of_s(model.schedule, s)
        return our_sample(model, z1, m, g, final, nfe, t_min, lof, ext)
    return kd_sample(kd, model, z1, m, g, nfe, s, rho)


def reference(model, z1, t_mins: list[float], steps: int) -> dict:
    """Exact PF-ODE targets from ``z1``: {t_min: (z at t_min, x̂ there)}, by RK4 in float64
    on ``steps`` steps uniform in λ with every t_min inserted."""
    import copy

    m64 = copy.deepcopy(model).double()
    base = nd.make_time_grid(steps, "logsnr", m64.schedule, dtype=torch.float64)
    grid = torch.unique(torch.cat([base, torch.tensor(t_mins, dtype=torch.float64)]))
    grid = grid.flip(0)
    path = nd.sample(m64, z1=z1.double(), method="rk4", grid=grid, return_path=True).path
    out = {}
    with torch.no_grad():
        for tm in t_mins:
            z = path[int((grid - tm).abs().argmin())]
            out[tm] = (z, m64.x_hat(z, torch.full((z.shape[0],), tm, dtype=torch.float64)))
    return out


def seed_setup(model, draw, n, seed, dtype):
    """z_1, the data draw, the directions and a second data draw (the floor) of one seed."""
    z1 = torch.randn(n, 2, generator=torch.Generator().manual_seed(1000 + seed), dtype=dtype)
    data = draw(n, torch.Generator().manual_seed(2000 + seed)).to(dtype)
    other = draw(n, torch.Generator().manual_seed(3000 + seed)).to(dtype)
    dirs = random_directions(
        256, 2, generator=torch.Generator().manual_seed(4000 + seed), dtype=dtype
    )
    return z1, data, dirs, other


def evaluate(model, draw, cfgs, nfes, seeds, n, kd, ref_steps=None):
    """{(config, nfe): {"sw1": [...], "err": [...], "steps", "nfe"}} over ``seeds``, the
    floors (one per seed) and the reference's own error (max over samples of the distance
    between RK4 at ``ref_steps`` and at half as many). ``ref_steps`` None: no ``err``."""
    dtype = torch.float64 if model_dtype(model) == torch.float64 else torch.float32
    s_all = sorted({c[4] for c in cfgs if c[4] is not None})
    t_mins = sorted({0.0} | {t_of_s(model.schedule, s) for s in s_all})
    res, floors, ref_err = {}, [], None
    for seed in seeds:
        z1, data, dirs, other = seed_setup(model, draw, n, seed, dtype)
        sw1 = SlicedWasserstein(data, dirs, p=1.0)
        floors.append(sw1(other))
        refs = reference(model, z1, t_mins, ref_steps) if ref_steps else None
        if ref_steps and ref_err is None:
            half = reference(model, z1, [0.0], ref_steps // 2)[0.0][0]
            ref_err = float((half - refs[0.0][0]).norm(dim=1).max())
        for nfe in nfes:
            for c in cfgs:
                out = run_config(kd, model, z1.clone(), c, nfe)
                if out is None:
                    continue
                x, got, steps = out
                ok = bool(torch.isfinite(x).all())
                r = res.setdefault((c, nfe), {"sw1": [], "err": [], "steps": steps, "nfe": got})
                r["sw1"].append(sw1(x) if ok else math.inf)
                if refs is not None:
                    s = c[4]
                    tm = 0.0 if s is None else t_of_s(model.schedule, s)
                    target = refs[tm][1] if c[3] == "x_hat" else refs[tm][0]
                    err = (x.double() - target).norm(dim=1).mean()
                    r["err"].append(float(err) if ok else math.inf)
    return res, floors, ref_err


def model_dtype(model):
    p = next(model.parameters(), None)
    return torch.float64 if p is None else p.dtype


def stats(v):
    """Mean and standard error of per-seed values ({"mean": inf} if any is not finite)."""
    v = [float(x) for x in v]
    if not all(map(math.isfinite, v)):
        return {"mean": math.inf, "se": math.nan}
    mean = statistics.fmean(v)
    se = statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else math.nan
    return {"mean": mean, "se": se}


def paired(a, b):
    """Mean ± s.e. over seeds of the per-seed difference a − b."""
    return stats([x - y for x, y in zip(a, b, strict=True)])


def select(res, nfe):
    """Best configuration by mean sw1 at ``nfe``: per library, per (library, method)."""
    rows = [
        dict(cfg=c, library=c[0], method=f"{c[0]}:{c[1]}", sw1=stats(r["sw1"])["mean"])
        for (c, nf), r in res.items()
        if nf == nfe
    ]
    return {
        k: r["cfg"] for by in ("library", "method") for k, r in best_rows(rows, "sw1", by).items()
    }


def cfg_dict(c) -> dict:
    lib, m, g, final, s, rho, lof, ext = c
    return dict(
        library=lib,
        method=m,
        grid=g,
        final=final,
        s_min=s,
        rho=rho if lib == "k-diffusion" else (7.0 if g == "karras" else None),
        lower_order_final=lof,
        extrapolate=ext,
        name=config_name(c),
    )


def summarise(res, nfes):
    """JSON rows, every configuration: per-seed values, means ± s.e., and the paired
    differences to our best Euler at the same budget."""
    rows = []
    for nfe in nfes:
        best = select(res, nfe)
        ref = res.get((best.get("ndmsolve:euler"), nfe))
        for (c, nf), r in res.items():
            if nf != nfe:
                continue
            row = dict(cfg_dict(c), nfe=r["nfe"], steps=r["steps"])
            for k in ("sw1", "err") if r["err"] else ("sw1",):
                st = stats(r[k])
                row.update({k: st["mean"], f"{k}_se": st["se"], f"{k}_seeds": r[k]})
                if ref is not None:
                    d = paired(r[k], ref[k])
                    row.update({f"d_{k}_vs_euler": d["mean"], f"d_{k}_vs_euler_se": d["se"]})
            rows.append(row)
    return rows


def confirm(model, draw, res, nfes, seeds, n, kd, ref_steps):
    """Re-run each library's and each method's selected best on fresh ``seeds``; paired
    comparisons there: {nfe: {...}}."""
    out, chosen = {}, {}
    for nfe in nfes:
        best = select(res, nfe)
        chosen[nfe] = best
    cfgs = sorted({c for b in chosen.values() for c in b.values()}, key=config_name)
    res2, floors, ref_err = evaluate(model, draw, cfgs, nfes, seeds, n, kd, ref_steps)
    for nfe in nfes:
        best = chosen[nfe]
        cell = {}
        for key, c in best.items():
            r = res2.get((c, nfe))
            if r is None:
                continue
            cell[key] = dict(
                cfg_dict(c),
                sw1_seeds=r["sw1"],
                err_seeds=r["err"],
                **{k: stats(r[k])["mean"] for k in ("sw1", "err")},
                **{f"{k}_se": stats(r[k])["se"] for k in ("sw1", "err")},
            )
        comp = {}
        for a, b in (
            ("ndmsolve", "k-diffusion"),
            ("ndmsolve", "ndmsolve:euler"),
            ("k-diffusion", "ndmsolve:euler"),
            ("ndmsolve", "ndmsolve:ddim"),
        ):
            if a in cell and b in cell:
                comp[f"{a} - {b}"] = {
                    k: paired(cell[a][f"{k}_seeds"], cell[b][f"{k}_seeds"]) for k in ("sw1", "err")
                }
                comp[f"{a} - {b}"]["sw1_ratio"] = cell[a]["sw1"] / cell[b]["sw1"]
        out[str(nfe)] = {"best": cell, "paired": comp}
    return out, stats(floors), ref_err


def timing(models, n, rounds, steps=10):
    """CPU time (process_time, 1 thread) per sampling call of ``TIMED`` at ``steps``
    steps, interleaved in shuffled order; per-round ratios to euler and ddim."""
    out = {}
    rng = random.Random(0)
    for name, model in models.items():
        z1 = torch.randn(n, 2, generator=torch.Generator().manual_seed(7), dtype=model_dtype(model))
        times = {m: [] for m in TIMED}
        nfe = {}
        for _ in range(rounds + 1):  # the first round warms up and is dropped
            order = list(TIMED)
            rng.shuffle(order)
            for m in order:
                t0 = time.process_time()
                r = nd.sample(model, z1=z1.clone(), method=m, steps=steps, grid_kind="logsnr")
                times[m].append(time.process_time() - t0)
                nfe[m] = r.nfe
        cell = {}
        for m in TIMED:
            ts = times[m][1:]
            cell[m] = dict(
                cpu_s_per_step=statistics.median(ts) / steps,
                cpu_s_per_nfe=statistics.median(ts) / nfe[m],
                nfe=nfe[m],
                ratio_to_euler=statistics.median(
                    [a / b for a, b in zip(ts, times["euler"][1:], strict=True)]
                ),
                ratio_to_ddim=statistics.median(
                    [a / b for a, b in zip(ts, times["ddim"][1:], strict=True)]
                ),
            )
        out[name] = cell
    return {"steps": steps, "n": n, "rounds": rounds, "clock": "process_time", "models": out}


# --------------------------------------------------------------------------- output
def plot(path, rows, floors, confirmed, nfes):
    """sw1 of each method's best configuration on the selection seeds (top) and the
    endpoint error of the same configuration on the confirmation seeds (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ndmsolve.io import atomic_write

    names = list(floors)
    every = sorted({(r["library"], r["method"]) for r in rows})
    colors = dict(zip(every, itertools.cycle(plt.get_cmap("tab20").colors), strict=False))
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 7), squeeze=False)
    for j, name in enumerate(names):
        mine = [r for r in rows if r["model"] == name]
        keys = sorted({(r["library"], r["method"]) for r in mine})
        for row_i, k in enumerate(("sw1", "err")):
            ax = axes[row_i][j]
            for lib, m in keys:
                xs, ys = [], []
                for nf in nfes:
                    if k == "sw1":
                        vals = [
                            r[k]
                            for r in mine
                            if (r["library"], r["method"], r["nfe"]) == (lib, m, nf)
                        ]
                    else:
                        best = confirmed.get(name, {}).get(str(nf), {}).get("best", {})
                        vals = [best[f"{lib}:{m}"]["err"]] if f"{lib}:{m}" in best else []
                    vals = [v for v in vals if math.isfinite(v)]
                    if vals:
                        xs.append(nf)
                        ys.append(min(vals))
                ax.plot(
                    xs,
                    ys,
                    marker="o",
                    ms=3,
                    lw=1.2 if lib == "ndmsolve" else 0.9,
                    ls="-" if lib == "ndmsolve" else "--",
                    color=colors[(lib, m)],
                    label=m if lib == "ndmsolve" else f"kd:{m}",
                )
            if k == "sw1":
                ax.axhline(floors[name]["mean"], color="k", lw=0.8, ls=":", label="floor")
                ax.set_title(name)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xticks(nfes, [str(v) for v in nfes])
            ax.set_xlabel("NFE (predictor evaluations)")
            ax.set_ylabel(
                "sliced W1 to data (best config)" if k == "sw1" else "error to exact PF-ODE end"
            )
    axes[0][0].legend(fontsize=6, loc="upper right", ncol=2)
    fig.tight_layout()
    atomic_write(
        path,
        lambda fh: fig.savefig(fh, format="png", dpi=110),
        binary=True,
        prefix=".fewstep.",
        suffix=".png",
    )
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--n", type=int, default=None, help="samples per run (default 4000; quick 300)")
    p.add_argument("--seeds", type=int, default=None, help="selection seeds (default 5; quick 2)")
    p.add_argument(
        "--confirm", type=int, default=None, help="fresh seeds for the chosen (default: --seeds)"
    )
    p.add_argument("--nfe", default=None, help="comma-separated budgets (default 5,10,20,40)")
    p.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="demo model training steps without --checkpoints (default 1500; quick 20)",
    )
    p.add_argument(
        "--checkpoints",
        nargs=2,
        metavar=("NDM", "DDPM"),
        default=None,
        help="load the demo models (ndmsolve demo writes runs/demo/{ndm,ddpm}.pt)",
    )
    p.add_argument(
        "--models",
        default="mixture,mixture-affine,demo",
        help="comma-separated subset of mixture,mixture-affine,demo (demo-DDPM, demo-NDM)",
    )
    p.add_argument(
        "--s-mins",
        default=None,
        help="comma-separated sigma/alpha of denoising ends (default: S_MINS; demo: every other)",
    )
    p.add_argument(
        "--only", default=None, help="scan only configurations whose name matches this regex"
    )
    p.add_argument(
        "--extrapolate",
        default="x",
        help="comma-separated extrapolate options of our multistep methods (x, F; default x)",
    )
    p.add_argument("--timing", action="store_true", help="also time the methods (CPU time)")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds (default 20; quick 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (tiny 2D models: 1)")
    p.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--out", default=None, help="JSON path (default <out-dir>/fewstep_cpu.json)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    n = a.n or (300 if a.quick else 4000)
    n_sel = a.seeds or (2 if a.quick else 3)
    n_conf = a.confirm or (2 if a.quick else 5)
    nfes = [int(v) for v in (a.nfe or ("5,10" if a.quick else "5,10,20,40")).split(",")]
    train_steps = a.train_steps or (20 if a.quick else 1500)
    want = set(a.models.split(","))
    extrapolate = tuple(a.extrapolate.split(","))
    if not extrapolate or set(extrapolate) - {"x", "F"}:
        raise SystemExit(
            f"--extrapolate: expected a comma-separated subset of x,F, got {a.extrapolate!r}"
        )
    unknown = want - {"mixture", "mixture-affine", "demo", "demo-DDPM", "demo-NDM"}
    if unknown:
        raise SystemExit(f"--models: unknown {sorted(unknown)}")

    kd, kd_info = load_kdiffusion()
    print(f"k-diffusion: {'loaded ' + str(kd_info) if kd is not None else kd_info}", flush=True)
    models, draws, info = {}, {}, {}
    mix, draw_mix = mixture_models()
    for k, v in mix.items():
        if k in want:
            models[k], draws[k] = v, draw_mix
    if want & {"demo", "demo-DDPM", "demo-NDM"}:
        dm, draw_demo, info = demo_models(train_steps, 16 if a.quick else 128, 0, a.checkpoints)
        for k, v in dm.items():
            if "demo" in want or k in want:
                models[k], draws[k] = v, draw_demo
    out = Path(a.out) if a.out else Path(a.out_dir) / "fewstep_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "meta": {
            "benchmark": "fewstep",
            "device": "cpu",
            "device_name": common.device_name(torch.device("cpu")),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "k_diffusion": kd_info if kd is not None else None,
            "k_diffusion_status": "loaded" if kd is not None else kd_info,
            "quick": a.quick,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "config": {
            "n": n,
            "selection_seeds": list(range(n_sel)),
            "confirm_seeds": list(range(100, 100 + n_conf)),
            "nfe": nfes,
            "n_proj": 256,
            "metrics": {
                "sw1": "sliced W1 to a fresh data draw of n",
                "err": "mean Euclidean distance to the exact PF-ODE endpoint from the same z1",
            },
            "reference": "RK4 in float64, uniform in lambda, steps in reference_steps",
            "s_mins": a.s_mins or list(S_MINS),
            "only": a.only,
            "extrapolate": list(extrapolate),
            "kd_rhos": list(KD_RHOS),
            "demo": info,
        },
        "floors": {},
        "reference_steps": {},
        "reference_error": {},
        "confirmed": {},
        "confirm_floors": {},
        "rows": [],
    }
    for k, m in models.items():  # the JSON is rewritten after each model (partial results)
        t0 = time.process_time()
        classical = type(m.transform).__name__ == "IdentityTransform"
        if a.s_mins:
            s_mins = model_s_mins(m, [float(v) for v in a.s_mins.split(",")])
        else:
            s_mins = model_s_mins(m)
            if k.startswith("demo"):  # trained networks cost ~4x the closed form: coarser
                s_mins = s_mins[:1] + s_mins[2::2]
        cfgs = configs(classical and kd is not None, s_mins, our_grids(m), a.quick, extrapolate)
        if a.only:
            cfgs = [c for c in cfgs if re.search(a.only, config_name(c))]
        ref_steps = 100 if a.quick else REF_STEPS // (4 if k.startswith("demo") else 1)
        res, floors, _ = evaluate(m, draws[k], cfgs, nfes, range(n_sel), n, kd)
        result["floors"][k] = stats(floors)
        result["rows"] += [dict(model=k, **r) for r in summarise(res, nfes)]
        conf_seeds = range(100, 100 + n_conf)
        result["confirmed"][k], result["confirm_floors"][k], ref_err = confirm(
            m, draws[k], res, nfes, conf_seeds, n, kd, ref_steps
        )
        result["reference_steps"][k], result["reference_error"][k] = ref_steps, ref_err
        print(
            f"  {k}: {len(cfgs)} configurations, {time.process_time() - t0:.0f} CPU s", flush=True
        )
        _write(out, result, nfes)
    if a.timing:
        rounds = a.rounds or (2 if a.quick else 20)
        timed = {k: m for k, m in models.items() if k in ("mixture-affine", "demo-NDM")}
        result["timing"] = timing(timed, n, rounds)
        _write(out, result, nfes)
    _report(result, nfes)
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


def _write(out, result, nfes):
    common.write_json_atomic(out, result, prefix=".fewstep.", suffix=".json")
    plot(out.with_suffix(".png"), result["rows"], result["floors"], result["confirmed"], nfes)


def _fmt(c, key="sw1"):
    return f"{c[key]:.4f}±{c[key + '_se']:.4f} {c['name']}"


def _report(result, nfes):
    for name, conf in result["confirmed"].items():
        fl = result["confirm_floors"][name]
        print(f"\n{name} (confirmation seeds): floor {fl['mean']:.4f} ± {fl['se']:.4f}")
        for nf in nfes:
            cell = conf.get(str(nf))
            if not cell:
                continue
            b, pc = cell["best"], cell["paired"]
            line = [f"{nf:>3} NFE"]
            for key in ("ndmsolve", "k-diffusion", "ndmsolve:euler", "ndmsolve:ddim"):
                if key in b:
                    line.append(f"{key}: {_fmt(b[key])} (err {b[key]['err']:.4f})")
            for k, v in pc.items():
                line.append(f"{k}: {v['sw1']['mean']:+.4f}±{v['sw1']['se']:.4f}")
            print("\n    ".join(line))
    for name, cell in result.get("timing", {}).get("models", {}).items():
        print(f"\ntiming {name} (CPU s per step, ratio to euler / ddim):")
        for m, v in cell.items():
            print(
                f"  {m:<10} {v['cpu_s_per_step'] * 1e3:8.3f} ms  "
                f"{v['ratio_to_euler']:.2f}  {v['ratio_to_ddim']:.2f}"
            )


if __name__ == "__main__":
    raise SystemExit(main())
