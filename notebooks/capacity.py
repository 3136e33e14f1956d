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
# # When does a learned forward process pay off? NDM vs DDPM across predictor capacity
#
# `ndmsolve.studies.capacity`: on the checkerboard, the eight Gaussians and the 8x8 digits,
# the predictor's size is swept (MLP width, depth 3, with 32 random Fourier input features on
# the toys; U-Net base channels on the digits) with the transform's size held fixed. Per size
# and training seed: the NDM (general transform F = x + t·net), the NDM with a smaller
# transform (toys), the NDM with the time-basis transform at half width, and three DDPM
# baselines: the same steps, the predictor widened to the NDM's parameter count, and the
# same-steps DDPM continued until it has used each NDM's CPU time (one thread, process CPU
# time). Held-out −ELBO in nats (`held_out_nelbo` on the toys; on the digits the same
# estimator with the discretised decoder over 17 levels), paired over the same points and
# draws; gaps are means ± SE over seeds of the per-seed paired differences.
#
# Size: `NDM_NOTEBOOK_SCALE=small` (seconds, for tests) or `full` (default; about 25
# CPU-minutes at one thread). Output: `NDM_NOTEBOOK_OUT` (default `runs/notebooks/`):
# `capacity.json`, `capacity.png`; every finished model's numbers are cached in
# `NDM_NOTEBOOK_OUT/capacity_runs/` (a rerun resumes from there).

# %%
import json
import math
import os
from pathlib import Path

import torch

from ndmsolve.data import load_digits
from ndmsolve.io import atomic_write
from ndmsolve.metrics import mean_se
from ndmsolve.studies import capacity as cap

SCALE = os.environ.get("NDM_NOTEBOOK_SCALE", "full").strip().lower()
OUT = Path(os.environ.get("NDM_NOTEBOOK_OUT", "runs/notebooks"))
TOY = dict(
    kinds=("ndm", "ndm_small", "ndm_tb"),
    transform=32,
    transform_small=8,
    x_features=32,
    n_train=50_000,
    lr=4e-3,
    ema_decay=0.995,
)
DIGITS = dict(kinds=("ndm", "ndm_tb"), transform=4, transform_small=4, lr=4e-3, ema_decay=0.98)
CONFIGS = {
    "small": dict(
        seeds=(0, 1),
        sets={
            "checkerboard": TOY
            | dict(
                sizes=(2, 8),
                steps=10,
                batch_size=32,
                warmup_steps=2,
                n_eval=100,
                draws=2,
                pilot_rows=400,
            ),
            "digits": DIGITS
            | dict(
                sizes=(2,),
                steps=2,
                batch_size=4,
                warmup_steps=0,
                n_eval=16,
                draws=1,
                pilot_rows=64,
            ),
        },
    ),
    "full": dict(
        seeds=(0, 1, 2),
        sets={
            name: TOY
            | dict(
                sizes=(4, 8, 16, 32, 64),
                steps=400,
                batch_size=256,
                warmup_steps=40,
                n_eval=1000,
                draws=16,
                pilot_rows=8000,
                # the smaller transform on the checkerboard only (CPU budget)
                kinds=TOY["kinds"] if name == "checkerboard" else ("ndm", "ndm_tb"),
            )
            for name in ("checkerboard", "eight_gaussians")
        }
        | {
            "digits": DIGITS
            | dict(
                sizes=(4, 8, 16),
                steps=200,
                batch_size=32,
                warmup_steps=30,
                n_eval=297,
                draws=8,
                pilot_rows=4000,
            )
        },
    ),
}
if SCALE not in CONFIGS:
    raise ValueError(f"NDM_NOTEBOOK_SCALE must be one of {sorted(CONFIGS)}, got {SCALE!r}")
CFG = CONFIGS[SCALE]
CACHE = Path(os.environ.get("NDM_CAPACITY_CACHE", OUT / "capacity_runs"))
# NDM_CAPACITY_SETS="digits" / NDM_CAPACITY_SEEDS="2": split a run over processes.
CFG = cap.restrict(
    CFG, sets=os.environ.get("NDM_CAPACITY_SETS"), seeds=os.environ.get("NDM_CAPACITY_SEEDS")
)
torch.set_num_threads(1)
print(f"scale={SCALE}; cache in {CACHE}/", flush=True)

# %%
# NDM_CAPACITY_CACHED_ONLY=1: tabulate what the cache holds, train nothing.
# NDM_CAPACITY_REVERSE=1: largest size first (a helper process meets the main one midway).
cells = cap.run_cells(
    CFG,
    CACHE,
    cached_only=os.environ.get("NDM_CAPACITY_CACHED_ONLY") == "1",
    reverse=os.environ.get("NDM_CAPACITY_REVERSE") == "1",
    log=lambda s: print(s, flush=True),
)
table = cap.summarize(cells)

