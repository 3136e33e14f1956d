"""Sample-quality metrics for comparing two sets of samples.

Sliced Wasserstein distance (p = 2 by default):

    SW_p(μ, ν) = ( E_θ [ W_p^p(θ#μ, θ#ν) ] )^{1/p},   θ uniform on the unit sphere,

estimated with ``n_proj`` random directions (or directions you pass). The 1-D
Wasserstein distance between empirical measures is computed exactly from sorted
projections (equal sizes) or from their quantile functions at common levels
(different sizes).

For two Gaussians the 1-D projections are N(θ·μ_i, θᵀS_iθ) and
W_2² = (θ·(μ_1 − μ_2))² + (s_1 − s_2)² with s_i = sqrt(θᵀS_iθ), which the tests use.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["sliced_wasserstein", "random_directions", "wasserstein_1d"]


def random_directions(
    n_proj: int, d: int, *, generator: Optional[torch.Generator] = None, dtype=torch.float32, device=None
) -> Tensor:
    """``n_proj`` directions uniform on the unit sphere in R^d, shape (n_proj, d)."""
    if not isinstance(n_proj, int) or n_proj < 1:
        raise ValueError(f"n_proj must be a positive int, got {n_proj!r}")
    if not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive int, got {d!r}")
    v = torch.randn(n_proj, d, generator=generator, dtype=dtype, device=device)
    return v / v.norm(dim=1, keepdim=True)


def wasserstein_1d(u: Tensor, v: Tensor, p: float = 2.0) -> Tensor:
    """W_p^p between the empirical measures of the columns of ``u`` (n, P) and ``v`` (m, P).

    Returns (P,): one value per column. Equal sizes: mean |u_(i) − v_(i)|^p over the
    sorted values (exact). Different sizes: both quantile functions are evaluated at
    the max(n, m) mid-point levels (i + ½)/N and compared (a close approximation).
    """
    n, m = u.shape[0], v.shape[0]
    us, _ = torch.sort(u, dim=0)
    vs, _ = torch.sort(v, dim=0)
    if n != m:
        N = max(n, m)
        levels = (torch.arange(N, dtype=u.dtype, device=u.device) + 0.5) / N
        us, vs = _quantiles(us, levels), _quantiles(vs, levels)
    return (us - vs).abs().pow(p).mean(0)


def _quantiles(sorted_x: Tensor, levels: Tensor) -> Tensor:
    # Linear interpolation of the empirical quantile function of sorted columns at levels.
    n = sorted_x.shape[0]
    pos = (levels * n - 0.5).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo.to(pos.dtype)).unsqueeze(1)
    return sorted_x[lo] * (1 - w) + sorted_x[hi] * w


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    n_proj: int = 256,
    generator: Optional[torch.Generator] = None,
    *,
    p: float = 2.0,
    directions: Optional[Tensor] = None,
) -> Tensor:
    """Sliced p-Wasserstein distance between sample sets ``x`` (n, *shape), ``y`` (m, *shape).

    Args:
        x, y: samples; everything after the batch dimension is flattened.
        n_proj: number of random directions (ignored when ``directions`` is given).
        generator: draws the directions; same seed, same value.
        p: the order (≥ 1).
        directions: optional (P, d) directions to use instead of random ones (they are
            normalised to unit length).

    Returns a 0-dim tensor: ( mean_θ W_p^p(θ·x, θ·y) )^{1/p}.
    """
    for name, a in (("x", x), ("y", y)):
        if not isinstance(a, Tensor) or not a.is_floating_point():
            raise TypeError(f"{name} must be a floating torch.Tensor")
        if a.ndim < 2 or a.shape[0] < 1:
            raise ValueError(f"{name} must have shape (n, *shape) with n >= 1, got {tuple(a.shape)}")
    x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    if not p >= 1:
        raise ValueError(f"p must be >= 1, got {p}")
    y = y.to(x.dtype)
    d = x.shape[1]
    if directions is None:
        directions = random_directions(n_proj, d, generator=generator, dtype=x.dtype, device=x.device)
    else:
        if directions.ndim != 2 or directions.shape[1] != d:
            raise ValueError(f"directions must have shape (P, {d}), got {tuple(directions.shape)}")
        directions = directions.to(x.dtype) / directions.norm(dim=1, keepdim=True).to(x.dtype)
    w = wasserstein_1d(x @ directions.T, y @ directions.T, p)
    return w.mean().pow(1.0 / p)


# --------------------------------------------------------------------------- transport metrics
# For probability-flow paths z_t from the prior (t = 1) to the data (t = 0):
#
#     kinetic energy   K(z) = ∫ ‖dz/dt‖² dt                       per trajectory
#     OT cost          W2²(a, b) = min over couplings E‖a − b‖²    exact, equal-size sets
#     coupling cost    C = E‖z_end − z_start‖²                      the flow's own coupling
#     kinetic ratio    E K / W2²(z_start, z_end) ≥ 1  (Benamou–Brenier; = 1 only for straight,
#                      constant-speed OT paths)
#     coupling ratio   C / W2² ≥ 1  (= 1 when the noise → data map is OT; in 1D every ODE flow
#                      is monotone, so it is 1 there)
#
# Floors: both ratios are ≥ 1 exactly on samples too: the path couples its own end points, so
# C ≥ W2² of the empirical sets, and on a grid Σ‖Δz‖²/Δt ≥ ‖Σ Δz‖² / Σ Δt (Cauchy–Schwarz).

__all__ += [
    "kinetic_energy", "ot_cost", "coupling_cost", "kinetic_ratio", "coupling_ratio", "OT_MAX_N",
]

OT_MAX_N = 5000  # exact assignment above one dimension: O(n²) memory, O(n³) time


def _check_path(path, ts) -> tuple[Tensor, Tensor]:
    if not isinstance(path, Tensor) or not path.is_floating_point():
        raise TypeError("path must be a floating torch.Tensor of shape (S, n, *shape)")
    if path.ndim < 2 or path.shape[0] < 2 or path.shape[1] < 1:
        raise ValueError(
            f"path must have shape (S, n, *shape) with S >= 2 and n >= 1, got {tuple(path.shape)}"
        )
    if not isinstance(ts, Tensor) or ts.shape != (path.shape[0],):
        got = tuple(ts.shape) if isinstance(ts, Tensor) else type(ts).__name__
        raise ValueError(
            f"ts must be a tensor of shape ({path.shape[0]},) (one time per saved state), got {got}"
        )
    dt = ts.to(torch.float64).diff()
    if not (bool((dt > 0).all()) or bool((dt < 0).all())):
        raise ValueError("ts must be strictly monotone (increasing or decreasing)")
    return path, dt


def kinetic_energy(path: Tensor, ts: Tensor) -> Tensor:
    """Kinetic energy ∫ ‖dz/dt‖² dt of each trajectory of a saved path, (n,).

    ``path`` (S, n, *shape) holds the states at the S times ``ts`` (S,), strictly monotone in
    either direction. The integral is Σ_k ‖z_{k+1} − z_k‖² / |t_{k+1} − t_k| (float64): exact
    for a piecewise-linear path at constant speed on each interval, and for any smooth path a
    lower bound that converges as the grid is refined (Cauchy–Schwarz on each interval).
    Floor: ‖z_end − z_start‖² / |t_end − t_start| (a straight line at constant speed).
    """
    path, dt = _check_path(path, ts)
    steps = path.to(torch.float64).diff(dim=0).reshape(path.shape[0] - 1, path.shape[1], -1)
    return (steps.pow(2).sum(-1) / dt.abs().to(steps.device).unsqueeze(1)).sum(0)


def _check_pair(a, b, names=("a", "b")) -> tuple[Tensor, Tensor]:
    for name, v in zip(names, (a, b), strict=True):
        if not isinstance(v, Tensor) or not v.is_floating_point():
            raise TypeError(f"{name} must be a floating torch.Tensor of shape (n, *shape)")
        if v.ndim < 1 or v.shape[0] < 1:
            raise ValueError(
                f"{name} must have shape (n, *shape) with n >= 1, got {tuple(v.shape)}"
            )
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    a = a.to(torch.float64).reshape(a.shape[0], -1)
    return a, b.to(device=a.device, dtype=torch.float64).reshape(b.shape[0], -1)


def ot_cost(a: Tensor, b: Tensor, *, max_n: int = OT_MAX_N) -> Tensor:
    """Exact squared 2-Wasserstein distance between two equal-size sample sets, 0-dim (float64).

    W2²(a, b) = min_π (1/n) Σ_i ‖a_i − b_π(i)‖² over permutations π. ``a``, ``b``: (n, *shape),
    everything after the batch dimension flattened. In 1D the sorted (monotone) matching is
    optimal; in higher dimensions the assignment is solved exactly with
    ``scipy.optimize.linear_sum_assignment`` on the n × n cost matrix, which is refused above
    ``max_n`` points (default ``OT_MAX_N`` = 5000; memory O(n²), time O(n³)).
    Floor: 0 for identical sets; between two independent draws of one law it is the sampling
    floor of the metric, decaying with n (slowly above 2 dimensions).
    """
    a, b = _check_pair(a, b)
    n, d = a.shape
    if d == 1:
        return (a.sort(0).values - b.sort(0).values).pow(2).sum(1).mean()
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"max_n must be a positive int, got {max_n!r}")
    if n > max_n:
        raise ValueError(
            f"ot_cost: exact assignment in {d} dimensions is limited to max_n={max_n} points, "
            f"got n={n}: subsample the sets or raise max_n (memory O(n²), time O(n³))"
        )
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(a, b).pow(2)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return cost[torch.as_tensor(rows), torch.as_tensor(cols)].mean()


def coupling_cost(z_start: Tensor, z_end: Tensor) -> Tensor:
    """Cost of the coupling a flow defines between its end points: mean_i ‖z_end,i − z_start,i‖²,
    0-dim (float64). ``z_start``, ``z_end``: (n, *shape), row i the two ends of one trajectory.
    Floor: ``ot_cost(z_start, z_end)`` (the optimal coupling of the same two sets)."""
    a, b = _check_pair(z_start, z_end, ("z_start", "z_end"))
    return (b - a).pow(2).sum(1).mean()


def kinetic_ratio(path: Tensor, ts: Tensor, *, max_n: int = OT_MAX_N) -> Tensor:
    """Mean kinetic energy over W2² of the path's end-point sets, 0-dim (float64), ≥ 1.

    ``path`` (S, n, *shape) at times ``ts`` (S,) as in ``kinetic_energy``; the ratio is
    mean_i K_i · |t_end − t_start| / ot_cost(path[0], path[-1]), so that a straight,
    constant-speed OT flow gives 1 whatever the time span. Floor 1 (exactly, see above).
    """
    ke = kinetic_energy(path, ts)
    span = float((ts[-1] - ts[0]).abs())
    return ke.mean() * span / ot_cost(path[0], path[-1], max_n=max_n)


def coupling_ratio(z_start: Tensor, z_end: Tensor, *, max_n: int = OT_MAX_N) -> Tensor:
    """coupling_cost / ot_cost of the same two sets, 0-dim (float64), ≥ 1; 1 exactly when the
    pairing (row i with row i) is an optimal one, as for every monotone map in 1D. Floor 1."""
    return coupling_cost(z_start, z_end) / ot_cost(z_start, z_end, max_n=max_n)
