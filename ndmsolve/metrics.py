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

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from ._checks import seeded

__all__ = ["sliced_wasserstein", "SlicedWasserstein", "random_directions", "wasserstein_1d"]


@seeded
def random_directions(
    n_proj: int,
    d: int,
    *,
    generator: torch.Generator | None = None,
    dtype=torch.float32,
    device=None,
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


@seeded
def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    n_proj: int = 256,
    generator: torch.Generator | None = None,
    *,
    p: float = 2.0,
    directions: Tensor | None = None,
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
    x, y = _check_sample_sets(x, y)
    if not p >= 1:
        raise ValueError(f"p must be >= 1, got {p}")
    y = y.to(x.dtype)
    d = x.shape[1]
    if directions is None:
        directions = random_directions(
            n_proj, d, generator=generator, dtype=x.dtype, device=x.device
        )
    else:
        if directions.ndim != 2 or directions.shape[1] != d:
            raise ValueError(f"directions must have shape (P, {d}), got {tuple(directions.shape)}")
        directions = directions.to(x.dtype) / directions.norm(dim=1, keepdim=True).to(x.dtype)
    w = wasserstein_1d(x @ directions.T, y @ directions.T, p)
    return w.mean().pow(1.0 / p)


class SlicedWasserstein:
    """``sliced_wasserstein(x, y, directions=directions, p=p)`` against one fixed sample
    set ``y`` (m, *shape) over fixed ``directions`` (P, d), for many ``x`` (n, *shape): y's
    sorted projections are computed once and the sorts run in numpy, float64 (~3x torch's
    on CPU for thousands of 2-D points). Equal to the function to rounding (~1e-15
    relative); an ``x`` of another size than ``y`` is compared through quantiles, as
    ``wasserstein_1d`` does.
    """

    def __init__(self, y: Tensor, directions: Tensor, p: float = 2.0):
        import numpy as np

        y = _check_set(y, "y")
        if not p >= 1:
            raise ValueError(f"p must be >= 1, got {p}")
        d = y.shape[1]
        if not isinstance(directions, Tensor) or directions.ndim != 2 or directions.shape[1] != d:
            got = tuple(directions.shape) if isinstance(directions, Tensor) else directions
            raise ValueError(f"directions must be a tensor of shape (P, {d}), got {got}")
        unit = directions.detach() / directions.detach().norm(dim=1, keepdim=True)
        self.dirs = unit.double().cpu().numpy()  # (P, d)
        self.p, self.d = float(p), d
        self.ys = np.sort(self.dirs @ y.detach().double().cpu().numpy().T, axis=1)  # (P, m)

    def __call__(self, x: Tensor) -> float:
        """The sliced p-Wasserstein distance between ``x`` (n, *shape) and ``y``, a float."""
        import numpy as np

        x = _check_set(x, "x")
        if x.shape[1] != self.d:
            raise ValueError(f"x must have dimension {self.d} (as y), got {x.shape[1]}")
        xs = np.sort(self.dirs @ x.detach().double().cpu().numpy().T, axis=1)  # (P, n)
        ys = self.ys
        if xs.shape[1] != ys.shape[1]:
            N = max(xs.shape[1], ys.shape[1])
            levels = (torch.arange(N, dtype=torch.float64) + 0.5) / N
            xs, ys = (_quantiles(torch.from_numpy(v).T, levels).T.numpy() for v in (xs, ys))
        w = np.abs(xs - ys)
        # every row has one length: the mean over all entries is the mean over directions
        return float(np.mean(w if self.p == 1 else w**self.p) ** (1.0 / self.p))


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
    "kinetic_energy",
    "ot_cost",
    "coupling_cost",
    "kinetic_ratio",
    "retimed_kinetic_ratio",
    "coupling_ratio",
    "OT_MAX_N",
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


def retimed_kinetic_ratio(path: Tensor, ts: Tensor, *, max_n: int = OT_MAX_N) -> Tensor:
    """The smallest kinetic ratio one common re-timing of all the paths can reach, 0-dim
    (float64): 1 ≤ retimed ≤ ``kinetic_ratio``.

    Under a monotone time change t → τ(t) shared by every path (what a new noise schedule does
    to a classical diffusion's PF-ODE, whose curves in (log-SNR, z) are fixed by the data), the
    mean kinetic energy ∫ e(τ) τ'² dt, e = E‖dz/dτ‖², is smallest when e(τ) τ'² is constant,
    and equals (∫ √e(τ) dτ)². On the grid ``ts`` this is (Σ_k √(mean_i ‖z_{k+1,i} − z_{k,i}‖²))²
    (no longer depending on ``ts``) over ``ot_cost(path[0], path[-1])``; it equals
    ``kinetic_ratio`` when the mean speed is constant (Cauchy–Schwarz) and is ≥ 1 (Minkowski).
    Floor 1.
    """
    path, _ = _check_path(path, ts)
    steps = path.to(torch.float64).diff(dim=0).reshape(path.shape[0] - 1, path.shape[1], -1)
    length = steps.pow(2).sum(-1).mean(1).sqrt().sum()
    return length**2 / ot_cost(path[0], path[-1], max_n=max_n)


def coupling_ratio(z_start: Tensor, z_end: Tensor, *, max_n: int = OT_MAX_N) -> Tensor:
    """coupling_cost / ot_cost of the same two sets, 0-dim (float64), ≥ 1; 1 exactly when the
    pairing (row i with row i) is an optimal one, as for every monotone map in 1D. Floor 1."""
    return coupling_cost(z_start, z_end) / ot_cost(z_start, z_end, max_n=max_n)


# ----------------------------------------------------------------------- energy distance, floors
# Two-sample distances beside sliced Wasserstein, a registry of them by name, and the
# data-vs-data floor a measured value has to be read against.

__all__ += [
    "SAMPLE_METRICS",
    "FloorResult",
    "as_seeds",
    "call_metric",
    "energy_distance",
    "floor",
    "get_metric",
    "mean_se",
]

#: rows of x handed to one ``torch.cdist`` call: bounds memory at chunk · m distances
_CDIST_CHUNK = 1024


def _mean_distance(a: Tensor, b: Tensor) -> Tensor:
    """mean_{i,j} ‖a_i − b_j‖ over all pairs (diagonal zeros included when a is b), float64."""
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for i in range(0, a.shape[0], _CDIST_CHUNK):
        # The direct (non-matmul) path: exact zeros on the diagonal, no cancellation.
        d = torch.cdist(a[i : i + _CDIST_CHUNK], b, compute_mode="donot_use_mm_for_euclid_dist")
        total = total + d.sum()
    return total / (a.shape[0] * b.shape[0])


def energy_distance(x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Squared energy distance between sample sets ``x`` (n, *shape) and ``y`` (m, *shape).

        E²(x, y) = 2 mean_{i,j} ‖x_i − y_j‖ − mean_{i,i'} ‖x_i − x_i'‖ − mean_{j,j'} ‖y_j − y_j'‖

    (Székely & Rizzo), the V-statistic over all pairs (diagonal zeros included). It equals
    the squared MMD with the distance kernel k(a, b) = −‖a − b‖ and is ≥ 0, with population
    value 0 only for equal distributions. Everything after the batch dimension is flattened;
    arithmetic in float64, returned as a 0-dim tensor of ``x``'s dtype. Cost O(n m d).

    Floor: for two independent n- and m-sample sets of one distribution its expectation
    is exactly δ (1/n + 1/m), δ = E‖X − X'‖ (e.g. 2/√π for N(0, 1)): it falls as 1/n.
    ``generator`` is accepted for a uniform metric signature and not used (no randomness).
    """
    x, y = _check_sample_sets(x, y)
    xd, yd = x.to(torch.float64), y.to(torch.float64)
    e2 = 2 * _mean_distance(xd, yd) - _mean_distance(xd, xd) - _mean_distance(yd, yd)
    return e2.to(x.dtype)


def _check_set(a, name: str) -> Tensor:
    """``a`` (n, *shape) flattened to (n, d), or an error naming it."""
    if not isinstance(a, Tensor) or not a.is_floating_point():
        raise TypeError(f"{name} must be a floating torch.Tensor, got {type(a).__name__}")
    if a.ndim < 2 or a.shape[0] < 1:
        raise ValueError(f"{name} must have shape (n, *shape) with n >= 1, got {tuple(a.shape)}")
    return a.reshape(a.shape[0], -1)


def _check_sample_sets(x, y) -> tuple[Tensor, Tensor]:
    x, y = _check_set(x, "x"), _check_set(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    return x, y.to(device=x.device)


#: two-sample metrics by name: metric(x, y, generator=None) -> 0-dim tensor, lower is closer
SAMPLE_METRICS = {"energy_distance": energy_distance, "sliced_wasserstein": sliced_wasserstein}


def get_metric(metric):
    """A two-sample metric from its name in ``SAMPLE_METRICS`` (or a callable, returned as is)."""
    if callable(metric):
        return metric
    if isinstance(metric, str) and metric in SAMPLE_METRICS:
        return SAMPLE_METRICS[metric]
    raise ValueError(
        f"metric must be one of {sorted(SAMPLE_METRICS)} or a callable metric(x, y), got {metric!r}"
    )


def call_metric(metric, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> float:
    """``metric(x, y)`` as a float; ``generator`` is passed on when the metric takes one
    (e.g. the random directions of ``sliced_wasserstein``)."""
    import inspect

    fn = get_metric(metric)
    try:
        takes_gen = "generator" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        takes_gen = False
    value = fn(x, y, generator=generator) if takes_gen else fn(x, y)
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"metric {getattr(fn, '__name__', fn)!r} returned {value}")
    return value


@dataclass
class FloorResult:
    """A metric's data-vs-data floor at one sample size.

    Attributes:
        mean, se: mean over seeds of metric(data_n, data_n_ref) and its standard error
            (std over seeds, ddof = 1, / √seeds).
        values: the per-seed values.
        n, n_ref: the two sample sizes; seeds: the seeds used.
    """

    mean: float
    se: float
    values: list
    n: int
    n_ref: int
    seeds: list

    def to_dict(self) -> dict:
        return asdict(self)


def as_seeds(seeds, name: str = "seeds", minimum: int = 2) -> list:
    """``seeds``: an int k (the seeds 0..k−1) or a sequence of distinct ints -> list of ints."""
    if isinstance(seeds, bool):
        raise TypeError(f"{name} must be an int or a sequence of ints, got {seeds!r}")
    if isinstance(seeds, int):
        seeds = list(range(seeds))
    else:
        try:
            seeds = list(seeds)
        except TypeError as e:
            raise TypeError(f"{name} must be an int or a sequence of ints, got {seeds!r}") from e
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise TypeError(f"{name} must hold ints, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{name} must be distinct, got {seeds!r}")
    if len(seeds) < minimum:
        raise ValueError(
            f"{name} must give at least {minimum} seeds (for a standard error), got {seeds!r}"
        )
    return seeds


def mean_se(values) -> tuple[float, float]:
    """(mean, standard error = std(ddof=1)/√k) of k numbers; the error is NaN for k = 1."""
    v = torch.as_tensor(list(values), dtype=torch.float64)
    if v.numel() == 0:
        raise ValueError("values must hold at least one number, got none")
    if v.numel() == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


def floor(metric, sampler: Callable, n: int, seeds=5, *, n_ref: int | None = None) -> FloorResult:
    """The floor of ``metric`` at sample size ``n``: its value between two independent sample
    sets of the *same* distribution, mean ± se over ``seeds``.

    A sample metric is biased upwards by sampling noise: a sampler's value means nothing
    until it is set against this floor, measured at the same sizes. For each seed s:
    ``g = Generator().manual_seed(s)``, x = sampler(n, g), y = sampler(n_ref, g) (the later
    draws of the same stream: independent of x), value = metric(x, y, generator=g).

    Args:
        metric: a name in ``SAMPLE_METRICS`` or a callable ``metric(x, y[, generator])``.
        sampler: ``sampler(n, generator) -> (n, *shape)`` draws from the reference
            distribution (e.g. ``ndmsolve.data.checkerboard``).
        n: size of the first set (the size of the sample being judged).
        seeds: an int k (seeds 0..k−1) or a sequence of ints; at least 2.
        n_ref: size of the second set (the reference's size); default ``n``.
    """
    if not callable(sampler):
        raise TypeError(
            f"sampler must be callable sampler(n, generator), got {type(sampler).__name__}"
        )
    for name, v in (("n", n), ("n_ref", n if n_ref is None else n_ref)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            raise ValueError(f"{name} must be an int >= 2, got {v!r}")
    n_ref = n if n_ref is None else n_ref
    get_metric(metric)  # a bad name fails before any sampling
    seeds = as_seeds(seeds)
    values = []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        x, y = _draw(sampler, n, g), _draw(sampler, n_ref, g)
        values.append(call_metric(metric, x, y, generator=g))
    m, se = mean_se(values)
    return FloorResult(mean=m, se=se, values=values, n=n, n_ref=n_ref, seeds=seeds)


def _draw(sampler: Callable, n: int, g: torch.Generator) -> Tensor:
    x = sampler(n, g)
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] != n:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(
            f"sampler(n, generator) must return a tensor of shape ({n}, ...), got {got}"
        )
    return x.reshape(n, -1) if x.ndim == 1 else x
