"""SDE solvers: fixed-step Euler–Maruyama, stochastic Heun and SRA1; adaptive Heun–EM.

The SDE is ``dy = f(t, y) dt + g(t, y) dW`` (Itô), with ``t`` a 0-dim tensor, ``y`` a
tensor of any shape and ``g(t, y)`` the *diagonal* diffusion: a tensor of ``y``'s shape
or broadcastable to it (a scalar, ``(B, 1, ..., 1)``), multiplied elementwise with an
independent Brownian increment per element of ``y``.

Noise types (``noise=``; ``NOISE_TYPES``):

- ``"diagonal"``: ``g`` may depend on ``y``. Only ``euler_maruyama`` solves this (Itô).
- ``"additive"``: ``g`` depends on ``t`` only. Itô and Stratonovich then coincide, which
  is what lets the Heun-type and SRA schemes solve the Itô SDE. The methods that need it
  check it: they evaluate ``g`` at ``y0`` and at ``y0 + 1`` (one extra ``g`` call) and raise
  ``ValueError`` if the two differ, whatever ``noise`` says — no silent Stratonovich answer.

Time runs either way (a negative ``h`` for ``t1 < t0``; the formulas hold verbatim with
signed ``h`` and oriented integrals). Noise: with ``bm=None`` the fixed-step methods draw
Gaussian increments from ``generator``; with ``bm`` (a ``BrownianPath``) every increment
comes from that one path; the adaptive method always uses a path (why:
docs/theory/solvers.md).

Counting: ``nfe`` counts drift evaluations ``f`` (over the batch, rejected attempts
included); ``stats["nfe_g"]`` counts diffusion evaluations ``g``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .base import FAULTS, CountedField, Field, Solution, locate, time_tensor
from .brownian import BrownianPath
from .controllers import PowerController
from .loops import AdaptiveRun, Proposal, collapse_error, fixed_solution, run_fixed, save_after
from .norms import error_ratio, resolve_norm
from .registry import METHODS, register

__all__ = [
    "NOISE_TYPES",
    "euler_maruyama",
    "heun_sde",
    "sra1",
    "adaptive_heun_sde",
    "BrownianPath",
    "check_inputs",
    "first_g",
    "require_additive",
    "Increments",
    "Drive",
    "StepSpan",
    "SDEState",
    "EulerHeunPair",
]

NOISE_TYPES = ("diagonal", "additive")


# --------------------------------------------------------------------------- checks
def check_inputs(
    method: str, f, g, y0: Tensor, t_a: float, t_b: float, generator, bm, noise
) -> None:
    """ValueError/TypeError naming the argument for anything a step loop cannot handle."""
    if noise not in NOISE_TYPES:
        raise ValueError(f"noise must be one of {NOISE_TYPES}, got {noise!r}")
    if not callable(f):
        raise TypeError(f"f must be callable f(t, y), got {type(f).__name__}")
    if not callable(g):
        raise TypeError(
            f"{method} is an SDE method and needs the diffusion g(t, y); got {type(g).__name__}"
        )
    if not isinstance(y0, Tensor) or not y0.is_floating_point():
        raise TypeError("y0 must be a floating torch.Tensor")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != y0.device.type:
            raise ValueError(
                f"generator is on {generator.device} but y0 is on {y0.device}; "
                "use torch.Generator(device=y0.device)"
            )
    if bm is not None:
        if not isinstance(bm, BrownianPath):
            raise TypeError(f"bm must be a ndmsolve BrownianPath, got {type(bm).__name__}")
        if bm.shape != y0.shape:
            raise ValueError(f"bm has shape {tuple(bm.shape)} but y0 has shape {tuple(y0.shape)}")
        if bm.dtype != y0.dtype or bm.device.type != y0.device.type:
            raise ValueError(f"bm is {bm.dtype} on {bm.device} but y0 is {y0.dtype} on {y0.device}")
        lo, hi = min(t_a, t_b), max(t_a, t_b)
        tol = 8 * torch.finfo(y0.dtype).eps * max(1.0, abs(lo), abs(hi))
        if lo < bm.t_lo - tol or hi > bm.t_hi + tol:
            raise ValueError(f"bm spans [{bm.t_lo}, {bm.t_hi}] but the solve needs [{lo}, {hi}]")


def first_g(method: str, g: Field, t0: Tensor, y0: Tensor) -> Tensor:
    """``g(t0, y0)``, checked to broadcast against ``y0`` without changing its shape."""
    g0 = g(t0, y0)
    if not isinstance(g0, Tensor):
        raise TypeError(f"g(t, y) must return a tensor, got {type(g0).__name__}")
    try:
        ok = torch.broadcast_shapes(g0.shape, y0.shape) == y0.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"g(t, y) must return y's shape {tuple(y0.shape)} or a shape broadcastable "
            f"to it (diagonal noise), got {tuple(g0.shape)}"
        )
    return g0


def require_additive(method: str, g: Field, t0: Tensor, y0: Tensor, g0: Tensor, noise: str) -> None:
    """Raise unless ``g`` ignores ``y`` (probed at ``y0 + 1``; one ``g`` call)."""
    if noise != "additive":
        raise ValueError(
            f"{method} needs additive noise (g depending on t only), got noise={noise!r}; "
            "pass noise='additive' if g ignores y, or use euler_maruyama for "
            "y-dependent (diagonal) noise"
        )
    with torch.no_grad():
        g1 = g(t0, y0 + 1.0)
        same = g1.shape == g0.shape and bool(torch.allclose(g1, g0, rtol=1e-6, atol=0.0))
    if not same:
        raise ValueError(
            f"{method} needs additive noise, but g(t, y) changes with y; "
            "use euler_maruyama for y-dependent (diagonal) noise"
        )


# --------------------------------------------------------------------------- noise sources
class Increments:
    """Per-step Brownian increments over a fixed grid: from ``bm`` or plain Gaussians.

    ``dw(i)`` is ``W(t_{i+1}) − W(t_i)``; ``dw_area(i)`` also returns the oriented
    ``I10 = ∫ (W(s) − W(t_i)) ds`` over the step. Without a path, ``(ΔW, I10)`` are drawn
    jointly: ``ΔW = √|h| z1``, ``I10 = h/2 (ΔW + √|h| z2 / √3)`` (exact covariance:
    Var I10 = |h|³/3, Cov(ΔW, I10) = h²/2).
    """

    def __init__(self, y0: Tensor, tf: list[float], hs: list[float], generator, bm):
        self.shape, self.dtype, self.device = y0.shape, y0.dtype, y0.device
        self.tf, self.hs, self.gen, self.bm = tf, hs, generator, bm
        self.sq = [math.sqrt(abs(h)) for h in hs]

    def _randn(self) -> Tensor:
        return torch.randn(self.shape, generator=self.gen, dtype=self.dtype, device=self.device)

    def dw(self, i: int) -> Tensor:
        if self.bm is not None:
            return self.bm.increment(self.tf[i], self.tf[i + 1])
        return self._randn().mul_(self.sq[i])

    def dw_area(self, i: int) -> tuple[Tensor, Tensor]:
        if self.bm is not None:
            return self.bm.increment_and_area(self.tf[i], self.tf[i + 1])
        dw = self._randn().mul_(self.sq[i])
        area = self._randn().mul_(self.sq[i] / math.sqrt(3.0)).add_(dw).mul_(0.5 * self.hs[i])
        return dw, area


# --------------------------------------------------------------------------- named step state
class Drive(NamedTuple):
    """What a scheme evaluates: the counted drift ``f`` and diffusion ``g``, and the
    grid's Brownian increments (``Increments``)."""

    f: CountedField
    g: CountedField
    noise: Increments


