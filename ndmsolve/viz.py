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
    trajectories: Optional[Mapping[str, Tensor]] = None,
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
            raise ValueError(f"panels[{name!r}] must have shape (n, 1) or (n, 2), got {tuple(x.shape)}")
        arrays.append((str(name), x[:max_points].numpy()))
    paths = {}
    for name, p in (trajectories or {}).items():
        p = torch.as_tensor(p).detach().cpu().double()
        if name not in dict(items):
            raise ValueError(f"trajectories[{name!r}] names no panel (panels: {[n for n, _ in items]})")
        if p.ndim != 3 or p.shape[2] != 2:
            raise ValueError(f"trajectories[{name!r}] must have shape (S, k, 2), got {tuple(p.shape)}")
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
                ax.scatter(p[0, :, 0], p[0, :, 1], s=6, facecolors="none", edgecolors="k", linewidths=0.5)
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
