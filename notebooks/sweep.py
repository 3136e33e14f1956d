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
# # NFE against sample quality: which sampler gets there with the fewest evaluations?
#
# `ndmsolve.studies.sweep` samples each model with every registered method
# (`nd.solvers.METHODS`: fixed-step and adaptive ODE, fixed-step and adaptive SDE, DDIM and
# ancestral) over a grid of step counts / tolerances and several seeds, and scores the
# samples against the truth:
#
# 1. **Closed-form NDM and DDPM** (`closed_form_models()`): 8 Gaussians (std 0.15, radius 2);
#    the predictor is the exact posterior mean, so the PF-ODE and reverse SDE are exact and
#    every difference between samplers is discretisation error. The truth is the exact
#    marginal q(z_0) (drawn in closed form).
# 2. **Checkerboard** (2D): an NDM (learned transform) and a DDPM trained as in the demo,
#    scored against fresh checkerboard draws; here model error adds to discretisation error.
#
# Metric: the squared **energy distance** (V-statistic; `ndmsolve.metrics.energy_distance`)
# with its **floor**, the value between two independent truth sets of the same sizes; the
# sliced Wasserstein distance is recorded too. Every value is a mean ± standard error over
# seeds. The quality levels at which the fewest-NFE method is named are 10×, 3× and 2× the
# floor (closer to it, the spread of exact samples over seeds decides, not the sampler).
#
# Size: `NDM_NOTEBOOK_SCALE=small` (seconds, for tests) or `full` (default; ~15 CPU-minutes).
# `NDM_SWEEP_PART=closed_form` or `checkerboard` runs one part only (default both; the two
# are independent and can run side by side). Output: `NDM_NOTEBOOK_OUT` (default
# `runs/notebooks/`): the figures and `sweep_closed_form.json`, `sweep_checkerboard.json`;
# numbers in `RESULTS`.

# %%
import math
import os
import time
from pathlib import Path

import torch

import ndmsolve as nd
from ndmsolve.data import checkerboard
from ndmsolve.fields import MLP, EpsilonPredictor
from ndmsolve.objectives import held_out_nelbo
from ndmsolve.studies import sweep
from ndmsolve.studies.nfe_sweep import closed_form_models, default_methods
from ndmsolve.train import train
from ndmsolve.viz import plot_sweep

SCALE = os.environ.get("NDM_NOTEBOOK_SCALE", "full").strip().lower()
OUT = Path(os.environ.get("NDM_NOTEBOOK_OUT", "runs/notebooks"))
CONFIGS = {
    "small": dict(
        methods=("heun", "dopri5", "euler_maruyama", "adaptive_heun_sde", "ddim"),
        steps=(2, 8),
        ode_tols=(1e-1, 1e-3),
        sde_tols=(10.0, 0.3),
        seeds=2,
        n=128,
        train_steps=150,
        hidden=32,
        batch_size=128,
        n_eval=300,
        eval_draws=2,
        board_methods=("heun", "ddim"),
        board_steps=(2, 8),
        board_n=128,
        board_seeds=2,
    ),
    "full": dict(
        methods=None,
        steps=(2, 4, 8, 16),
        ode_tols=(1e-1, 1e-2, 1e-3),
        sde_tols=(10.0, 1.0, 0.3, 0.1),
        seeds=4,
        n=500,
        train_steps=2000,
        hidden=128,
        batch_size=256,
        n_eval=2000,
        eval_draws=10,
        board_methods=None,
        board_steps=(2, 4, 8, 16),
        board_n=500,
        board_seeds=3,
    ),
}
if SCALE not in CONFIGS:
    raise ValueError(f"NDM_NOTEBOOK_SCALE must be one of {sorted(CONFIGS)}, got {SCALE!r}")
CFG = CONFIGS[SCALE]
PARTS = {
    "all": ("closed_form", "checkerboard"),
    "closed_form": ("closed_form",),
    "checkerboard": ("checkerboard",),
}
PART = os.environ.get("NDM_SWEEP_PART", "all").strip().lower()
if PART not in PARTS:
    raise ValueError(f"NDM_SWEEP_PART must be one of {sorted(PARTS)}, got {PART!r}")
PROGRESS = SCALE == "full"  # one line per row: a full run takes minutes
SEED = 0
METRICS = ("energy_distance", "sliced_wasserstein")
torch.set_num_threads(1)  # tiny networks and 2D closed forms: one thread is fastest
print(f"scale={SCALE}: {CFG}; output in {OUT}/")


def method_grid(methods, steps):
    """{method: settings}: step counts for fixed-step methods, tolerances by kind otherwise."""
    from ndmsolve.solvers import METHODS
    from ndmsolve.studies.nfe_sweep import method_kind

    grid = {}
    for m in methods or default_methods():
        kind = method_kind(m)
        # a multistep sampler needs at least its history length in steps
        grid[m] = (
            CFG["ode_tols"]
            if kind == "ode_adaptive"
            else CFG["sde_tols"]
            if kind == "sde_adaptive"
            else [s for s in steps if s >= METHODS[m].min_steps]
        )
    return grid