class StepSpan(NamedTuple):
    """Step ``i`` of a grid: from ``t`` to ``t_next`` (0-dim tensors), signed ``h``
    (a float), ``mid``: stage node ``c`` -> the time ``t + c h`` (0-dim tensors)."""

    i: int
    t: Tensor
    t_next: Tensor
    h: float
    mid: dict


class SDEState(NamedTuple):
    """The state a scheme carries: ``y`` at the step's start and ``g`` there when the
    scheme can carry it over (additive noise), else ``None``."""

    y: Tensor
    g: Tensor | None


# --------------------------------------------------------------------------- fixed-step core
def _fixed_setup(method: str, f, g, y0: Tensor, grid: Tensor, generator, bm, noise: str):
    """Checks and the set-up of a fixed-step SDE solve: ``(grid, tf, hs, drive, g0)``
    with ``grid`` in y0's dtype/device and ``tf`` its times as floats."""
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(f"grid must be a 1-D tensor of >= 2 times, got shape {tuple(grid.shape)}")
    grid = grid.to(dtype=y0.dtype, device=y0.device)  # times reach f and g in y's dtype
    tf = grid.detach().double().cpu().tolist()  # the one host sync of the solve's setup
    check_inputs(method, f, g, y0, tf[0], tf[-1], generator, bm, noise)
    hs = [b - a for a, b in zip(tf[:-1], tf[1:])]
    if not (all(h > 0 for h in hs) or all(h < 0 for h in hs)):
        raise ValueError(
            "grid must be strictly monotone (increasing or decreasing), with no repeated times"
        )
    fc, gc = CountedField(f), CountedField(g)
    g0 = first_g(method, gc, grid[0], y0)
    if "diagonal" not in METHODS[method].noise:
        require_additive(method, gc, grid[0], y0, g0, noise)
    return grid, tf, hs, Drive(fc, gc, Increments(y0, tf, hs, generator, bm)), g0


