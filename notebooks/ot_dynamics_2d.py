# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Optimal-transport dynamics in 2D (after Fig. 4 of *Neural Diffusion Models*)
#
# Checkerboard and eight Gaussians; a DDPM and an NDM trained on the ELBO alone (linear
# log-SNR schedule), and the same two with a learned schedule and the marginal kinetic
# penalty −ELBO + λ E ∫ ‖v‖² dt of `ndmsolve.studies.ot` (labels `+M λ`: v the model's own
# PF-ODE velocity at z_t ~ q(z_t | x) with the predictor held fixed; see `ot_dynamics_1d.py`
# for the construction and for the conditional variant). The NDM's transform is
# F(x, t) = x + Σ_k sin(kπt/2)/k · h_k(x) (K = 8). For each model:
#
# * **kinetic ratio** E ∫ ‖dz/dt‖² dt / W2²(z_1, z_0) ≥ 1 of the PF-ODE paths;
# * **re-timed ratio** (`ndmsolve.metrics.retimed_kinetic_ratio`): the kinetic ratio of the
#   same paths after the best common time change (what a schedule can do; see
#   `ot_dynamics_1d.py`): what stays above 1 is the shape of the paths, not their timing;
# * **coupling ratio** E ‖z_0 − z_1‖² / W2²(z_1, z_0) ≥ 1: 1 when the noise → data map is the
#   OT map (in 2D, unlike 1D, it need not be); W2² is the exact assignment
#   (`ndmsolve.metrics.ot_cost`) on the same n paths;
# * **held-out −ELBO** (nats) and **W2** of the samples to held-out data (exact assignment),
#   next to its floor (W2 between two independent data sets of the same size).
#
# Size: `NDM_NOTEBOOK_SCALE=small` (seconds, for tests) or `full` (default; tens of minutes on a
# shared 2-core machine). Output: `NDM_NOTEBOOK_OUT` (default `runs/notebooks/`); numbers in
# `RESULTS` and `ot_dynamics_2d.json`.

# %%
import json
import math
import os
import time
from pathlib import Path

import torch

import ndmsolve as nd
from ndmsolve.data import checkerboard, eight_gaussians
from ndmsolve.io import atomic_write
from ndmsolve.metrics import coupling_ratio, mean_se, ot_cost, retimed_kinetic_ratio
from ndmsolve.studies import ot
from ndmsolve.train import train
from ndmsolve.viz import save_figure

SCALE = os.environ.get("NDM_NOTEBOOK_SCALE", "full").strip().lower()
OUT = Path(os.environ.get("NDM_NOTEBOOK_OUT", "runs/notebooks"))
CONFIGS = {
    "small": dict(
        datasets=("checkerboard",),
        seeds=(0,),
        penalties=(("marginal", 1.0),),
        train_steps=60,
        lr_schedule="constant",
        batch_size=128,
        hidden=16,
        n_eval=200,
        eval_draws=2,
        n_paths=200,
        sample_steps=20,
    ),
    "full": dict(
        datasets=("checkerboard", "eight_gaussians"),
        seeds=(0, 1, 2),
        penalties=(("marginal", 1.0),),
        train_steps=1500,
        lr_schedule="cosine",  # after 100 warm-up steps, decaying to 0
        batch_size=512,
        hidden=64,
        n_eval=2000,
        eval_draws=5,
        n_paths=2000,
        sample_steps=100,
    ),
}
if SCALE not in CONFIGS:
    raise ValueError(f"NDM_NOTEBOOK_SCALE must be one of {sorted(CONFIGS)}, got {SCALE!r}")
CFG = dict(CONFIGS[SCALE])
# Split a full run over processes (NDM_OT2D_DATASETS / NDM_OT2D_SEEDS); every trained model's
# numbers are cached in OUT/runs/, and a last run with everything reads the caches.
if os.environ.get("NDM_OT2D_DATASETS"):
    CFG["datasets"] = tuple(os.environ["NDM_OT2D_DATASETS"].split(","))
if os.environ.get("NDM_OT2D_SEEDS"):
    CFG["seeds"] = tuple(int(v) for v in os.environ["NDM_OT2D_SEEDS"].split(","))
DATA = {"checkerboard": checkerboard, "eight_gaussians": eight_gaussians}
torch.set_num_threads(1)
print(f"scale={SCALE}: {CFG}; output in {OUT}/")


# %%
def make_model(learned_F: bool, learned_schedule: bool, seed: int) -> nd.NDM:
    torch.manual_seed(seed)
    sched = nd.LearnedLogSNR(-12.0, 12.0) if learned_schedule else nd.LinearLogSNR(-12.0, 12.0)
    predictor = nd.EpsilonPredictor(nd.MLP(2, hidden=CFG["hidden"], depth=3), sched)
    # F(x, t) = x + Σ_k sin(kπt/2)/k · h_k(x): one pass gives F and ∂_t F (no JVP)
    transform = (
        nd.TimeBasisTransform(
            nd.MLP(2, hidden=CFG["hidden"], depth=2, out_dim=16, zero_init=True), 8
        )
        if learned_F
        else None
    )
    return nd.NDM(predictor, transform=transform, schedule=sched, data_shape=(2,)).float()


