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
# log-SNR schedule), and the same two with a learned schedule and the conditional kinetic
# penalty −ELBO + λ E ∫ ‖v_c‖² dt of `ndmsolve.studies.ot` (labels `+L λ`; see
# `ot_dynamics_1d.py` for what it is, why it is only an upper bound on the marginal kinetic
# energy, and the marginal penalty, which did better in 1D). For each model:
#
# * **kinetic ratio** E ∫ ‖dz/dt‖² dt / W2²(z_1, z_0) ≥ 1 of the PF-ODE paths;
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
from ndmsolve._io import atomic_write
from ndmsolve.data import checkerboard, eight_gaussians
from ndmsolve.metrics import coupling_ratio, ot_cost
from ndmsolve.studies import ot
from ndmsolve.train import train
from ndmsolve.viz import save_figure

SCALE = os.environ.get("NDM_NOTEBOOK_SCALE", "full").strip().lower()
OUT = Path(os.environ.get("NDM_NOTEBOOK_OUT", "runs/notebooks"))
CONFIGS = {
    "small": dict(
        datasets=("checkerboard",),
        seeds=(0,),
        lam=0.1,
        train_steps=60,
        batch_size=128,
        hidden=16,
        n_eval=200,
        eval_draws=2,
        n_paths=200,
        sample_steps=20,
    ),
    "full": dict(
        datasets=("checkerboard", "eight_gaussians"),
        seeds=(0,),
        lam=0.1,
        train_steps=1500,
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
if os.environ.get("NDM_OT2D_DATASETS"):  # run one data set per process when time is short
    CFG["datasets"] = tuple(os.environ["NDM_OT2D_DATASETS"].split(","))
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


LAM = CFG["lam"]
VARIANTS = [
    ("DDPM", False, None),
    ("NDM", True, None),
    (f"DDPM+L {LAM:g}", False, LAM),
    (f"NDM+L {LAM:g}", True, LAM),
]
RUNS = {}
T0 = time.perf_counter()
for ds in CFG["datasets"]:
    for seed in CFG["seeds"]:
        g = torch.Generator().manual_seed(2000 + seed)
        test_x = DATA[ds](CFG["n_eval"], g)
        ref, ref2 = DATA[ds](CFG["n_paths"], g), DATA[ds](CFG["n_paths"], g)
        z1 = torch.randn(CFG["n_paths"], 2, generator=g)
        RUNS[(ds, "floor", seed)] = dict(w2=math.sqrt(float(ot_cost(ref, ref2))))
        for label, learned_F, lam in VARIANTS:
            t0 = time.perf_counter()
            model = make_model(learned_F, lam is not None, seed)
            res = train(
                model,
                DATA[ds],
                steps=CFG["train_steps"],
                batch_size=CFG["batch_size"],
                lr=2e-3,
                generator=torch.Generator().manual_seed(seed),
                loss=ot.penalized_loss(lam or 0.0),
                progress=False,
            )
            model = res.ema_model.eval()
            p = ot.pf_ode_paths(model, z1, CFG["sample_steps"])
            x0 = p["path"][-1]
            RUNS[(ds, label, seed)] = r = dict(
                kinetic_ratio=p["kinetic_ratio"],
                coupling_ratio=float(coupling_ratio(z1, x0)),
                nelbo=float(ot.held_out_nelbo(model, test_x, CFG["eval_draws"], seed=123).mean()),
                w2=math.sqrt(float(ot_cost(x0, ref))),
                nfe=p["nfe"],
                path=p["path"],
                ts=p["ts"],
                train_s=time.perf_counter() - t0,
            )
            print(
                f"[{time.perf_counter() - T0:6.0f} s] {ds} seed {seed} {label:<11} kinetic {r['kinetic_ratio']:.3f} "
                f"coupling {r['coupling_ratio']:.3f} -ELBO {r['nelbo']:.4f} W2 {r['w2']:.4f} "
                f"({r['train_s']:.0f} s)",
                flush=True,
            )


# %%
def mean_se(values: list) -> tuple:
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), (float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan"))


LABELS = [v[0] for v in VARIANTS]
KEYS = ("kinetic_ratio", "coupling_ratio", "nelbo", "w2")
RESULTS = {
    "config": {k: list(v) if isinstance(v, tuple) else v for k, v in CFG.items()},
    "scale": SCALE,
}
for ds in CFG["datasets"]:
    table = {
        label: {k: mean_se([RUNS[(ds, label, s)][k] for s in CFG["seeds"]]) for k in KEYS}
        for label in LABELS
    }
    table["floor"] = {"w2": mean_se([RUNS[(ds, "floor", s)]["w2"] for s in CFG["seeds"]])}
    RESULTS[ds] = dict(table=table)
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
        f"{'floor':<12}{'1':>22}{'1':>22}{'':>22}{table['floor']['w2'][0]:>13.4f} ± "
        f"{table['floor']['w2'][1]:.4f}"
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
        path = run["path"]
        x0 = path[-1]
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
            f"{ds} {label}\nkinetic {r['kinetic_ratio'][0]:.2f}, coupling {r['coupling_ratio'][0]:.3f}\n"
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
