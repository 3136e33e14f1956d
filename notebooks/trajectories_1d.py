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
# # Probability-flow trajectories in 1D: DDPM vs NDM
#
# In the spirit of the 1D figure of *Neural Diffusion Models* (Bartosh, Vetrov & Naesseth,
# ICML 2024): we train a classical diffusion (DDPM/VDM, F = identity) and an NDM with a
# learned forward transform F(x, t) = x + t·MLP(x, t) on the same bimodal 1D mixture, with
# the same predictor, schedule, steps and seed, and draw their probability-flow ODE
# trajectories from t = 1 (prior) to t = 0 (data) side by side.
#
# Numbers reported for each model:
#
# * **straightness**: mean over trajectories of (path length / |z_0 − z_1|), measured on
#   the Heun solver's grid. 1 means every trajectory is a straight line (the
#   optimal-transport ideal); larger means more curved paths, which need more solver steps.
#   (The median is also printed: a trajectory that ends close to where it started has a
#   tiny denominator and can dominate the mean.)
# * **held-out negative ELBO** (nats, lower is better) from `nd.continuous_loss`,
#   averaged over several (t, ε) draws per held-out point.
#
# Size: `NDM_NOTEBOOK_SCALE=small` (a few seconds, for tests) or `full` (default, about
# 1–2 minutes on 2 CPU cores). Output folder: `NDM_NOTEBOOK_OUT` (default
# `runs/notebooks/`). Results are collected in the module-level dict `RESULTS`.

# %%
import math
import os
import time
from pathlib import Path

import torch

import ndmsolve as nd
from ndmsolve.data import gaussian_mixture_1d
from ndmsolve.train import train
from ndmsolve.viz import save_figure

SCALE = os.environ.get("NDM_NOTEBOOK_SCALE", "full").strip().lower()
OUT = Path(os.environ.get("NDM_NOTEBOOK_OUT", "runs/notebooks"))
CONFIGS = {
    # train_steps per model; hidden width of the predictor MLP (the transform gets half)
    "small": dict(train_steps=300, batch_size=128, hidden=32, n_eval=500, eval_draws=5,
                  n_paths=64, sample_steps=20),
    "full": dict(train_steps=6000, batch_size=256, hidden=64, n_eval=2000, eval_draws=10,
                 n_paths=400, sample_steps=100),
}
if SCALE not in CONFIGS:
    raise ValueError(f"NDM_NOTEBOOK_SCALE must be one of {sorted(CONFIGS)}, got {SCALE!r}")
CFG = CONFIGS[SCALE]
SEED = 0
# A bimodal mixture: two well-separated, equally weighted modes.
MIXTURE = dict(means=(-1.5, 1.5), stds=(0.25, 0.25), weights=(0.5, 0.5))
torch.set_num_threads(1)  # tiny networks: one thread is fastest
print(f"scale={SCALE}: {CFG}; output in {OUT}/")

# %% [markdown]
# ## Data and models
#
# Both models use the same ε-predictor architecture and the same initial weights; the
# NDM's transform starts at the identity (`zero_init=True`), so at step 0 the two models
# are the same classical diffusion.

# %%
g_data = torch.Generator().manual_seed(SEED)
train_x = gaussian_mixture_1d(50_000, g_data, **MIXTURE)
test_x = gaussian_mixture_1d(CFG["n_eval"], g_data, **MIXTURE)  # later draws: held out