VARIANTS = [("DDPM", False, None), ("NDM", True, None)]  # (label, learned F, penalty)
for vel, lam in CFG["penalties"]:
    tag = f"+{vel[0].upper()} {lam:g}"
    VARIANTS += [(f"DDPM{tag}", False, (vel, lam)), (f"NDM{tag}", True, (vel, lam))]
RUNS = {}
T0 = time.perf_counter()
for ds in CFG["datasets"]:
    for seed in CFG["seeds"]:
        g = torch.Generator().manual_seed(2000 + seed)
        test_x = DATA[ds](CFG["n_eval"], g)
        ref, ref2 = DATA[ds](CFG["n_paths"], g), DATA[ds](CFG["n_paths"], g)
        z1 = torch.randn(CFG["n_paths"], 2, generator=g)
        RUNS[(ds, "floor", seed)] = dict(w2=math.sqrt(float(ot_cost(ref, ref2))))
        for label, learned_F, pen in VARIANTS:
            tag = f"{SCALE}_{CFG['train_steps']}_{CFG['lr_schedule']}"
            cache = OUT / "runs" / f"{ds}_{label.replace(' ', '_')}_{seed}_{tag}.pt"
            if cache.is_file():
                RUNS[(ds, label, seed)] = torch.load(cache, weights_only=True)
                continue
            t0 = time.perf_counter()
            model = make_model(learned_F, pen is not None, seed)
            res = train(
                model,
                DATA[ds],
                steps=CFG["train_steps"],
                batch_size=CFG["batch_size"],
                lr=2e-3,
                lr_schedule=CFG["lr_schedule"],
                warmup_steps=100 if CFG["lr_schedule"] != "constant" else 0,
                generator=torch.Generator().manual_seed(seed),
                loss=ot.penalized_loss(pen[1], velocity=pen[0]) if pen else ot.penalized_loss(0.0),
                progress=False,
            )
            model = res.ema_model.eval()
            p = ot.pf_ode_paths(model, z1, CFG["sample_steps"])
            x0 = p["path"][-1]
            RUNS[(ds, label, seed)] = r = dict(
                kinetic_ratio=p["kinetic_ratio"],
                retimed_ratio=float(retimed_kinetic_ratio(p["path"], p["ts"])),
                coupling_ratio=float(coupling_ratio(z1, x0)),
                nelbo=float(
                    ot.held_out_nelbo(model, test_x, CFG["eval_draws"], generator=123).mean()
                ),
                w2=math.sqrt(float(ot_cost(x0, ref))),
                nfe=p["nfe"],
                path=p["path"][:, :150],  # the figure draws 150 paths (seed 0)
                ts=p["ts"],
                train_s=time.perf_counter() - t0,
            )
            r["samples"] = x0
            # how far the transform moves the data: RMS ‖F(x, t) − x‖ over held-out points
            with torch.no_grad():
                r["rms_F_minus_x"] = {
                    f"{t:g}": float(
                        (model.F(test_x, torch.full((len(test_x),), t)) - test_x)
                        .pow(2)
                        .sum(1)
                        .mean()
                        .sqrt()
                    )
                    for t in (0.5, 1.0)
                }
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache, lambda f, r=r: torch.save(r, f))
            print(
                f"[{time.perf_counter() - T0:6.0f} s] {ds} seed {seed} {label:<11} kinetic {r['kinetic_ratio']:.3f} re-timed {r['retimed_ratio']:.3f} "
                f"coupling {r['coupling_ratio']:.3f} -ELBO {r['nelbo']:.4f} W2 {r['w2']:.4f} "
                f"({r['train_s']:.0f} s)",
                flush=True,
            )


