"""Plots, drawn with matplotlib's object API on the Agg canvas (no pyplot, no display,
no global backend change) and written atomically."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from ._io import atomic_write

__all__ = ["scatter_samples", "save_figure"]

PathLike = Union[str, os.PathLike]


def save_figure(fig, path: PathLike, **savefig_kwargs) -> Path:
    """Save a matplotlib ``Figure`` to ``path`` via a temporary file and ``os.replace``
    (a reader never sees a half-written image). The format follows the suffix."""
    path = Path(path)
    fmt = path.suffix.lstrip(".") or "png"
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, **savefig_kwargs))


def scatter_samples(
    path: PathLike,
    panels: Union[Mapping[str, Tensor], Sequence[tuple[str, Tensor]]],
    *,
    lim: Optional[float] = None,
    title: Optional[str] = None,
    max_points: int = 5000,
    point_size: float = 1.5,
    dpi: int = 110,
) -> Path:
    """One panel per entry of ``panels`` (name -> samples), written to ``path`` (PNG etc.).

    Samples of shape (n, 2) are drawn as scatter plots on shared axes ([-lim, lim]²,
    default: the largest |coordinate| of the first panel, plus 10 %); samples of shape
    (n, 1) as histograms. At most ``max_points`` points per panel are drawn.
    """
    from matplotlib.figure import Figure

    items = list(panels.items()) if isinstance(panels, Mapping) else list(panels)
    if not items:
        raise ValueError("panels must hold at least one (name, samples) entry")
    arrays = []
    for name, x in items:
        x = torch.as_tensor(x).detach().cpu().double()
        if x.ndim != 2 or x.shape[1] not in (1, 2):
            raise ValueError(f"panels[{name!r}] must have shape (n, 1) or (n, 2), got {tuple(x.shape)}")
        arrays.append((str(name), x[:max_points].numpy()))
    if lim is None:
        finite = arrays[0][1][abs(arrays[0][1]).sum(1) < float("inf")]
        lim = 1.1 * float(abs(finite).max()) if finite.size else 1.0
    fig = Figure(figsize=(3.2 * len(arrays), 3.4))
    axes = fig.subplots(1, len(arrays), squeeze=False)[0]
    for ax, (name, x) in zip(axes, arrays):
        if x.shape[1] == 2:
            ax.scatter(x[:, 0], x[:, 1], s=point_size, alpha=0.6, linewidths=0)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
        else:
            ax.hist(x[:, 0], bins=80, range=(-lim, lim), density=True)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)


# ----------------------------------------------------------------------- NFE-vs-quality sweep
__all__ += ["plot_sweep"]


def plot_sweep(result, path: PathLike, *, metric: str | None = None, dpi: int = 110) -> Path:
    """Metric against NFE (log-log axes) for a ``ndmsolve.studies.nfe_sweep.SweepResult``:
    one panel per model side by side (shared y), one curve per method with ± se error
    bars, the metric's floor (mean ± se) as a grey band. ``metric``: default the first."""
    from matplotlib.figure import Figure

    metric = result.metrics[0] if metric is None else metric
    if metric not in result.metrics:
        raise ValueError(f"metric must be one of {list(result.metrics)}, got {metric!r}")
    models = list(dict.fromkeys(r["model"] for r in result.rows))
    if not models:
        raise ValueError("result has no rows to plot")
    fig = Figure(figsize=(5.0 * len(models) + 1.6, 4.2))
    axes = fig.subplots(1, len(models), squeeze=False, sharey=True)[0]
    methods = list(dict.fromkeys(r["method"] for r in result.rows))
    from matplotlib import colormaps

    cmap = colormaps["tab20" if len(methods) > 10 else "tab10"]
    colors = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}
    styles = {"ode_fixed": "-", "ode_adaptive": "--", "sde_fixed": ":", "sde_adaptive": "-.",
              "discrete": (0, (5, 1, 1, 1))}
    for ax, model in zip(axes, models, strict=True):
        for m in methods:
            rs = sorted((r for r in result.rows if r["model"] == model and r["method"] == m
                         and not r["error"]), key=lambda r: r["nfe"])
            if not rs:
                continue
            ax.errorbar([r["nfe"] for r in rs], [r[metric] for r in rs],
                        yerr=[r[f"{metric}_se"] for r in rs], color=colors[m], marker="o",
                        markersize=3, capsize=2, linestyle=styles.get(rs[0]["kind"], "-"), label=m)
        fl = result.floors.get(model, {}).get(metric)
        if fl is not None:
            ax.axhspan(fl["mean"] - fl["se"], fl["mean"] + fl["se"], color="0.6", alpha=0.4, lw=0)
            ax.axhline(fl["mean"], color="0.4", lw=0.8, label=f"floor (n={fl['n']})")
        ax.set_xscale("log")
        if metric != "nll":
            ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_title(model, fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_ylabel(metric)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)