def _fixed_solve(
    method: str, scheme, f, g, y0: Tensor, grid: Tensor, options: dict, stage_c=()
) -> Solution:
    """Shared driver of the fixed-step schemes over ``loops.run_fixed``.

    ``scheme(drive, span, state) -> state`` does one step (``Drive``, ``StepSpan``,
    ``SDEState``). ``options``: ``save_idx``, ``generator``, ``bm``, ``noise``.
    ``stage_c``: extra stage nodes whose times to precompute (``StepSpan.mid``).
    """
    save_idx = list(options["save_idx"] or ())
    grid, tf, hs, drive, g0 = _fixed_setup(
        method, f, g, y0, grid, options["generator"], options["bm"], options["noise"]
    )
    ts = list(grid.unbind())
    g64 = grid.detach().double().cpu()
    mid = {
        c: list((g64[:-1] + c * (g64[1:] - g64[:-1])).to(grid.dtype).to(grid.device).unbind())
        for c in stage_c
    }
    carried = [g0]

    def step(i: int, y: Tensor) -> Tensor:
        span = StepSpan(i, ts[i], ts[i + 1], hs[i], {c: m[i] for c, m in mid.items()})
        y, carried[0] = scheme(drive, span, SDEState(y, carried[0]))
        return y

    def on_fault(e, i, y):  # the drift reported NaN/inf itself: name the step
        partial = Solution(y=y, nfe=drive.f.nfe, n_accepted=i, method=method, t=tf[i])
        return locate(e, method, i, tf[i], tf[i + 1], partial=partial)

    run = run_fixed(step, y0, len(hs), save_after(len(hs), save_idx), on_fault)
    stats = {"nfe_g": drive.g.nfe}
    return fixed_solution(
        method, grid, y0, run, save_idx, drive.f.nfe, check="the drift/diffusion", stats=stats
    )


# --------------------------------------------------------------------------- the schemes
def _em_step(d: Drive, s: StepSpan, st: SDEState) -> SDEState:
    g_t = st.g if s.i == 0 else d.g(s.t, st.y)  # g may depend on y: at the current state
    y = torch.addcmul(torch.add(st.y, d.f(s.t, st.y), alpha=s.h), g_t, d.noise.dw(s.i))
    return SDEState(y, None)


def euler_maruyama(
    f: Field,
    g: Field,
    y0: Tensor,
    grid: Tensor,
    *,
    save_idx=None,
    generator: torch.Generator | None = None,
    bm: BrownianPath | None = None,
    noise: str = "diagonal",
) -> Solution:
    """Euler–Maruyama (Itô), strong order 0.5 (1.0 for additive noise), weak order 1
    (Kloeden & Platen, Numerical Solution of SDEs, 10.2).

        y_{n+1} = y_n + h f(t_n, y_n) + g(t_n, y_n) ⊙ ΔW_n,   ΔW_n ~ N(0, |h| I)

    Args:
        f, g: drift and diagonal diffusion; ``y0``: state of any shape at ``grid[0]``.
        grid: (N+1,) times, monotone either way, y0's dtype/device.
        save_idx: grid indices whose states go to ``ys``; generator/bm: the noise source.
        noise: ``"diagonal"`` or ``"additive"`` (both supported).

    Returns:
        ``Solution``; ``nfe = N`` drift calls, ``stats["nfe_g"] = N`` diffusion calls.
    """
    options = {"save_idx": save_idx, "generator": generator, "bm": bm, "noise": noise}
    return _fixed_solve("euler_maruyama", _em_step, f, g, y0, grid, options)