# %%
LABELS = [v[0] for v in VARIANTS]
KEYS = ("kinetic_ratio", "retimed_ratio", "coupling_ratio", "nelbo", "w2")
RESULTS = {
    "config": {k: list(v) if isinstance(v, tuple) else v for k, v in CFG.items()},
    "scale": SCALE,
}
for ds in CFG["datasets"]:
    table = {
        label: {k: mean_se([RUNS[(ds, label, s)][k] for s in CFG["seeds"]]) for k in KEYS}
        for label in LABELS
    }
    for label, learned_F, _ in VARIANTS:
        table[label]["per_seed"] = {
            k: [RUNS[(ds, label, s)][k] for s in CFG["seeds"]] for k in KEYS
        }
        if learned_F:
            table[label]["rms_F_minus_x"] = {
                t: mean_se([RUNS[(ds, label, s)]["rms_F_minus_x"][t] for s in CFG["seeds"]])
                for t in ("0.5", "1")
            }
    table["floor"] = {"w2": mean_se([RUNS[(ds, "floor", s)]["w2"] for s in CFG["seeds"]])}
    # excess kinetic ratio (ratio − 1) the penalised NDM removes against the better DDPM
    goal = {}
    for vel, lam in CFG["penalties"]:
        tag = f"+{vel[0].upper()} {lam:g}"
        best = min(("DDPM", f"DDPM{tag}"), key=lambda k: table[k]["kinetic_ratio"][0])
        kr = table[best]["kinetic_ratio"][0]
        rt = min(table[k]["retimed_ratio"][0] for k in ("DDPM", f"DDPM{tag}"))
        goal[f"{vel} {lam:g}"] = dict(
            best_ddpm=best,
            excess_removed=(kr - table[f"NDM{tag}"]["kinetic_ratio"][0]) / (kr - 1),
            # the same after re-timing (what stays is the shape of the paths, not their timing)
            retimed_excess_removed=(rt - table[f"NDM{tag}"]["retimed_ratio"][0]) / (rt - 1),
            nelbo_gap=table[f"NDM{tag}"]["nelbo"][0] - table[best]["nelbo"][0],
            w2_over_floor=table[f"NDM{tag}"]["w2"][0] / table["floor"]["w2"][0],
        )
    RESULTS[ds] = dict(table=table, goal=goal)
    print(
        f"\n{ds}: mean ± se over seeds {list(CFG['seeds'])}; Heun {CFG['sample_steps']} steps, "
        f"{CFG['n_paths']} paths, {CFG['train_steps']} training steps"
    )
    print(f"{'model':<12}" + "".join(f"{k:>22}" for k in KEYS))
    for label in LABELS:
        print(
            f"{label:<12}"
            + "".join(f"{table[label][k][0]:>13.4f} ± {table[label][k][1]:.4f}" for k in KEYS)
        )
    print(
        f"{'floor':<12}{'1':>22}{'1':>22}{'1':>22}{'':>22}{table['floor']['w2'][0]:>13.4f} ± "
        f"{table['floor']['w2'][1]:.4f}"
    )
    for label, learned_F, _ in VARIANTS:
        if learned_F:
            rms = table[label]["rms_F_minus_x"]
            print(
                f"{label}: RMS ‖F(x, t) − x‖ at t = 0.5: {rms['0.5'][0]:.3f}, at t = 1: {rms['1'][0]:.3f}"
            )
    for lam, gl in goal.items():
        print(
            f"{lam}: NDM removes {100 * gl['excess_removed']:.0f}% of {gl['best_ddpm']}'s excess "
            f"kinetic ratio ({100 * gl['retimed_excess_removed']:.0f}% of the re-timed one); "
            f"-ELBO gap {gl['nelbo_gap']:+.4f} nats; W2 {gl['w2_over_floor']:.2f}× floor"
        )
OUT.mkdir(parents=True, exist_ok=True)
atomic_write(OUT / "ot_dynamics_2d.json", lambda f: f.write(json.dumps(RESULTS, indent=1).encode()))

# %% [markdown]
# ## Figure: samples and PF-ODE trajectories (seed 0)
#
# Black dots: samples at t = 0; coloured lines: 150 PF-ODE paths from the prior (t = 1) to
# the samples at t = 0.

# %%
from matplotlib.figure import Figure  # noqa: E402

fig = Figure(figsize=(4.0 * len(LABELS), 4.1 * len(CFG["datasets"])))
axes = fig.subplots(len(CFG["datasets"]), len(LABELS), squeeze=False)
for row, ds in zip(axes, CFG["datasets"]):
    table = RESULTS[ds]["table"]
    for ax, label in zip(row, LABELS):
        run = RUNS[(ds, label, CFG["seeds"][0])]
        path, x0 = run["path"], run["samples"]
        ax.scatter(x0[:, 0], x0[:, 1], s=1.0, color="k", alpha=0.5)
        for k in range(min(150, path.shape[1])):
            ax.plot(
                path[:, k, 0],
                path[:, k, 1],
                lw=0.4,
                alpha=0.5,
                color="tab:red" if "NDM" in label else "tab:blue",
            )
        r = table[label]
        ax.set_title(
            f"{ds} {label}\nkinetic {r['kinetic_ratio'][0]:.2f} (re-timed {r['retimed_ratio'][0]:.2f}), coupling {r['coupling_ratio'][0]:.3f}\n"
            f"−ELBO {r['nelbo'][0]:.3f}, W2 {r['w2'][0]:.3f} (floor {table['floor']['w2'][0]:.3f})",
            fontsize=8,
        )
        ax.set_xlim(-4.5, 4.5)
        ax.set_ylim(-4.5, 4.5)
        ax.set_aspect("equal")
fig.suptitle(f"2D OT dynamics, scale={SCALE} ({CFG['train_steps']} training steps)", fontsize=11)
fig.tight_layout()
FIGURE = save_figure(fig, OUT / "ot_dynamics_2d.png", dpi=90)
RESULTS["figure"] = str(FIGURE)
print(f"\nfigure written to {FIGURE}; total {time.perf_counter() - T0:.0f} s")