# %%
# References: the toys' differential entropy (every −ELBO is above it in expectation); on the
# digits the independent-pixel categorical model (nats per image and bits/dim).
refs = {ds: dict(zip(("nats", "se"), cap.toy_entropy(ds))) for ds in cells if ds != "digits"}
if "digits" in cells:
    n_eval = CFG["sets"]["digits"]["n_eval"]
    ind = cap.independent_pixel_nats(load_digits("train")[0], load_digits("test")[0][:n_eval])
    m, se = mean_se(ind)
    refs["digits"] = {"nats": m, "se": se, "bits_per_dim": m / (64 * math.log(2))}
for ds, r in refs.items():
    print(f"{ds} reference: {r['nats']:.4f} ± {r['se']:.4f} nats")

# %%
# The estimator must tell a trained model from an untrained one: seed 0's DDPM at the
# smallest size before training, beside its trained −ELBO (same points and draws).
untrained = {}
for ds, c in CFG["sets"].items():
    size, seed = c["sizes"][0], CFG["seeds"][0]
    x_te = cap.load_data(ds, seed, c)[1]
    model = cap.build_model("ddpm", size, ds == "digits", c, seed)
    untrained[ds] = mean_se(cap.evaluate(model, x_te, ds == "digits", c, seed))
    trained = cells.get(ds, {}).get(size, {}).get(seed, {}).get("ddpm")
    if trained is None:
        continue
    print(
        f"{ds} size {size} seed {seed} DDPM: untrained {untrained[ds][0]:.3f} ± "
        f"{untrained[ds][1]:.3f}, trained {trained['nelbo']:.3f} ± {trained['se']:.3f} nats"
    )

# %%
LABEL = {"ndm": "NDM", "ndm_small": "NDM (small F)", "ndm_tb": "NDM (time-basis F)"}
for ds, by_size in table.items():
    print(f"\n{ds}: held-out -ELBO (nats), mean ± SE over seeds; reference {refs[ds]['nats']:.3f}")
    print("| size | model | params | steps | CPU s | -ELBO | F departure |")
    print("|---|---|---|---|---|---|---|")
    for size, row in by_size.items():
        for k, m in row["models"].items():
            se = f"{m['se']:.4f}" if m["se"] is not None else "n/a"
            print(
                f"| {size} | {k} | {m['params']} | {m['steps']:.0f} | {m['cpu_s']:.1f} | "
                f"{m['nelbo']:.4f} ± {se} | {m['f_departure']:.4f} |"
            )
    print("| size | comparison | NDM - DDPM (nats) | seeds |")
    print("|---|---|---|---|")
    for size, row in by_size.items():
        for name, g in row["gaps"].items():
            print(
                f"| {size} | {name} vs {g['vs']} | {g['gap']:+.4f} ± {g['se']:.4f} | {g['seeds']} |"
            )

# %%
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ndmsolve.viz import save_figure  # noqa: E402

PANELS = (
    ("equal_steps", "equal steps"),
    ("equal_params", "equal parameters"),
    ("equal_cpu", "equal CPU time"),
)
COLORS = {"checkerboard": "C0", "eight_gaussians": "C1", "digits": "C2"}
MARKERS = {"ndm": "o", "ndm_small": "s", "ndm_tb": "^"}
fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
for ax, (comp, title) in zip(axes, PANELS):
    for ds, by_size in table.items():
        for kind in cap.NDM_KINDS:
            pts = [
                (row["models"][kind]["params"], row["gaps"][f"{comp}:{kind}"])
                for row in by_size.values()
                if f"{comp}:{kind}" in row["gaps"]
            ]
            if not pts:
                continue
            scale = 64 * math.log(2) if ds == "digits" else 1.0  # digits in bits/dim
            ax.errorbar(
                [p for p, _ in pts],
                [g["gap"] / scale for _, g in pts],
                yerr=[0 if math.isnan(g["se"]) else g["se"] / scale for _, g in pts],
                marker=MARKERS[kind],
                color=COLORS[ds],
                capsize=3,
                ls="-" if kind == "ndm" else ":",
                label=f"{ds} {LABEL[kind]}",
            )
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("NDM parameters (predictor + transform)")
    ax.set_title(title)
axes[0].set_ylabel("NDM − DDPM held-out −ELBO\n(nats; digits: bits/dim)  < 0: NDM better")
axes[-1].legend(fontsize=7)
fig.suptitle(f"NDM − DDPM gap across predictor size (mean ± SE over seeds {list(CFG['seeds'])})")
figure = save_figure(fig, OUT / "capacity.png")

# %%
RESULTS = {
    "scale": SCALE,
    "config": {k: v for k, v in CFG.items()},
    "references": refs,
    "untrained_ddpm_nats": untrained,
    "table": table,
    "figure": str(figure),
    "device": "cpu",
    "threads": 1,
    "loadavg_at_end": list(os.getloadavg()),
}
atomic_write(OUT / "capacity.json", lambda f: json.dump(RESULTS, f, indent=1), binary=False)
print(f"wrote {OUT / 'capacity.json'}, {figure}")