def _heun_step(d: Drive, s: StepSpan, st: SDEState) -> SDEState:
    y, h = st.y, s.h
    dw = d.noise.dw(s.i)
    k1 = d.f(s.t, y)
    gdw = st.g * dw
    y_pred = torch.add(y, k1, alpha=h).add_(gdw)
    k2 = d.f(s.t_next, y_pred)
    g_next = d.g(s.t_next, y_pred)  # additive: any y will do; carried to the next step
    y1 = torch.add(y, k1 + k2, alpha=0.5 * h).add_(gdw.add_(g_next * dw).mul_(0.5))
    return SDEState(y1, g_next)


def heun_sde(
    f: Field,
    g: Field,
    y0: Tensor,
    grid: Tensor,
    *,
    save_idx=None,
    generator: torch.Generator | None = None,
    bm: BrownianPath | None = None,
    noise: str = "additive",
) -> Solution:
    """Stochastic Heun (improved Euler) for additive noise; strong order 1, weak order 2
    for the drift part (Kloeden & Platen, 11.1; arguments as ``euler_maruyama``).

        ỹ       = y_n + h f(t_n, y_n) + g(t_n) ΔW_n
        y_{n+1} = y_n + h/2 [f(t_n, y_n) + f(t_{n+1}, ỹ)] + ½ [g(t_n) + g(t_{n+1})] ΔW_n

    A Stratonovich scheme; with additive noise (checked) that is the Itô solution too.
    ``nfe = 2N`` drift calls; ``nfe_g = N + 2`` (``g`` carried over; one additivity probe).
    """
    options = {"save_idx": save_idx, "generator": generator, "bm": bm, "noise": noise}
    return _fixed_solve("heun_sde", _heun_step, f, g, y0, grid, options)


def _sra1_step(d: Drive, s: StepSpan, st: SDEState) -> SDEState:
    y, h = st.y, s.h
    dw, area = d.noise.dw_area(s.i)
    k1 = d.f(s.t, y)
    g_next = d.g(s.t_next, y)
    a = area / h  # I10 / h
    h2 = torch.add(y, k1, alpha=0.75 * h).add_(g_next * a, alpha=1.5)
    k2 = d.f(s.mid[0.75], h2)
    y1 = torch.add(y, k1, alpha=h / 3.0).add_(k2, alpha=2.0 * h / 3.0)
    y1 = y1.add_(g_next * (dw - a)).add_(st.g * a)
    return SDEState(y1, g_next)


def sra1(
    f: Field,
    g: Field,
    y0: Tensor,
    grid: Tensor,
    *,
    save_idx=None,
    generator: torch.Generator | None = None,
    bm: BrownianPath | None = None,
    noise: str = "additive",
) -> Solution:
    """Rößler's SRA1 (SIAM J. Numer. Anal. 48, 2010) for additive-noise Itô SDEs;
    strong order 1.5, deterministic order 2 (arguments as ``euler_maruyama``).

    With ``I10 = ∫_{t_n}^{t_{n+1}} (W(s) − W(t_n)) ds`` (sampled jointly with ΔW_n):

        H       = y_n + ¾ h f(t_n, y_n) + (3/2) g(t_{n+1}) I10/h
        y_{n+1} = y_n + h [⅓ f(t_n, y_n) + ⅔ f(t_n + ¾h, H)]
                      + g(t_{n+1}) (ΔW_n − I10/h) + g(t_n) I10/h

    A ``bm`` passed here must carry the Lévy area (``BrownianPath(levy_area=True)``).
    ``nfe = 2N``; ``nfe_g = N + 2``.
    """
    if bm is not None and not getattr(bm, "levy_area", False):
        raise ValueError(
            "sra1 needs the space-time Lévy area: pass bm=BrownianPath(..., levy_area=True)"
        )
    options = {"save_idx": save_idx, "generator": generator, "bm": bm, "noise": noise}
    return _fixed_solve("sra1", _sra1_step, f, g, y0, grid, options, stage_c=(0.75,))