def report(res, title):
    """Print the fewest-NFE method at each quality level, per model."""
    print(
        f"\n{title}: fewest NFE to reach a quality level (energy distance, mean over "
        f"{len(res.config['seeds'])} seeds)"
    )
    for model, levels in res.best.items():
        fl = res.floors[model]["energy_distance"]
        print(f"  {model}: floor {fl['mean']:.4g} ± {fl['se']:.2g} (n = {fl['n']})")
        for lv in levels:
            if lv["method"] is None:
                print(f"    <= {lv['quality']:.4g}: reached by no method of the grid")
                continue
            setting = f"{lv['steps']} steps" if lv["steps"] is not None else f"tol {lv['tol']:g}"
            others = ", ".join(
                f"{m} {v:.0f}"
                for m, v in sorted(
                    lv["per_method"].items(),
                    key=lambda kv: kv[1] if kv[1] is not None else math.inf,
                )
                if v is not None
            )
            print(
                f"    <= {lv['quality']:.4g}: {lv['method']} ({setting}, {lv['nfe']:.0f} NFE, "
                f"{lv['value']:.4g} ± {lv['se']:.2g}); per method: {others}"
            )


RESULTS = {}

# %% [markdown]
# ## 1. Closed-form NDM and DDPM: discretisation error alone

# %%
if "closed_form" in PARTS[PART]:
    t0 = time.perf_counter()
    closed = sweep(
        closed_form_models(),
        method_grid(CFG["methods"], CFG["steps"]),
        seeds=CFG["seeds"],
        n=CFG["n"],
        metrics=METRICS,
        progress=PROGRESS,
    )
    closed.write_json(OUT / "sweep_closed_form.json")
    fig_closed = plot_sweep(closed, OUT / "sweep_closed_form.png")
    print(f"closed-form sweep: {len(closed.rows)} rows in {time.perf_counter() - t0:.0f} s")
    print(closed.summary())
    report(closed, "closed-form models")
    RESULTS["figure"] = str(fig_closed)
    RESULTS["closed_form"] = dict(best=closed.best, floors=closed.floors)

# %% [markdown]
# ## 2. Checkerboard: trained NDM and DDPM
#
# The demo's models: ε-predictor MLP (3 layers), the NDM's transform F(x, t) = x + t·MLP(x, t)
# starting at the identity, linear log-SNR schedule (±12), the same seed and steps for both.

# %%
if "checkerboard" in PARTS[PART]:
    g_data = torch.Generator().manual_seed(SEED)
    train_x = checkerboard(50_000, g_data)
    test_x = checkerboard(CFG["n_eval"], g_data)
    trained = {}
    board = {}
    for name, learned in (("NDM", True), ("DDPM", False)):
        torch.manual_seed(SEED)
        sched = nd.LinearLogSNR(-12.0, 12.0)
        predictor = EpsilonPredictor(MLP(2, hidden=CFG["hidden"], depth=3), sched)
        tr_net = MLP(2, hidden=CFG["hidden"] // 2, depth=2, zero_init=True)
        transform = nd.ResidualTransform(tr_net) if learned else None
        model = nd.NDM(predictor, transform=transform, schedule=sched, data_shape=(2,))
        t0 = time.perf_counter()
        res = train(
            model,
            train_x,
            steps=CFG["train_steps"],
            batch_size=CFG["batch_size"],
            lr=2e-3,
            generator=torch.Generator().manual_seed(SEED + 1),
            progress=False,
        )
        per_point = held_out_nelbo(
            res.ema_model, test_x, CFG["eval_draws"], torch.Generator().manual_seed(SEED + 2)
        )
        nelbo = [float(per_point.mean()), float(per_point.std() / math.sqrt(per_point.numel()))]
        trained[name] = res.ema_model
        board[name] = dict(nelbo=nelbo, train_s=time.perf_counter() - t0)
        print(
            f"{name}: {CFG['train_steps']} steps in {board[name]['train_s']:.0f} s, held-out "
            f"-ELBO {nelbo[0]:.4f} ± {nelbo[1]:.4f} nats (truth: log 32 = {math.log(32):.4f})"
        )

    t0 = time.perf_counter()
    boardsweep = sweep(
        trained,
        method_grid(CFG["board_methods"], CFG["board_steps"]),
        seeds=CFG["board_seeds"],
        n=CFG["board_n"],
        metrics=METRICS,
        reference=checkerboard,
        progress=PROGRESS,
    )
    boardsweep.write_json(OUT / "sweep_checkerboard.json")
    fig_board = plot_sweep(boardsweep, OUT / "sweep_checkerboard.png")
    print(f"checkerboard sweep: {len(boardsweep.rows)} rows in {time.perf_counter() - t0:.0f} s")
    print(boardsweep.summary())
    report(boardsweep, "checkerboard (trained)")
    board["best"], board["floors"] = boardsweep.best, boardsweep.floors
    board["figure"] = str(fig_board)
    RESULTS["checkerboard"] = board
    RESULTS.setdefault("figure", str(fig_board))