def make_model(learned: bool) -> nd.NDM:
    torch.manual_seed(SEED)
    sched = nd.LinearLogSNR(-12.0, 12.0)
    predictor = nd.EpsilonPredictor(nd.MLP(1, hidden=CFG["hidden"], depth=3), sched)
    transform = (nd.ResidualTransform(nd.MLP(1, hidden=CFG["hidden"] // 2, depth=2, zero_init=True))
                 if learned else None)
    return nd.NDM(predictor, transform=transform, schedule=sched, data_shape=(1,)).float()


# %% [markdown]
# ## Training
#
# Same data stream, steps, learning rate and seed for both; we keep the EMA weights.

# %%
MODELS = {}
TRAIN_S = {}
for name, learned in (("DDPM", False), ("NDM", True)):
    t0 = time.perf_counter()
    res = train(make_model(learned), train_x, steps=CFG["train_steps"], batch_size=CFG["batch_size"],
                lr=2e-3, generator=torch.Generator().manual_seed(SEED + 1), progress=False)
    TRAIN_S[name] = time.perf_counter() - t0
    MODELS[name] = res.ema_model.eval()
    print(f"trained {name} ({CFG['train_steps']} steps) in {TRAIN_S[name]:.1f} s")

# %% [markdown]
# ## Held-out negative ELBO
#
# The same generator seed for both models gives the same (t, ε) draws: a paired comparison.


# %%
@torch.no_grad()
def held_out_nelbo(model: nd.NDM, x: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """Per-point negative ELBO (nats), averaged over ``draws`` (t, ε) draws: (n,)."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([nd.continuous_loss(model, x, generator=g).total for _ in range(draws)]).mean(0)


NELBO = {name: held_out_nelbo(m, test_x, CFG["eval_draws"], SEED + 2) for name, m in MODELS.items()}

# %% [markdown]
# ## Probability-flow trajectories and their straightness
#
# `nd.sample(..., method="heun", return_path=True)` integrates the PF-ODE from t = 1 to
# t = 0 and returns the states on the grid, `path` of shape (steps + 1, n, 1). Both models
# start from the same prior draws z_1.


# %%
def straightness(path: torch.Tensor) -> torch.Tensor:
    """Path length / |z_0 − z_1| of each trajectory in ``path`` (S, n, d): (n,).

    Both quantities are reduced from the same per-step increments in float64, so the
    ratio is ≥ 1 exactly (triangle inequality; rounding is monotone)."""
    steps = path.double().diff(dim=0)                                  # (S-1, n, d)
    length = steps.norm(dim=-1).sum(0)                                 # Σ |z_{k+1} − z_k|
    displacement = steps.sum(0).norm(dim=-1)                           # |z_0 − z_1|
    return length / displacement


PATHS = {}
for name, model in MODELS.items():
    s = nd.sample(model, CFG["n_paths"], method="heun", steps=CFG["sample_steps"], return_path=True,
                  generator=torch.Generator().manual_seed(SEED + 3))
    PATHS[name] = (s.path_ts, s.path, s.nfe)

RESULTS = {}
for name in MODELS:
    ts, path, nfe = PATHS[name]
    ratio = straightness(path)
    nelbo = NELBO[name]
    RESULTS[name] = dict(
        straightness_mean=float(ratio.mean()),
        straightness_median=float(ratio.median()),
        nelbo=float(nelbo.mean()),
        nelbo_se=float(nelbo.std() / math.sqrt(nelbo.numel())),
        nfe=int(nfe),
        train_s=TRAIN_S[name],
    )
diff = NELBO["NDM"] - NELBO["DDPM"]
RESULTS["NDM_minus_DDPM_nelbo"] = float(diff.mean())
RESULTS["NDM_minus_DDPM_nelbo_se"] = float(diff.std() / math.sqrt(diff.numel()))

print(f"\n{'model':<6}{'straightness mean':>19}{'median':>9}{'neg. ELBO (nats)':>22}")
for name in MODELS:
    r = RESULTS[name]
    print(f"{name:<6}{r['straightness_mean']:>19.4f}{r['straightness_median']:>9.4f}"
          f"{r['nelbo']:>13.4f} ± {r['nelbo_se']:.4f}")
print(f"NDM − DDPM negative ELBO: {RESULTS['NDM_minus_DDPM_nelbo']:+.4f} ± "
      f"{RESULTS['NDM_minus_DDPM_nelbo_se']:.4f} nats (paired)")

# %% [markdown]
# ## Figure
#
# Trajectories run from the prior at t = 1 (left) to the data at t = 0 (right), coloured by
# where they end; the grey histogram on the right edge is the held-out data.

# %%
from matplotlib import cm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

n_draw = min(CFG["n_paths"], 120)
lim = 1.15 * max(float(p[1].abs().max()) for p in PATHS.values())
fig = Figure(figsize=(11, 4.2))
axes = fig.subplots(1, 2, sharey=True)
for ax, name in zip(axes, MODELS):
    ts, path, nfe = PATHS[name]
    t = ts.numpy()
    z = path[:, :n_draw, 0].double().numpy()                 # (S, n_draw)
    end = z[-1]
    colours = cm.coolwarm((end - end.min()) / max(end.max() - end.min(), 1e-12))
    for k in range(z.shape[1]):
        ax.plot(t, z[:, k], color=colours[k], lw=0.7, alpha=0.7)
    # data density at t = 0, drawn as a sideways histogram to the right of the axis
    hist, edges = torch.histogram(test_x[:, 0].double(), bins=60, range=(-lim, lim), density=True)
    width = 0.12 / max(float(hist.max()), 1e-12)
    ax.barh(edges[:-1].numpy(), -hist.numpy() * width, height=float(edges[1] - edges[0]), left=-0.005,
            align="edge", color="0.6", alpha=0.8)
    r = RESULTS[name]
    ax.set_title(f"{name}: straightness {r['straightness_mean']:.3f} (median {r['straightness_median']:.3f})\n"
                 f"held-out −ELBO {r['nelbo']:.3f} ± {r['nelbo_se']:.3f} nats, heun {nfe} NFE", fontsize=10)
    ax.set_xlim(1.0, -0.13)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("t")
axes[0].set_ylabel("z_t")
fig.suptitle(f"PF-ODE trajectories, bimodal 1D mixture ({CFG['train_steps']} training steps, "
             f"scale={SCALE})", fontsize=11)
fig.tight_layout()
FIGURE = save_figure(fig, OUT / "trajectories_1d.png", dpi=120)
RESULTS["figure"] = str(FIGURE)
print(f"\nfigure written to {FIGURE}")
