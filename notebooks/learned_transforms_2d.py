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
# F(x, t) = x. We train on the checkerboard, with the same ε-predictor MLP and budget:
#
# * `DDPM`: F = identity, linear log-SNR schedule (±12), ELBO;
# * `NDM`: F = x + t·MLP(x, t) with the MLP's last layer zeroed (F starts at the identity),
#   linear schedule, ELBO;
# * `NDM (deformed init)`: the same, but the last layer gets a random init (3× PyTorch's default
#   weights, N(0, 0.5²) biases), so F starts far from the identity — the measured check of *why* the ELBO-trained F stays at the
#   identity: if the ELBO gave F a reason to deform, both starts would end deformed; if the
#   ELBO prefers the identity on this data, the deformed start is pulled back;
# * `NDM+M λ`: the OT-pushed NDM of `ot_dynamics_2d.py` (F = x + Σ_k sin(kπt/2)/k · h_k(x),
#   K = 8, learned schedule, −ELBO + λ E‖v‖² with v the model's PF-ODE velocity at
#   z_t ~ q(z_t | x), predictor held fixed).
#
# For each NDM we record RMS ‖F(x, t) − x‖ on held-out data during training (the raw weights
# and, at the end, the EMA weights that are evaluated) and draw F_φ(x, t) at several t for a grid
# of points and for data points coloured by their square, next to the identity of the DDPM.
#
# Size: `NDM_NOTEBOOK_SCALE=small` (seconds) or `full` (default, a few minutes on a shared
# 2-core machine). Output: `NDM_NOTEBOOK_OUT` (default `runs/notebooks/`); numbers in `RESULTS`.

# %%
import json
import math
import os
import time
from pathlib import Path

import torch

import ndmsolve as nd
from ndmsolve.data import checkerboard
from ndmsolve.io import atomic_write
from ndmsolve.studies import ot
from ndmsolve.train import train
from ndmsolve.viz import save_figure

SCALE = os.environ.get("NDM_NOTEBOOK_SCALE", "full").strip().lower()
OUT = Path(os.environ.get("NDM_NOTEBOOK_OUT", "runs/notebooks"))
CONFIGS = {
    "small": dict(
        train_steps=60,
        lr_schedule="constant",
        batch_size=128,
        hidden=16,
        n_eval=200,
        eval_draws=2,
        lam=1.0,
        log_every=20,
    ),
    "full": dict(
        train_steps=1500,
        lr_schedule="cosine",
        batch_size=512,
        hidden=64,
        n_eval=4000,
        eval_draws=5,
        lam=1.0,
        log_every=100,
    ),
}
if SCALE not in CONFIGS:
    raise ValueError(f"NDM_NOTEBOOK_SCALE must be one of {sorted(CONFIGS)}, got {SCALE!r}")
CFG = CONFIGS[SCALE]
SEED = 0
TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)
LAM = CFG["lam"]
torch.set_num_threads(1)
print(f"scale={SCALE}: {CFG}; output in {OUT}/")


# %%
def make_model(kind: str) -> nd.NDM:
    torch.manual_seed(SEED)
    learned_schedule = kind.startswith("NDM+M")
    sched = nd.LearnedLogSNR(-12.0, 12.0) if learned_schedule else nd.LinearLogSNR(-12.0, 12.0)
    predictor = nd.EpsilonPredictor(nd.MLP(2, hidden=CFG["hidden"], depth=3), sched)
    if kind == "DDPM":
        transform = None
    elif learned_schedule:  # as in ot_dynamics_2d.py
        transform = nd.TimeBasisTransform(
            nd.MLP(2, hidden=CFG["hidden"], depth=2, out_dim=16, zero_init=True), 8
        )
    else:
        zero = kind == "NDM"
        transform = nd.ResidualTransform(nd.MLP(2, hidden=CFG["hidden"], depth=2, zero_init=zero))
        if not zero:  # a clearly deformed start: RMS ‖F(x, 1) − x‖ of order 1 on the data
            with torch.no_grad():
                transform.net.out.weight.mul_(3.0)
                transform.net.out.bias.normal_(0.0, 0.5)
    return nd.NDM(predictor, transform=transform, schedule=sched, data_shape=(2,)).float()


g = torch.Generator().manual_seed(99)
test_x = checkerboard(CFG["n_eval"], g)


def rms_F_minus_x(model: nd.NDM, t: float) -> float:
    with torch.no_grad():
        tt = torch.full((test_x.shape[0],), t)
        return float((model.F(test_x, tt) - test_x).pow(2).sum(1).mean().sqrt())


