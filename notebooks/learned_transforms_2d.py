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
# # What the learned transform does (after the toy part of Fig. 2 of *Neural Diffusion Models*)
#
# An NDM's forward marginal is q(z_t | x) = N(α_t F_φ(x, t), σ_t² I); a DDPM is the case
# F(x, t) = x. We train an NDM (F = x + t·MLP(x, t), linear log-SNR schedule) on the
# checkerboard and draw F_φ(x, t) at several t for a grid of points x and for data points
# coloured by their square, next to the identity of a DDPM. We also print how far F moves the
# data (the RMS of F(x, t) − x) and the held-out −ELBO of the NDM and of a DDPM trained the
# same way.
#
# Size: `NDM_NOTEBOOK_SCALE=small` (seconds) or `full` (default, a few minutes on a shared
# 2-core machine). Output: `NDM_NOTEBOOK_OUT` (default `runs/notebooks/`); numbers in `RESULTS`.

# %%
import math
import os
import time
from pathlib import Path

import torch

import ndmsolve as nd
from ndmsolve.data import checkerboard
from ndmsolve.studies import ot
from ndmsolve.train import train
from ndmsolve.viz import save_figure

SCALE = os.environ.get("NDM_NOTEBOOK_SCALE", "full").strip().lower()
OUT = Path(os.environ.get("NDM_NOTEBOOK_OUT", "runs/notebooks"))
CONFIGS = {
    "small": dict(train_steps=60, batch_size=128, hidden=16, n_eval=200, eval_draws=2),
    "full": dict(train_steps=1500, batch_size=512, hidden=64, n_eval=4000, eval_draws=5),
}
if SCALE not in CONFIGS:
    raise ValueError(f"NDM_NOTEBOOK_SCALE must be one of {sorted(CONFIGS)}, got {SCALE!r}")
CFG = CONFIGS[SCALE]
SEED = 0
TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)
torch.set_num_threads(1)
print(f"scale={SCALE}: {CFG}; output in {OUT}/")


# %%
def make_model(learned_F: bool) -> nd.NDM:
    torch.manual_seed(SEED)
    sched = nd.LinearLogSNR(-12.0, 12.0)
    predictor = nd.EpsilonPredictor(nd.MLP(2, hidden=CFG["hidden"], depth=3), sched)
    transform = (
        nd.ResidualTransform(nd.MLP(2, hidden=CFG["hidden"], depth=2, zero_init=True))
        if learned_F
        else None
    )
    return nd.NDM(predictor, transform=transform, schedule=sched, data_shape=(2,)).float()


T0 = time.perf_counter()
MODELS = {}
for name, learned in (("DDPM", False), ("NDM", True)):
    res = train(
        make_model(learned),
        checkerboard,
        steps=CFG["train_steps"],
        batch_size=CFG["batch_size"],
        lr=2e-3,
        generator=torch.Generator().manual_seed(SEED),
        progress=False,
    )
    MODELS[name] = res.ema_model.eval()
    print(f"trained {name} in {time.perf_counter() - T0:.0f} s")

g = torch.Generator().manual_seed(99)
test_x = checkerboard(CFG["n_eval"], g)
RESULTS = {"scale": SCALE, "config": CFG}
for name, model in MODELS.items():
    nelbo = ot.held_out_nelbo(model, test_x, CFG["eval_draws"], seed=5)
    RESULTS[name] = dict(
        nelbo=float(nelbo.mean()), nelbo_se=float(nelbo.std() / math.sqrt(nelbo.numel()))
    )
with torch.no_grad():
    ndm = MODELS["NDM"]
    RESULTS["NDM"]["rms_F_minus_x"] = {
        f"{t:g}": float(
            (ndm.F(test_x, torch.full((test_x.shape[0],), t)) - test_x).pow(2).sum(1).mean().sqrt()
        )
        for t in TIMES
    }
for name in MODELS:
    r = RESULTS[name]
    print(f"{name}: held-out −ELBO {r['nelbo']:.4f} ± {r['nelbo_se']:.4f} nats")
print(
    "NDM RMS ‖F(x, t) − x‖ at t =",
    {k: round(v, 3) for k, v in RESULTS["NDM"]["rms_F_minus_x"].items()},
)

# %% [markdown]
# ## Figure
#
# Rows: F(x, t) for the DDPM (the identity) and for the NDM. Grid lines of [−4, 4]² are drawn
# through F; the data points are coloured by their square.

# %%
from matplotlib import cm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

lines = torch.linspace(-4.0, 4.0, 17)
dense = torch.linspace(-4.0, 4.0, 161)
grid_h = torch.stack(
    torch.meshgrid(lines, dense, indexing="ij"), -1
)  # (17, 161, 2): x = const rows
grid_v = grid_h.flip(-1)
pts = test_x[:1500]
square = (torch.floor(pts[:, 0] / 2) * 4 + torch.floor(pts[:, 1] / 2)).numpy()
colours = cm.tab20((square - square.min()) / max(square.max() - square.min(), 1))

fig = Figure(figsize=(3.2 * len(TIMES), 3.4 * 2))
axes = fig.subplots(2, len(TIMES))
with torch.no_grad():
    lim = 1.1 * max(4.0, float(MODELS["NDM"].F(pts, torch.ones(pts.shape[0])).abs().max()))
    for row, name in enumerate(("DDPM", "NDM")):
        model = MODELS[name]
        for ax, t in zip(axes[row], TIMES):

            def F(x, t=t, model=model):
                return model.F(x, torch.full((x.shape[0],), t))

            for grid in (grid_h, grid_v):
                for line in grid:
                    y = F(line)
                    ax.plot(y[:, 0], y[:, 1], color="0.75", lw=0.5)
            y = F(pts)
            ax.scatter(y[:, 0], y[:, 1], s=1.5, c=colours)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_title(f"{name}: F(x, t={t:g})", fontsize=9)
fig.suptitle(
    f"Learned transform on the checkerboard, scale={SCALE}: NDM −ELBO {RESULTS['NDM']['nelbo']:.3f}, "
    f"DDPM {RESULTS['DDPM']['nelbo']:.3f} nats",
    fontsize=11,
)
fig.tight_layout()
FIGURE = save_figure(fig, OUT / "learned_transforms_2d.png", dpi=80)
RESULTS["figure"] = str(FIGURE)
print(f"\nfigure written to {FIGURE}; total {time.perf_counter() - T0:.0f} s")
