r"""Multistep exponential integrators for NDM sampling, in the NDM's own coordinates.

**The exact ODE.** With y = z/σ and ρ_t = α_t/σ_t = e^{λ(t)/2}, the NDM's PF-ODE
dz/dt = f(z, t, x̂) − ½ g² s(z, t) becomes (using d/dt log σ_t = −½ α_t² λ'(t))

    dy/dt = ρ'(t) F(x̂_t, t) + ρ_t ∂_t F(x̂_t, t) = ∂_t Φ(x, t) |_{x = x̂_t},
    Φ(x, t) := ρ_t F(x, t),   x̂_t = x̂_θ(z_t, t),

the partial derivative in t at fixed x. Over a step from t to s < t this integrates to

    y_s − y_t = ∫_t^s ∂_τ Φ(x, τ)|_{x = x̂_τ} dτ.                                   (1)

**The NDM-DDIM step.** Freezing x̂_τ = D over the step makes (1) exact:
y_s − y_t = Φ(D, s) − Φ(D, t), i.e.

    z_s = α_s F(D, s) + (σ_s/σ_t) (z_t − α_t F(D, t)).                              (2)

It evaluates F only at the step's end points and needs no JVP of F (neither ∂_t F nor
∂_x F). ``D = x̂_θ(z_t, t)`` is NDM-DDIM, a first-order method.

**The multistep family.** Every method here is step (2) with D an affine combination
D = Σ_j w_j x̂_j (Σ_j w_j = 1) of the current and previous predictions, the weights w_j
fixed by the method and the half log-SNRs λ̃ = λ/2 of the grid (precomputed on the host
once per solve). Write h = λ̃_s − λ̃_t > 0 and ψ(x, λ̃) := ∂_λ̃ Φ(x, λ̃). For F = identity
ψ = e^{λ̃} x and (1) is ∫ e^{λ̃} x̂ dλ̃: D stands for the e^{λ̃}-weighted mean over the
step of the interpolant of x̂ the method assumes (exactly for ``ei_3m``, to the
method's order for the others), and (2) becomes, with φ_1 = e^{−h} − 1,

    z_s = (σ_s/σ_t) z_t − α_s φ_1 D,

the data-prediction form of DPM-Solver++ and UniPC. The weights are those published
formulas', so with F = identity each method here *is* the published one (tested to
1e-12 in float64):

* ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al. 2022, Alg. 2; k-diffusion's
  ``sample_dpmpp_2m``): D = (1 + 1/(2r)) x̂_0 − 1/(2r) x̂_1, r = h_last/h — the linear
  extrapolation of x̂ in λ̃ through the last two predictions, taken at the step's
  midpoint in λ̃. First step: DDIM.
* ``dpmpp_3m``: DPM-Solver++(3M) as in k-diffusion's ``sample_dpmpp_3m_sde`` at η = 0
  (and the DPM-Solver code): the quadratic through three predictions with the published
  φ_2, φ_3 coefficients; second step its φ_2 two-point form.
* ``ei_3m``: the same quadratic integrated exactly against e^{λ̃} (the D2 term carries
  2φ_3 where the published 3M has φ_3: the published coefficient is half the exact one,
  which leaves a local O(h³) term, so ``dpmpp_3m`` is second order — measured below).
* ``unipc_2m``, ``unipc_3m``: UniPC (Zhao et al. 2023), data prediction, B(h) = e^{−h}−1
  ("bh2"): the predictor UniP-p and the corrector UniC-p. After a step the prediction at
  the new (uncorrected) state, needed for the next step anyway, gives a corrected D over
  the step just taken, and z_s is recomputed by (2) from z_t: the order rises by one at
  no extra NFE. The last step is not corrected (that would cost an evaluation).

**General F: what is extrapolated, and the order.** Expand the error of (2) against (1):

    ∫ [ψ(x̂_λ̃, λ̃) − ψ(D, λ̃)] dλ̃
      = ∫ ∂_x ψ(D, λ̃) (x̂_λ̃ − D) dλ̃ + O(∫ |x̂_λ̃ − D|²).

x̂ − D = O(h) over a step, so the second term is O(h³) locally: the combination is taken
in x (D, then F(D, ·)), which is what keeps (2) a single exact step; combining F(x̂_j, ·)
instead agrees for affine F and has the same leading error otherwise. In the first term
∂_x ψ(D, λ̃) = A(λ̃) varies over the step; with A(λ̃) = e^{λ̃}(A_0 + O(λ̃ − λ̃_t)) and
x̂ − D = x̂'(λ̃ − λ̃_c) + O(h²) around the weighted centre λ̃_c, the O(h) part of A gives
a local term ~ (∂_λ̃ A / A) x̂' h³/12. Hence, for a general smooth F, every method here is
second order globally (which no method evaluating F only at step end points can beat:
the ∂_x F-weighted integral of dx̂/dλ̃ is then a two-point rule). The published orders
(2 for ``dpmpp_2m`` and ``dpmpp_3m``, 3 for ``ei_3m``, 3 and 4 for ``unipc_2m`` /
``unipc_3m``) hold when ∂_x F does not vary along the step — F = identity, or
F(x, t) = a x + b(t) — and very nearly when it varies slowly in λ̃, as for
``AffineTimeTransform`` under a wide log-SNR range (a(t) changes by O(1) while λ̃
changes by ~10): there the measured slopes are the published orders (``tests/test_multistep.py``); with a(t) varying by ~3x the
slope of ``unipc_3m`` falls to 2 by 128-256 steps. ``MultistepMethod.order`` (and the
registry's ``order``) is that ∂_x F-constant order, ``order_general`` = 2.

**Where to combine** (``extrapolate``). ``"x"`` (default) evaluates F at the combined
D, an extrapolation that can leave the region the predictions occupy; ``"F"``
replaces F(D, τ) by Σ_j w_j F(x̂_j, τ) at τ = t, s (k + 1 new F calls per step for k
predictions combined, instead of 2: F(x̂_j, t) of the older ones is kept from the step
before; the same NFE, still no JVP), so F is only
evaluated at predictions. For F affine in x the two are equal (Σ_j w_j = 1); otherwise
they differ by O(h²) per step, which is inside the O(h³)-local, second-order bound above
(both measured at order 2 on a nonlinear F in ``tests/test_multistep.py``). It matters
for a learned F whose predictions at high noise lie far off the data, where F is far
from the identity and varies sharply along the path (``benchmarks/fewstep_path.py``):
on the demo's trained NDM ``"F"`` lowers the 10-NFE sliced W1 of ``unipc_2m`` (9 steps,
then x̂ at σ/α = 0.12) from 0.107 to 0.064 and of ``dpmpp_2m`` from 0.83 to 0.21
(``benchmarks/results/fewstep_demo_extrapolate_cpu.json``), at 1.6x (``unipc_2m``) and
1.2x (``dpmpp_2m``) the CPU time per step of ``"x"`` (measured before F values were kept
between steps: upper bounds now); it changes nothing for affine F.

The first steps have fewer predictions to combine (DDIM first, then the shorter
formulas); their extra local error is proportional to dx̂/dλ̃ near t = 1, which is
~e^{λ_min} small, so it does not show in the measured orders.

**Lower-order final steps** (``lower_order_final``, default True, as in DPM-Solver's and
UniPC's code and diffusers' schedulers): on grids of fewer than
``LOWER_ORDER_FINAL_STEPS`` = 15 steps, step i of N combines at most N − i predictions
(the last step is DDIM, the one before it two-point, ...; corrector methods use the same
nodes in the corrector). Near t = 0 few-step grids take steps of 1–3 in λ̃ over which
x̂ turns sharply as it resolves the data's modes; extrapolating a quadratic through
predictions that far back is what makes the 3-prediction methods diverge at 5 steps.
On grids of 15 steps or more the option changes nothing, so the orders above and the
published formulas (step for step) hold there either way; ``lower_order_final=False``
keeps the full order to the end on every grid. With ``sample(..., denoise=True)`` the final
x̂ is itself a first-order last step (k-diffusion's step to σ = 0), and on the shortest grids
lowering the order once more costs much: measured on the trained demo DDPM at 5 NFE
(4 steps to σ/α of 0.06–0.25, then x̂), ``unipc_2m`` gives sliced W1 0.55–0.85 with the
option and 0.20–0.48 without it; at 10 NFE it helps on log-SNR grids
(``benchmarks/fewstep.py``). Other counts (``order_caps``): ``"always"`` lowers on
every grid (diffusers' UniPC); ``"diffusers"`` lowers on every grid counting the final x̂
of ``denoise=True`` as the last, first-order step (diffusers' schedulers with
``final_sigmas_type="zero"``: DPM-Solver++(3M) ends (…, 3, 2) then x̂); a sequence gives
the cap of every step. ``nd.diffusers_grid`` picks the one a diffusers scheduler uses.

**Variants** (``solver_type``, as in diffusers): the two-prediction DPM-Solver++ step in
``"midpoint"`` form (D = x̂_0 + (x̂_0 − x̂_1)/(2r), ``dpmpp_2m``'s default) or ``"heun"``
form (the exact integral of the line, D = x̂_0 + φ_2/(1 − e^{−h}) (x̂_0 − x̂_1)/r,
``dpmpp_3m``'s default for its second and lowered steps); the 3-prediction step has one
form. UniPC's B(h): ``"bh2"`` (e^{−h} − 1, default) or ``"bh1"`` (−h). ``unipc_1m`` is
UniPC of order 1: the DDIM step with the UniC-1 corrector (second order).

Registered in ``nd.solvers.METHODS`` as discrete NDM samplers (``nd.sample`` only), one
predictor call per step, ``needs_jvp=False``.

NFE = one predictor evaluation per step, counted; no JVP of F anywhere (F is called only
at the step's end points, at D or, with ``extrapolate="F"``, at the predictions).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import FAULTS, Solution, check_grid_step, grid_solution, locate
from .registry import register

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
    order_general: int = 2  # for a general smooth F (module docstring)
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
            steps, step i of N combines at most N − i predictions (module docstring), no
            effect on longer grids; ``False``: never lowered; ``"always"``, ``"diffusers"``
            or per-step caps: see ``order_caps``.
        extrapolate: ``"x"`` (step (2) at the combined D: two F calls per step) or
            ``"F"`` (the weights applied to F(x̂_j, s) and F(x̂_j, t) of the combined
            predictions: k + 1 new F calls per step for k predictions combined, as
            F(x̂_j, t) of the older ones is kept from the step before; F is never
            evaluated off the predictions). Equal for affine F (module docstring).
        solver_type: ``SOLVER_TYPES[method]``; None: the method's default (the first).

    Returns:
        ``Solution`` with ``nfe = n_accepted = N`` (one predictor call per step).
    """
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
    grid = grid.to(dtype=z.dtype, device=z.device)
    sched = model.schedule
    with torch.no_grad():
        lam = (0.5 * sched.log_snr(g64)).tolist()
        alpha, sigma = (v.tolist() for v in sched.alpha_sigma(g64))
    if not all(b > a for a, b in itertools.pairwise(lam)):
        raise ValueError("grid must have strictly increasing log-SNR (λ strictly decreasing in t)")
    pred, corr = multistep_weights(method, lam, lower_order_final, solver_type)
    B = z.shape[0]
    ts = [grid[i].expand(B) for i in range(N + 1)]

    def F_at(entry: tuple[Tensor, dict], k: int) -> Tensor:
        # F(x̂_j, t_k) of a prediction, kept with it: the next step and the corrector reuse it
        x, cache = entry
        if k not in cache:
            cache[k] = model.F(x, ts[k])
        return cache[k]

    def step(z_t: Tensor, i: int, w: list[float], xs: list[tuple[Tensor, dict]]) -> Tensor:
        # (2): z_s = α_s F(D, s) + (σ_s/σ_t)(z_t − α_t F(D, t)); scalars from the host.
        if extrapolate == "x":
            D = _combine(w, [x for x, _ in xs])
            F_s, F_t = model.F(D, ts[i + 1]), model.F(D, ts[i])
        else:
            F_s = _combine(w, [F_at(e, i + 1) for e in xs])
            F_t = _combine(w, [F_at(e, i) for e in xs])
        ratio = sigma[i + 1] / sigma[i]
        return F_s.mul(alpha[i + 1]).add_(z_t - F_t.mul(alpha[i]), alpha=ratio)

    ys = [z] if save else None
    hist: list[tuple[Tensor, dict]] = []  # (x̂_j, its F values by time index)
    nfe = 0
    z_prev: Tensor | None = None
    for i in range(N):
        try:
            x_hat = (model.x_hat(z, ts[i]), {})
            nfe += 1
            if i > 0 and corr[i - 1] is not None:  # UniC: redo step i-1 -> i with x̂ at i
                z = step(z_prev, i - 1, corr[i - 1], hist[-(len(corr[i - 1]) - 1) :] + [x_hat])
                if save:
                    ys[-1] = z
            hist = (hist + [x_hat])[-spec.history :]
            z_prev = z
            z = step(z, i, pred[i], hist[-len(pred[i]) :])
        except FAULTS as e:  # x̂ (or F of it) is NaN/inf: name the step
            ta, tb = float(grid[i]), float(grid[i + 1])
            partial = Solution(y=z, nfe=nfe, n_accepted=i, method=method, t=ta)
            raise locate(e, method or "multistep", i, ta, tb, partial=partial) from None
        if save:
            ys.append(z)
        check_grid_step(z, grid, i, nfe=nfe, method=method)
    stats = {"history": spec.history, "corrector": spec.corrector}
    return grid_solution(z, grid, ys, nfe=nfe, method=method, stats=stats)


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
        family="discrete",
        stepping="fixed",
        order=_m.order,
        nfe_per_step=_m.nfe_per_step,
        run=_run,
        needs_jvp=_m.needs_jvp,
        min_steps=_m.history,
        options=("lower_order_final", "extrapolate", "solver_type"),
        description=_DESCRIPTIONS[_m.name],
    )
