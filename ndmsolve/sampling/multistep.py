r"""Multistep exponential integrators for NDM sampling, in the NDM's own coordinates.

Each method is the NDM-DDIM step

    z_s = α_s F(D, s) + (σ_s/σ_t) (z_t − α_t F(D, t))

with D = Σ_j w_j x̂_j an affine combination of the current and previous predictions,
the weights fixed by the method and the half log-SNRs of the grid. With F = identity
these are the published methods: ``dpmpp_2m``, ``dpmpp_3m`` (DPM-Solver++(2M)/(3M),
Lu et al. 2022), ``ei_3m`` (the quadratic integrated exactly), ``unipc_1m``/``2m``/``3m``
(UniPC, Zhao et al. 2023, data prediction). One predictor call per step, no JVP of F.
Options: ``lower_order_final`` (``order_caps``), ``extrapolate`` (``"x"``: F at the
combined D; ``"F"``: the weights applied to F of the predictions), ``solver_type``
(``SOLVER_TYPES``). Derivations, orders for a general F and measurements:
docs/theory/multistep.md.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..solvers.base import FAULTS, Solution, check_grid_step, grid_solution, locate
from ..solvers.registry import register

__all__ = [
    "LOWER_ORDER_FINAL_STEPS",
    "MULTISTEP_METHODS",
    "MultistepMethod",
    "multistep_solve",
    "multistep_weights",
    "order_caps",
    "SOLVER_TYPES",
    "LOWER_ORDER_MODES",
]

#: below this many steps ``lower_order_final=True`` lowers the order of the last steps
#: (DPM-Solver's and diffusers' DPMSolverMultistep threshold; diffusers' UniPC lowers on
#: every grid: ``lower_order_final="always"``)
LOWER_ORDER_FINAL_STEPS = 15


@dataclass(frozen=True)
class MultistepMethod:
    """A multistep method as data: its history length, corrector and (F = identity) order."""

    name: str
    history: int  # predictions the predictor combines (current one included)
    corrector: bool  # UniC correction with the next step's prediction
    order: int  # global order when ∂_x F is constant in t (F = identity, F = x + b(t))
    order_general: int = 2  # for a general smooth F (docs/theory/multistep.md)
    nfe_per_step: int = 1
    needs_jvp: bool = False


MULTISTEP_METHODS = {
    m.name: m
    for m in (
        MultistepMethod("dpmpp_2m", history=2, corrector=False, order=2),
        MultistepMethod("dpmpp_3m", history=3, corrector=False, order=2),
        MultistepMethod("ei_3m", history=3, corrector=False, order=3),
        MultistepMethod("unipc_1m", history=1, corrector=True, order=2),
        MultistepMethod("unipc_2m", history=2, corrector=True, order=3),
        MultistepMethod("unipc_3m", history=3, corrector=True, order=4),
    )
}


#: ``solver_type`` values per method, the default first: the form of the two-prediction
#: DPM-Solver++ step (diffusers' ``solver_type``; the 3-prediction step has one form) and
#: UniPC's B(h) (``"bh1"``: B(h) = −h, ``"bh2"``: B(h) = e^{−h} − 1)
SOLVER_TYPES = {
    "dpmpp_2m": ("midpoint", "heun"),
    "dpmpp_3m": ("heun", "midpoint"),
    "ei_3m": ("heun",),
    "unipc_1m": ("bh2", "bh1"),
    "unipc_2m": ("bh2", "bh1"),
    "unipc_3m": ("bh2", "bh1"),
}
#: ``lower_order_final`` modes besides True/False (``order_caps``)
LOWER_ORDER_MODES = ("always", "diffusers")


# --------------------------------------------------------------------------- weights
def _phi(h: float) -> tuple[float, float, float]:
    """φ_1 = e^{−h} − 1, φ_2 = φ_1/h + 1, φ_3 = φ_2/h − ½ (DPM-Solver's data-prediction
    forms), by series for small h where the closed forms cancel."""
    if h < 1e-3:
        # φ_2 = h/2 − h²/6 + h³/24 − ..., φ_3 = −h/6 + h²/24 − h³/120 + ...
        phi2 = h / 2 - h**2 / 6 + h**3 / 24 - h**4 / 120
        phi3 = -h / 6 + h**2 / 24 - h**3 / 120 + h**4 / 720
        return math.expm1(-h), phi2, phi3
    phi1 = math.expm1(-h)
    phi2 = phi1 / h + 1.0
    return phi1, phi2, phi2 / h - 0.5


def _dpmpp_weights(lams: list[float], lam_s: float, exact: bool) -> list[float]:
    """Weights on x̂ at ``lams`` (oldest first, ≤ 3 nodes) for DPM-Solver++(3M) /
    the exact-quadratic variant: D = x̂_0 + (φ_2 d1 − c φ_3 d2)/(1 − e^{−h}), c = 1
    (published) or 2 (exact); two nodes: D = x̂_0 + φ_2 d/(1 − e^{−h}), the exact
    integral of the line through them."""
    k = len(lams)
    h = lam_s - lams[-1]
    phi1, phi2, phi3 = _phi(h)
    denom = -phi1  # 1 − e^{−h}
    if k == 1:
        return [1.0]
    if k == 2:  # d = (x̂_0 − x̂_1)/r, r = h_1/h
        r = (lams[1] - lams[0]) / h
        c = phi2 / denom / r
        return [-c, 1.0 + c]
    # k == 3, nodes (x̂_2, x̂_1, x̂_0) oldest first
    r0 = (lams[2] - lams[1]) / h
    r1 = (lams[1] - lams[0]) / h
    d10 = [0.0, -1.0 / r0, 1.0 / r0]
    d11 = [-1.0 / r1, 1.0 / r1, 0.0]
    d1 = [a + (a - b) * r0 / (r0 + r1) for a, b in zip(d10, d11, strict=True)]
    d2 = [(a - b) / (r0 + r1) for a, b in zip(d10, d11, strict=True)]
    c3 = (2.0 if exact else 1.0) * phi3
    w = [(phi2 * a - c3 * b) / denom for a, b in zip(d1, d2, strict=True)]
    w[2] += 1.0
    return w


def _unipc_weights(
    lams: list[float], lam_s: float, corrector: bool, variant: str = "bh2"
) -> list[float]:
    """UniPC (``variant`` "bh1" or "bh2", data prediction) weights on x̂ at ``lams`` (oldest first; the last is
    the step's start), plus, for the corrector, on x̂ at ``lam_s`` (appended last).

    Predictor of order p = len(lams): D = x̂_0 + Σ_k ρ_k (x̂_k − x̂_0)/r_k with
    r_k = (λ̃_k − λ̃_0)/h and ρ solving the UniPC system R ρ = b (ρ = ½ for p = 2);
    the corrector adds the node r = 1 (the new prediction), ρ = ½ for p = 1.
    """
    h = lam_s - lams[-1]
    p = len(lams)
    rks = [(lams[-1 - i] - lams[-1]) / h for i in range(1, p)]  # most recent first
    nodes = rks + [1.0]
    hh = -h
    h_phi_1 = math.expm1(hh)
    B_h = h_phi_1 if variant == "bh2" else hh
    h_phi_k = h_phi_1 / hh - 1.0
    fact = 1
    R, b = [], []
    for i in range(1, p + 1):
        R.append([r ** (i - 1) for r in nodes])
        b.append(h_phi_k * fact / B_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    Rt, bt = torch.tensor(R, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    if corrector:
        rho = [0.5] if p == 1 else torch.linalg.solve(Rt, bt).tolist()
        use = nodes
    else:
        if p == 1:
            return [1.0]
        rho = [0.5] if p == 2 else torch.linalg.solve(Rt[:-1, :-1], bt[:-1]).tolist()
        use = rks
    c = B_h / h_phi_1
    # D1_k = (x̂_k − x̂_0)/r_k; weights on history nodes most recent first, then reversed
    wk = [c * rho_k / r_k for rho_k, r_k in zip(rho, use, strict=True)]
    hist_w = wk[: p - 1][::-1]  # on x̂ at lams[0..p-2] (oldest first)
    w0 = 1.0 - sum(wk)
    w = hist_w + [w0]
    if corrector:
        w.append(wk[-1])
    return w


def order_caps(lower_order_final, N: int, history: int) -> list[int]:
    """The most predictions step i of N may combine (before the warm-up ramp i + 1).

    ``lower_order_final``: ``False`` (``history`` everywhere); ``True``: min(history, N − i)
    when N < ``LOWER_ORDER_FINAL_STEPS``, else ``history`` (DPM-Solver's rule);
    ``"always"``: min(history, N − i) on every grid (diffusers' UniPC); ``"diffusers"``:
    min(history, N + 1 − i) on every grid: the count of diffusers' schedulers when their
    last step is the final x̂ (``final_sigmas_type="zero"``), i.e. for
    ``sample(..., denoise=True)``, whose x̂ is that last, first-order step; or a sequence
    of N positive ints, the caps themselves.
    """
    if isinstance(lower_order_final, bool):
        lower = lower_order_final and N < LOWER_ORDER_FINAL_STEPS
        return [min(history, N - i) if lower else history for i in range(N)]
    if isinstance(lower_order_final, str):
        if lower_order_final not in LOWER_ORDER_MODES:
            raise TypeError(
                f"lower_order_final must be a bool, one of {LOWER_ORDER_MODES} or a sequence "
                f"of per-step caps, got {lower_order_final!r}"
            )
        extra = 1 if lower_order_final == "diffusers" else 0
        return [min(history, N + extra - i) for i in range(N)]
    if isinstance(lower_order_final, (list, tuple)):
        caps = list(lower_order_final)
        if len(caps) != N or not all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in caps
        ):
            raise ValueError(
                f"lower_order_final as a sequence must hold one positive int per step "
                f"({N} steps), got {lower_order_final!r}"
            )
        return [min(history, c) for c in caps]
    raise TypeError(
        f"lower_order_final must be a bool, one of {LOWER_ORDER_MODES} or a sequence of "
        f"per-step caps, got {lower_order_final!r}"
    )


def check_solver_type(method: str, solver_type: str | None) -> str:
    """``solver_type`` for ``method`` (None: the method's default), else a ValueError."""
    kinds = SOLVER_TYPES[method]
    if solver_type is None:
        return kinds[0]
    if solver_type not in kinds:
        raise ValueError(f"solver_type for {method!r} must be one of {kinds}, got {solver_type!r}")
    return solver_type


def multistep_weights(
    method: str, lam: list[float], lower_order_final=False, solver_type: str | None = None
) -> tuple[list[list[float]], list[list[float] | None]]:
    """Per-step weights of ``method`` on the grid with half log-SNRs ``lam`` (N+1 floats,
    increasing).

    Returns ``(pred, corr)``: ``pred[i]`` weights on the predictions x̂ at grid points
    ``i − len + 1 .. i`` (oldest first) for the step i → i+1; ``corr[i]`` (corrector
    methods, else None) weights on those predictions and the one at i+1, for redoing
    step i → i+1; None for the last step. Step i combines at most
    ``order_caps(lower_order_final, N, history)[i]`` predictions. ``solver_type``: see
    ``SOLVER_TYPES`` (None: the method's default).
    """
    spec = MULTISTEP_METHODS[method]
    kind = check_solver_type(method, solver_type)
    N = len(lam) - 1
    caps = order_caps(lower_order_final, N, spec.history)
    pred, corr = [], []
    for i in range(N):
        nodes = lam[max(0, i - caps[i] + 1) : i + 1]
        if spec.corrector:
            pred.append(_unipc_weights(nodes, lam[i + 1], False, kind))
            corr.append(_unipc_weights(nodes, lam[i + 1], True, kind) if i < N - 1 else None)
        elif kind == "midpoint" and len(nodes) == 2:
            r = (nodes[1] - nodes[0]) / (lam[i + 1] - nodes[1])  # h_last / h
            pred.append([-0.5 / r, 1.0 + 0.5 / r])  # x̂ extrapolated to the λ̃-midpoint
            corr.append(None)
        else:
            pred.append(_dpmpp_weights(nodes, lam[i + 1], exact=method == "ei_3m"))
            corr.append(None)
    return pred, corr


# --------------------------------------------------------------------------- solve
def _combine(weights: list[float], xs: list[Tensor]) -> Tensor:
    out = xs[0] * weights[0]
    for w, x in zip(weights[1:], xs[1:], strict=True):
        out = out.add(x, alpha=w)
    return out


def multistep_solve(
    model,
    z: Tensor,
    grid: Tensor,
    *,
    method: str,
    save: bool = False,
    lower_order_final=True,
    extrapolate: str = "x",
    solver_type: str | None = None,
) -> Solution:
    """Run a multistep method over ``grid`` (strictly decreasing, (N+1,)) from ``z`` at
    ``grid[0]``; returns z at ``grid[-1]``.

    Args:
        model: an ``NDM`` (``x_hat``, ``F``, ``schedule``).
        z: (B, *shape) state at ``grid[0]``.
        grid: (N+1,) strictly decreasing times; N must be at least the method's history
            length (``MULTISTEP_METHODS[method].history``).
        method: a name in ``MULTISTEP_METHODS``.
        save: keep the path (``ts`` = grid, ``ys`` (N+1, B, *shape)).
        lower_order_final: ``True``: on grids of fewer than ``LOWER_ORDER_FINAL_STEPS``
            steps, step i of N combines at most N − i predictions, no effect on longer
            grids; ``False``: never lowered; ``"always"``, ``"diffusers"`` or per-step
            caps: see ``order_caps``.
        extrapolate: ``"x"`` (the step at the combined D: two F calls per step) or
            ``"F"`` (the weights applied to F(x̂_j, s) and F(x̂_j, t) of the combined
            predictions: k + 1 new F calls per step for k predictions combined; F is never
            evaluated off the predictions). Equal for affine F.
        solver_type: ``SOLVER_TYPES[method]``; None: the method's default (the first).

    Returns:
        ``Solution`` with ``nfe = n_accepted = N`` (one predictor call per step).
    """
    spec, g64 = _check_solve_args(method, extrapolate, grid)
    N = grid.shape[0] - 1
    grid = grid.to(dtype=z.dtype, device=z.device)
    lam, stepper = _Stepper.on_grid(model, grid, g64, extrapolate, z.shape[0])
    pred, corr = multistep_weights(method, lam, lower_order_final, solver_type)
    ys = [z] if save else None
    hist: list[tuple[Tensor, dict]] = []  # (x̂_j, its F values by time index)
    nfe = 0
    z_prev: Tensor | None = None
    for i in range(N):
        try:
            x_hat = (model.x_hat(z, stepper.ts[i]), {})
            nfe += 1
            if i > 0 and corr[i - 1] is not None:  # UniC: redo step i-1 -> i with x̂ at i
                w = corr[i - 1]
                z = stepper.step(z_prev, i - 1, w, hist[-(len(w) - 1) :] + [x_hat])
                if save:
                    ys[-1] = z
            hist = (hist + [x_hat])[-spec.history :]
            z_prev = z
            z = stepper.step(z, i, pred[i], hist[-len(pred[i]) :])
        except FAULTS as e:  # x̂ (or F of it) is NaN/inf: name the step
            ta, tb = float(grid[i]), float(grid[i + 1])
            partial = Solution(y=z, nfe=nfe, n_accepted=i, method=method, t=ta)
            raise locate(e, method or "multistep", i, ta, tb, partial=partial) from None
        if save:
            ys.append(z)
        check_grid_step(z, grid, i, nfe=nfe, method=method)
    stats = {"history": spec.history, "corrector": spec.corrector}
    return grid_solution(z, grid, ys, nfe=nfe, method=method, stats=stats)


def _check_solve_args(method: str, extrapolate: str, grid) -> tuple[MultistepMethod, Tensor]:
    """The method's spec and the grid in float64 on the host, or the error naming the argument."""
    if method not in MULTISTEP_METHODS:
        raise ValueError(f"method must be one of {list(MULTISTEP_METHODS)}, got {method!r}")
    spec = MULTISTEP_METHODS[method]
    if extrapolate not in ("x", "F"):
        raise ValueError(f"extrapolate must be 'x' or 'F', got {extrapolate!r}")
    if not isinstance(grid, Tensor) or grid.ndim != 1 or grid.shape[0] < 2:
        raise ValueError("grid must be a 1-D tensor with at least 2 times")
    g64 = grid.detach().to("cpu", torch.float64)
    if not bool((g64[1:] < g64[:-1]).all()):
        raise ValueError("grid must be strictly decreasing (sampling runs from t = 1 to t = 0)")
    N = grid.shape[0] - 1
    if N < spec.history:
        raise ValueError(
            f"steps must be at least {method}'s history length {spec.history}, "
            f"got {N} (use more steps, or a method with a shorter history)"
        )
    return spec, g64


class _Stepper:
    """The NDM-DDIM step z_s = α_s F(D, s) + (σ_s/σ_t)(z_t − α_t F(D, t)) on one grid,
    α, σ precomputed on the host; ``ts[k]`` is grid time k expanded to the batch (B,)."""

    def __init__(self, model, ts: list[Tensor], alpha, sigma, extrapolate: str):
        self.model, self.ts, self.alpha, self.sigma = model, ts, alpha, sigma
        self.extrapolate = extrapolate

    @classmethod
    def on_grid(cls, model, grid: Tensor, g64: Tensor, extrapolate: str, batch: int):
        """(half log-SNRs of the grid as floats, the stepper); errors if λ is not monotone."""
        sched = model.schedule
        with torch.no_grad():
            lam = (0.5 * sched.log_snr(g64)).tolist()
            alpha, sigma = (v.tolist() for v in sched.alpha_sigma(g64))
        if not all(b > a for a, b in itertools.pairwise(lam)):
            raise ValueError(
                "grid must have strictly increasing log-SNR (λ strictly decreasing in t)"
            )
        ts = [grid[i].expand(batch) for i in range(grid.shape[0])]
        return lam, cls(model, ts, alpha, sigma, extrapolate)

    def F_at(self, entry: tuple[Tensor, dict], k: int) -> Tensor:
        # F(x̂_j, t_k) of a prediction, kept with it: the next step and the corrector reuse it
        x, cache = entry
        if k not in cache:
            cache[k] = self.model.F(x, self.ts[k])
        return cache[k]

    def step(self, z_t: Tensor, i: int, w: list[float], xs: list[tuple[Tensor, dict]]) -> Tensor:
        """z at grid point i + 1 from ``z_t`` at i with weights ``w`` on predictions ``xs``."""
        ts = self.ts
        if self.extrapolate == "x":
            D = _combine(w, [x for x, _ in xs])
            F_s, F_t = self.model.F(D, ts[i + 1]), self.model.F(D, ts[i])
        else:
            F_s = _combine(w, [self.F_at(e, i + 1) for e in xs])
            F_t = _combine(w, [self.F_at(e, i) for e in xs])
        ratio = self.sigma[i + 1] / self.sigma[i]
        return F_s.mul(self.alpha[i + 1]).add_(z_t - F_t.mul(self.alpha[i]), alpha=ratio)


def _run(
    model,
    z: Tensor,
    grid: Tensor,
    *,
    generator=None,
    save: bool = False,
    method: str = "",
    lower_order_final=True,
    extrapolate: str = "x",
    solver_type: str | None = None,
) -> Solution:
    del generator  # deterministic
    return multistep_solve(
        model,
        z,
        grid,
        method=method,
        save=save,
        lower_order_final=lower_order_final,
        extrapolate=extrapolate,
        solver_type=solver_type,
    )


_DESCRIPTIONS = {
    "dpmpp_2m": "NDM-DDIM step, x_hat linear in half log-SNR (DPM-Solver++(2M) when F = id)",
    "dpmpp_3m": "NDM-DDIM step, x_hat quadratic, published coefficients (DPM-Solver++(3M))",
    "ei_3m": "NDM-DDIM step, x_hat quadratic integrated exactly against e^lambda",
    "unipc_1m": "UniPC-1 (bh2; bh1 by solver_type): DDIM predictor, UniC-1 corrector",
    "unipc_2m": "UniPC-2 (bh2) predictor-corrector on the NDM-DDIM step, corrector free",
    "unipc_3m": "UniPC-3 (bh2) predictor-corrector on the NDM-DDIM step, corrector free",
}
for _m in MULTISTEP_METHODS.values():
    register(
        _m.name,
        family="model",
        stepping="fixed",
        order=_m.order,
        nfe_per_step=_m.nfe_per_step,
        run=_run,
        needs_jvp=_m.needs_jvp,
        min_steps=_m.history,
        options=("lower_order_final", "extrapolate", "solver_type"),
        description=_DESCRIPTIONS[_m.name],
    )