# --------------------------------------------------------------------------- adaptive
class EulerHeunPair:
    """The ``loops.AdaptiveStepper`` of ``adaptive_heun_sde``: from ``(t, y)`` with step
    ``h`` and ``ΔW = W(t+h) − W(t)`` from ``path``,

        y'  = y + h f(t, y) + g(t) ΔW                                 (Euler–Maruyama)
        y'' = y + h/2 [f(t, y) + f(t+h, y')] + ½ [g(t) + g(t+h)] ΔW     (stochastic Heun)

    proposal ``y''`` with error ratio ``norm((y'' − y') / (atol + rtol·max(|y'|, |y'_prev|)))``.
    ``f(t, y)`` and ``g(t)`` at the step's start are reused across rejections.
    """

    retry_faults = False  # shrinking onto a NaN/inf report would refine the path unboundedly
    limit_hint = ""

    def __init__(self, name: str, drive: tuple, path, g0: Tensor, y0: Tensor, tol: tuple):
        self.name, (self.f, self.g), self.path = name, drive, path
        self.tol = tol  # (rtol, atol, norm)
        self.g_t, self.y_prime_prev, self.k1 = g0, y0, None
        self.next = None  # (y', g(t+h)) of the last attempt

    @property
    def nfe(self) -> int:
        return self.f.nfe

    def stats(self, h: float, final: bool) -> dict:
        return {"nfe_g": self.g.nfe, "h_last": h}

    def attempt(self, run: AdaptiveRun, t_new: float, h: float) -> Proposal:
        t, y = run.t, run.y
        tt, tt_new = torch.tensor([t, t_new], dtype=y.dtype, device=y.device).unbind()
        if self.k1 is None:
            try:
                self.k1 = self.f(tt, y)
            except FAULTS as e:  # at the step's start: no smaller step avoids it
                raise run.located(e, None) from None
        try:
            dw = self.path.increment(t, t_new)
        except RecursionError:  # torchsde's Brownian tree, after many nested rejections
            raise collapse_error(
                self.name, h, t, run.n_acc, math.nan, None, run.partial()
            ) from None
        gdw = self.g_t * dw
        y_em = torch.add(y, self.k1, alpha=h).add_(gdw)
        try:
            k2 = self.f(tt_new, y_em)
        except FAULTS as e:
            raise run.located(e, t_new) from None
        g_new = self.g(tt_new, y_em)
        y_heun = torch.add(y, self.k1 + k2, alpha=0.5 * h).add_((gdw + g_new * dw).mul_(0.5))
        with torch.no_grad():
            ratio = error_ratio(y_heun - y_em, self.y_prime_prev, y_em, *self.tol)
        self.next = (y_em, g_new)
        return Proposal(y_heun, ratio)

    def accept(self, run: AdaptiveRun) -> None:
        (self.y_prime_prev, self.g_t), self.k1 = self.next, None

    def interpolate(self, thetas):
        raise NotImplementedError("adaptive_heun_sde saves by clipping steps")


def _check_adaptive(name: str, t0, t1, rtol, atol, max_steps) -> tuple[float, float]:
    """ValueError naming the argument; ``(t0, t1)`` as floats."""
    t0, t1 = float(t0), float(t1)
    if t0 == t1:
        raise ValueError(f"t0 and t1 must differ, got t0 = t1 = {t0}")
    for val, nm in ((rtol, "rtol"), (atol, "atol")):
        if not (isinstance(val, (int, float)) and val >= 0 and math.isfinite(val)):
            raise ValueError(f"{nm} must be finite and >= 0, got {val}")
    if rtol == 0 and atol == 0:
        raise ValueError("rtol and atol must not both be 0")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    return t0, t1


