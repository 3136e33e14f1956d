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
# # Capacity study, longer training: does the 400-step finding survive 2000 steps?
#
# The cells of `notebooks/capacity.py` (`ndmsolve.studies.capacity.run_cell`, unchanged) on
# the eight Gaussians and the checkerboard, MLP widths 4, 16 and 64, seeds 0, 1, 2, at 5x the
# steps (2000; batch 256, lr 4e-3 constant after the same 40 warm-up steps, EMA 0.995, so the
# first 400 steps follow the same schedule as the 400-step study). Only the general-transform
# NDM and its three DDPM baselines (equal steps, equal parameters, equal CPU time): the small
# and time-basis transforms are left out for CPU time. Gaps are printed beside the 400-step
# ones of `notebooks/figures/capacity.json` for the same cells.
#
# Size: `NDM_NOTEBOOK_SCALE=small` (seconds, for tests) or `full` (default; about 40
# process-minutes at one thread). Output: `NDM_NOTEBOOK_OUT` (default `runs/notebooks/`):
# `capacity_long.json`, `capacity_long.png`; finished models are cached in
# `NDM_CAPACITY_CACHE` (default `NDM_NOTEBOOK_OUT/capacity_long_runs/`; the full run used
# `runs/capacity_long`). `NDM_CAPACITY_SETS`,
# `NDM_CAPACITY_SEEDS` and `NDM_CAPACITY_CACHED_ONLY=1` work as in `capacity.py`;
# `NDM_CAPACITY_SIZES=4,64` cuts the widths.

# %%
import json
import os
from pathlib import Path

import torch

from ndmsolve.io import atomic_write
from ndmsolve.studies import capacity as cap

SCALE = os.environ.get("NDM_NOTEBOOK_SCALE", "full").strip().lower()
OUT = Path(os.environ.get("NDM_NOTEBOOK_OUT", "runs/notebooks"))
# The toy configuration of capacity.py's full run, general transform only.
TOY = dict(
    kinds=("ndm",),
    transform=32,
    transform_small=8,
    x_features=32,
    n_train=50_000,
    lr=4e-3,
    ema_decay=0.995,
    batch_size=256,
    warmup_steps=40,
    n_eval=1000,
    draws=16,
    pilot_rows=8000,
)
CONFIGS = {
    "small": dict(
        seeds=(0, 1),
        sets={
            "eight_gaussians": TOY
            | dict(
                sizes=(2,),
                steps=10,
                batch_size=32,
                warmup_steps=2,
                n_eval=100,
                draws=2,
                pilot_rows=400,
            )
        },
    ),
    # Sizes in the order they are run: the two ends first, so a cut run still has them.
    "full": dict(
        seeds=(0, 1, 2),
        sets={
            ds: TOY | dict(sizes=(4, 64, 16), steps=2000)
            for ds in ("eight_gaussians", "checkerboard")
        },
    ),
}
if SCALE not in CONFIGS:
    raise ValueError(f"NDM_NOTEBOOK_SCALE must be one of {sorted(CONFIGS)}, got {SCALE!r}")
CFG = CONFIGS[SCALE]
CACHE = Path(os.environ.get("NDM_CAPACITY_CACHE", OUT / "capacity_long_runs"))
CFG = cap.restrict(  # NDM_CAPACITY_SIZES="4,64": cut the sweep for CPU time
    CFG,
    sets=os.environ.get("NDM_CAPACITY_SETS"),
    seeds=os.environ.get("NDM_CAPACITY_SEEDS"),
    sizes=os.environ.get("NDM_CAPACITY_SIZES"),
)
torch.set_num_threads(1)
print(f"scale={SCALE}; cache in {CACHE}/", flush=True)

# %%
cells = cap.run_cells(
    CFG,
    CACHE,
    cached_only=os.environ.get("NDM_CAPACITY_CACHED_ONLY") == "1",
    log=lambda s: print(s, flush=True),
)
table = cap.summarize(cells)

# %%
# The 400-step study's gaps for the same cells (absent if its JSON is not there).
HERE = Path(globals().get("__file__", "notebooks/capacity_long.py")).resolve().parent
SHORT_PATH = HERE / "figures" / "capacity.json"
short = json.loads(SHORT_PATH.read_text())["table"] if SHORT_PATH.is_file() else {}
COMPS = ("equal_steps:ndm", "equal_params:ndm", "equal_cpu:ndm")


def _fmt(g):
    return "—" if g is None else f"{g['gap']:+.3f} ± {g['se']:.3f}"


baseline = {}
print("| data | width | steps | " + " | ".join(COMPS) + " | DDPM -ELBO | NDM -ELBO | F RMS |")
print("|---|---|---|---|---|---|---|---|---|")
for ds, by_size in table.items():
    for size, row in by_size.items():
        old = short.get(ds, {}).get(size)
        if old:
            baseline.setdefault(ds, {})[size] = {k: old["gaps"].get(k) for k in COMPS}
        for steps, r in ((400, old), (CFG["sets"][ds]["steps"], row)):
            if not r:
                continue
            m = r["models"]
            print(
                f"| {ds} | {size} | {steps} | "
                + " | ".join(_fmt(r["gaps"].get(k)) for k in COMPS)
                + f" | {m['ddpm']['nelbo']:.4f} | {m['ndm']['nelbo']:.4f} | "
                f"{m['ndm']['f_departure']:.3f} |"
            )

# %%
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ndmsolve.viz import save_figure  # noqa: E402

COLORS = {"checkerboard": "C0", "eight_gaussians": "C1"}
fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
for ax, comp in zip(axes, COMPS):
    for ds, by_size in table.items():
        for label, src, ls in (("2000 steps", by_size, "-"), ("400 steps", short.get(ds, {}), ":")):
            pts = [
                (int(s), src[s]["gaps"][comp])
                for s in by_size
                if comp in src.get(s, {}).get("gaps", {})
            ]
            if pts:
                ax.errorbar(
                    [p for p, _ in pts],
                    [g["gap"] for _, g in pts],
                    yerr=[g["se"] if g["se"] == g["se"] else 0.0 for _, g in pts],
                    color=COLORS[ds],
                    ls=ls,
                    marker="o",
                    capsize=3,
                    label=f"{ds}, {label}",
                )
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("predictor MLP width")
    ax.set_title(comp.split(":")[0].replace("_", " "))
axes[0].set_ylabel("NDM − DDPM held-out −ELBO (nats)  < 0: NDM better")
axes[-1].legend(fontsize=7)
fig.suptitle(
    f"NDM − DDPM gap, 2000 vs 400 training steps (mean ± SE over seeds {list(CFG['seeds'])})"
)
figure = save_figure(fig, OUT / "capacity_long.png")

# %%
RESULTS = {
    "scale": SCALE,
    "config": dict(CFG),
    "table": table,
    "baseline_400_steps_gaps": baseline,
    "figure": str(figure),
    "device": "cpu",
    "threads": 1,
    "loadavg_at_end": list(os.getloadavg()),
}
atomic_write(OUT / "capacity_long.json", lambda f: json.dump(RESULTS, f, indent=1), binary=False)
print(f"wrote {OUT / 'capacity_long.json'}, {figure}")