T0 = time.perf_counter()
KINDS = ("DDPM", "NDM", "NDM (deformed init)", f"NDM+M {LAM:g}")
MODELS, TRACES = {}, {}
for kind in KINDS:
    model = make_model(kind)
    trace = [(0, rms_F_minus_x(model, 1.0))]

    def on_log(step, loss, rate, model=model, trace=trace):
        trace.append((step, rms_F_minus_x(model, 1.0)))

    res = train(
        model,
        checkerboard,
        steps=CFG["train_steps"],
        batch_size=CFG["batch_size"],
        lr=2e-3,
        lr_schedule=CFG["lr_schedule"],
        warmup_steps=100 if CFG["lr_schedule"] != "constant" else 0,
        generator=torch.Generator().manual_seed(SEED),
        loss=ot.penalized_loss(LAM, "marginal") if kind.startswith("NDM+M") else "continuous",
        progress=False,
        log_every=CFG["log_every"],
        on_log=on_log,
    )
    MODELS[kind] = res.ema_model.eval()
    TRACES[kind] = trace
    print(f"trained {kind} in {time.perf_counter() - T0:.0f} s")

RESULTS = {"scale": SCALE, "config": CFG}
for kind, model in MODELS.items():
    nelbo = ot.held_out_nelbo(model, test_x, CFG["eval_draws"], generator=5)
    RESULTS[kind] = dict(
        nelbo=float(nelbo.mean()), nelbo_se=float(nelbo.std() / math.sqrt(nelbo.numel()))
    )
    if kind != "DDPM":
        RESULTS[kind]["rms_F_minus_x"] = {f"{t:g}": rms_F_minus_x(model, t) for t in TIMES}
        RESULTS[kind]["rms_trace_raw_t1"] = TRACES[kind]
for kind in MODELS:
    r = RESULTS[kind]
    line = f"{kind:<20} held-out −ELBO {r['nelbo']:.4f} ± {r['nelbo_se']:.4f} nats"
    if "rms_F_minus_x" in r:
        rms = {k: round(v, 3) for k, v in r["rms_F_minus_x"].items()}
        tr = r["rms_trace_raw_t1"]
        line += (
            f"; RMS ‖F(x, t) − x‖ (EMA) at t = {rms}; raw weights at t = 1: step 0 "
            f"{tr[0][1]:.3f}, max {max(v for _, v in tr):.3f}, last {tr[-1][1]:.3f}"
        )
    print(line)
OUT.mkdir(parents=True, exist_ok=True)
atomic_write(
    OUT / "learned_transforms_2d.json", lambda f: f.write(json.dumps(RESULTS, indent=1).encode())
)

# %% [markdown]
# ## Figure
#
# Rows: F(x, t) for the DDPM (the identity) and for each NDM. Grid lines of [−4, 4]² are drawn
# through F; the data points are coloured by their square. Last column: RMS ‖F(x, 1) − x‖ of
# the raw weights during training.

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

fig = Figure(figsize=(3.2 * (len(TIMES) + 1), 3.4 * len(KINDS)))
axes = fig.subplots(len(KINDS), len(TIMES) + 1)
with torch.no_grad():
    lim = 1.1 * max(
        [4.0] + [float(MODELS[k].F(pts, torch.ones(pts.shape[0])).abs().max()) for k in KINDS]
    )
    for row, kind in enumerate(KINDS):
        model = MODELS[kind]
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
            ax.set_title(f"{kind}: F(x, t={t:g})", fontsize=9)
        ax = axes[row][-1]
        if kind in TRACES:
            steps, rms = zip(*TRACES[kind])
            ax.plot(steps, rms, color="tab:red")
        ax.set_xlabel("training step")
        ax.set_title(f"{kind}: RMS ‖F(x, 1) − x‖ (raw)", fontsize=9)
fig.suptitle(
    f"Learned transforms on the checkerboard, scale={SCALE}: held-out −ELBO "
    + ", ".join(f"{k} {RESULTS[k]['nelbo']:.3f}" for k in KINDS)
    + " nats",
    fontsize=11,
)
fig.tight_layout()
FIGURE = save_figure(fig, OUT / "learned_transforms_2d.png", dpi=80)
RESULTS["figure"] = str(FIGURE)
print(f"\nfigure written to {FIGURE}; total {time.perf_counter() - T0:.0f} s")