def adaptive_heun_sde(
    f: Field,
    g: Field,
    y0: Tensor,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-2,
    atol: float = 1e-2,
    max_steps: int = 10_000,
    h0: float | None = None,
    save_at: Tensor | None = None,
    generator: torch.Generator | None = None,
    bm: BrownianPath | None = None,
    noise: str = "additive",
    safety: float = 0.9,
    exponent: float = 0.9,
    factormax: float = 10.0,
    norm="rms",
) -> Solution:
    """Adaptive SDE solver for additive noise: the embedded Euler–Maruyama / stochastic-Heun
    pair (``EulerHeunPair``) of Jolicoeur-Martineau et al. (2021), "Gotta Go Fast When
    Generating Data with Score-Based Models"; strong order 1 (Heun, local extrapolation).

    A step is accepted when its error ratio is ≤ 1 (then ``y ← y''``, ``y'_prev ← y'``); the
    next step is ``controllers.PowerController(safety, exponent, factormax)``'s, clipped to
    land on ``save_at`` times and ``t1``. The noise comes from a ``BrownianPath`` (``bm``, or
    one seeded from ``generator``), so a rejected step is retried on a sub-interval of the
    same path. One host sync per attempt.

    Args:
        f, g, y0, t0, t1: the SDE (additive noise, checked), initial state, time span.
        rtol, atol: tolerances of the mixed norm (the paper's defaults: 1e-2 / 1e-2·data scale).
        max_steps: bound on attempted (accepted + rejected) steps.
        h0: first step size magnitude (default ``0.01 |t1 − t0|``, as in the paper).
        save_at: (S,) strictly monotone times in the integration direction.
        norm: the error norm (``norms`` module: "rms", "sample_max", "max" or a callable).

    Returns:
        ``Solution``; ``nfe = attempts + accepted steps`` drift calls (``f`` at the end of
        every attempt, at the start of every accepted step; none at ``t1``),
        ``stats["nfe_g"]`` (one per attempt, plus the first call and the additivity probe),
        ``stats["h_last"]``.

    Raises:
        StepLimitError: ``max_steps`` attempts before ``t1`` (``partial`` holds the last
            accepted state). NonFiniteError: NaN/inf persisted while the step collapsed,
            or the drift reported its own NaN/inf output (``base.FAULTS``; raised at once
            with the step and time).
    """
    name = "adaptive_heun_sde"
    norm = resolve_norm(norm)
    t0, t1 = _check_adaptive(name, t0, t1, rtol, atol, max_steps)
    check_inputs(name, f, g, y0, t0, t1, generator, bm, noise)
    path = bm
    if path is None:
        path = BrownianPath(t0, t1, y0.shape, y0.dtype, y0.device, generator, levy_area=False)
    fc, gc = CountedField(f), CountedField(g)
    g_t = first_g(name, gc, time_tensor(t0, y0), y0)
    require_additive(name, gc, time_tensor(t0, y0), y0, g_t, noise)
    stepper = EulerHeunPair(name, (fc, gc), path, g_t, y0, (rtol, atol, norm))
    controller = PowerController(safety=safety, exponent=exponent, factormax=factormax)
    run = AdaptiveRun(
        stepper, controller, y0, t0, t1, save_at=save_at, dense=False, max_steps=max_steps
    )
    run.start(abs(h0) if h0 is not None else 0.01 * abs(t1 - t0))
    return run.run()


# Orders are strong orders for additive noise (Euler-Maruyama: 0.5 for diagonal noise).
register(
    "euler_maruyama",
    family="sde",
    stepping="fixed",
    order=1.0,
    nfe_per_step=1,
    run=euler_maruyama,
    noise=("diagonal", "additive"),
    needs_jvp=True,
    description="Euler-Maruyama (Ito); strong order 0.5 diagonal, 1.0 additive noise",
)
register(
    "heun_sde",
    family="sde",
    stepping="fixed",
    order=1.0,
    nfe_per_step=2,
    run=heun_sde,
    noise=("additive",),
    needs_jvp=True,
    description="stochastic Heun, additive noise",
)
register(
    "sra1",
    family="sde",
    stepping="fixed",
    order=1.5,
    nfe_per_step=2,
    run=sra1,
    noise=("additive",),
    needs_jvp=True,
    description="Roessler SRA1, additive noise",
)
register(
    "adaptive_heun_sde",
    family="sde",
    stepping="adaptive",
    order=1.0,
    nfe_per_step=2,
    run=adaptive_heun_sde,
    noise=("additive",),
    needs_jvp=True,
    description="embedded Euler-Maruyama / stochastic Heun pair, additive noise",
)
