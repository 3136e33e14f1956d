"""Plots, drawn with matplotlib's object API on the Agg canvas (no pyplot, no display,
no global backend change) and written atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

import torch
from torch import Tensor

from ._checks import seeded
from .io import atomic_write

if TYPE_CHECKING:  # numpy is imported where it is used; annotations only here
    import numpy as np

__all__ = ["scatter_samples", "save_figure", "image_grid", "loss_curve", "diffusion_grid"]

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
    lim: float | None = None,
    title: str | None = None,
    max_points: int = 5000,
    point_size: float = 1.5,
    dpi: int = 110,
    trajectories: Mapping[str, Tensor] | None = None,
) -> Path:
    """One panel per entry of ``panels`` (name -> samples), written to ``path`` (PNG etc.).

    Samples of shape (n, 2) are drawn as scatter plots on shared axes ([-lim, lim]²,
    default: the largest |coordinate| of the first panel, plus 10 %); samples of shape
    (n, 1) as histograms. At most ``max_points`` points per panel are drawn.
    ``trajectories`` (panel name -> path (S, k, 2), e.g. ``sample(..., return_path=True)``'s
    ``path[:, :k]``) draws k paths as lines over that 2-D panel, their starts as circles.
    """
    from matplotlib.figure import Figure

    items = list(panels.items()) if isinstance(panels, Mapping) else list(panels)
    if not items:
        raise ValueError("panels must hold at least one (name, samples) entry")
    arrays = []
    for name, x in items:
        x = torch.as_tensor(x).detach().cpu().double()
        if x.ndim != 2 or x.shape[1] not in (1, 2):
            raise ValueError(
                f"panels[{name!r}] must have shape (n, 1) or (n, 2), got {tuple(x.shape)}"
            )
        arrays.append((str(name), x[:max_points].numpy()))
    paths = {}
    for name, p in (trajectories or {}).items():
        p = torch.as_tensor(p).detach().cpu().double()
        if name not in dict(items):
            raise ValueError(
                f"trajectories[{name!r}] names no panel (panels: {[n for n, _ in items]})"
            )
        if p.ndim != 3 or p.shape[2] != 2:
            raise ValueError(
                f"trajectories[{name!r}] must have shape (S, k, 2), got {tuple(p.shape)}"
            )
        paths[str(name)] = p.numpy()
    if lim is None:
        finite = arrays[0][1][abs(arrays[0][1]).sum(1) < float("inf")]
        lim = 1.1 * float(abs(finite).max()) if finite.size else 1.0
    fig = Figure(figsize=(3.2 * len(arrays), 3.4))
    axes = fig.subplots(1, len(arrays), squeeze=False)[0]
    for ax, (name, x) in zip(axes, arrays):
        if x.shape[1] == 2:
            ax.scatter(x[:, 0], x[:, 1], s=point_size, alpha=0.6, linewidths=0)
            if name in paths:
                p = paths[name]
                ax.plot(p[:, :, 0], p[:, :, 1], color="k", lw=0.5, alpha=0.45)
                ax.scatter(
                    p[0, :, 0], p[0, :, 1], s=6, facecolors="none", edgecolors="k", linewidths=0.5
                )
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


def _tile(images: Tensor, nrow: int) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> one (rows·(H+1)−1, nrow·(W+1)−1, C) array, 1-px gaps."""
    import numpy as np

    n, c, h, w = images.shape
    rows = -(-n // nrow)
    out = np.ones((rows * (h + 1) - 1, nrow * (w + 1) - 1, c))
    for i in range(n):
        r, k = divmod(i, nrow)
        out[r * (h + 1) : r * (h + 1) + h, k * (w + 1) : k * (w + 1) + w] = (
            images[i].permute(1, 2, 0).numpy()
        )
    return out


def _unit(x: Tensor, n_bins: int | None) -> Tensor:
    x = torch.as_tensor(x).detach().cpu()
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.uint8 or not x.is_floating_point():
        return x.double() / float((n_bins or 256) - 1)
    return ((x.double() + 1.0) / 2.0).clamp(0.0, 1.0)  # model range [-1, 1]


def image_grid(
    path: PathLike,
    images: Tensor,
    *,
    nrow: int | None = None,
    n_bins: int | None = None,
    title: str | None = None,
    scale: float = 0.25,
    dpi: int = 110,
) -> Path:
    """A grid of images (N, C, H, W) written to ``path``: integer levels 0..n_bins − 1
    (default 256) or floats in the model range [-1, 1]; 1 or 3 channels."""
    from matplotlib.figure import Figure

    x = _unit(images, n_bins)
    n = x.shape[0]
    nrow = nrow or max(1, int(round(n**0.5)))
    tile = _tile(x, nrow)
    h, w = tile.shape[:2]
    fig = Figure(figsize=(max(2.0, w * scale / 4), max(2.0, h * scale / 4) + (0.3 if title else 0)))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(
        tile[..., 0] if tile.shape[2] == 1 else tile,
        cmap="gray",
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)


def loss_curve(
    path: PathLike,
    losses: Sequence[float],
    *,
    window: int = 50,
    title: str | None = None,
    ylabel: str = "loss (nats per sample)",
) -> Path:
    """Per-step losses and their running mean over ``window`` steps."""
    import numpy as np
    from matplotlib.figure import Figure

    v = np.asarray(list(losses), dtype=float)
    if v.size == 0:
        raise ValueError("losses must hold at least one value")
    fig = Figure(figsize=(5.0, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(np.arange(1, v.size + 1), v, lw=0.5, alpha=0.4, label="step")
    if v.size >= window:
        run = np.convolve(v, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window, v.size + 1), run, lw=1.5, label=f"mean of {window}")
    lo, hi = np.percentile(v, [1, 99])
    ax.set_ylim(lo - 0.05 * (hi - lo + 1e-12), hi + 0.05 * (hi - lo + 1e-12))
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


@torch.no_grad()
@seeded
def diffusion_grid(
    path: PathLike,
    models: Mapping[str, object],
    x: Tensor,
    ts: Sequence[float],
    *,
    generator: torch.Generator | None = None,
    n_bins: int | None = None,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Figure-5-style picture: for each model, rows z_t and x̂_θ(z_t, t) of a few images
    ``x`` (model range, (n, C, H, W)) across the times ``ts``, models side by side.

    z_t = α_t F(x, t) + σ_t ε is drawn from each model's own forward process with the
    same ε for every model (one draw from ``generator``), so the panels differ only by F
    and the predictor.
    """
    from matplotlib.figure import Figure

    if x.ndim != 4:
        raise ValueError(f"x must have shape (n, C, H, W), got {tuple(x.shape)}")
    ts = [float(t) for t in ts]
    if not ts or any(not 0.0 <= t <= 1.0 for t in ts):
        raise ValueError(f"ts must be times in [0, 1], got {ts}")
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    names = list(models)
    cell = 0.5 * max(1.0, x.shape[3] / 8)  # inches per image
    fig = Figure(
        figsize=(cell * len(ts) * len(names) + 0.4 * len(names) + 0.4, 2 * cell * x.shape[0] + 1.4)
    )
    axes = fig.subplots(2, len(names), squeeze=False)
    for j, name in enumerate(names):
        model = models[name]
        rows_z, rows_x = [], []
        for t in ts:
            tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
            mean, sigma = model.marginal(x, tt)
            z = mean + sigma.reshape(-1, 1, 1, 1) * eps
            rows_z.append(z)
            rows_x.append(model.x_hat(z, tt))
        for i, (rows, label) in enumerate(((rows_z, "z_t"), (rows_x, "x̂(z_t, t)"))):
            # columns = times, rows = images
            stack = torch.stack(rows, 1).reshape(-1, *x.shape[1:])
            ax = axes[i, j]
            tile = _tile(_unit(stack, n_bins), len(ts))
            ax.imshow(
                tile[..., 0] if tile.shape[2] == 1 else tile,
                cmap="gray",
                vmin=0,
                vmax=1,
                interpolation="nearest",
            )
            ax.set_xticks([(k + 0.5) * (x.shape[3] + 1) for k in range(len(ts))])
            ax.set_xticklabels([f"{t:g}" for t in ts], fontsize=7)
            ax.set_yticks([])
            ax.set_title(f"{name}: {label}", fontsize=9)
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
    from matplotlib.ticker import NullFormatter

    cmap = colormaps["tab20" if len(methods) > 10 else "tab10"]
    colors = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}
    styles = {
        "ode_fixed": "-",
        "ode_adaptive": "--",
        "sde_fixed": ":",
        "sde_adaptive": "-.",
        "discrete": (0, (5, 1, 1, 1)),
    }
    for ax, model in zip(axes, models, strict=True):
        for m in methods:
            rs = sorted(
                (
                    r
                    for r in result.rows
                    if r["model"] == model and r["method"] == m and not r["error"]
                ),
                key=lambda r: r["nfe"],
            )
            if not rs:
                continue
            ax.errorbar(
                [r["nfe"] for r in rs],
                [r[metric] for r in rs],
                yerr=[r[f"{metric}_se"] for r in rs],
                color=colors[m],
                marker="o",
                markersize=3,
                capsize=2,
                linestyle=styles.get(rs[0]["kind"], "-"),
                label=m,
            )
        fl = result.floors.get(model, {}).get(metric)
        if fl is not None:
            ax.axhspan(fl["mean"] - fl["se"], fl["mean"] + fl["se"], color="0.6", alpha=0.4, lw=0)
            ax.axhline(fl["mean"], color="0.4", lw=0.8, label=f"floor (n={fl['n']})")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short ranges
        if metric != "nll":
            ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_title(model, fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_ylabel(metric)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)
