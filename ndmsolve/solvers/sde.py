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

Time runs either way. Going backwards (``t1 < t0``, as in sampling) the step ``h`` is
negative, increments ``ΔW`` have variance ``|h|``, and each scheme is the same scheme
applied to the SDE in the reversed time ``s = −t`` (the formulas below hold verbatim
with signed ``h`` and oriented integrals).

Randomness: with ``bm=None`` the fixed-step methods draw plain Gaussian increments from
``generator`` (fast, no tree); with ``bm`` (a ``BrownianPath``) every increment comes from
that one path, so solves with different grids see the same noise (strong-order tests).
The adaptive method always uses a path (drawn from ``generator`` if none is given),
because a rejected step is retried on a sub-interval of the *same* noise.

Counting: ``nfe`` counts drift evaluations ``f`` (over the batch, rejected attempts
included); ``stats["nfe_g"]`` counts diffusion evaluations ``g``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .adaptive import collapse_error, error_ratio
from .base import (
    FAULTS,
    CountedField,
    Field,
    NonFiniteError,
    Solution,
    StepLimitError,
    attach_saved,
    locate,
    save_targets,
    time_tensor,
)
from .brownian import BrownianPath
from .fixed import check_finite_steps
from .norms import resolve_norm
from .registry import METHODS, register

__all__ = ["NOISE_TYPES", "euler_maruyama", "heun_sde", "sra1", "adaptive_heun_sde", "BrownianPath"]

NOISE_TYPES = ("diagonal", "additive")


# --------------------------------------------------------------------------- checks
def _check_inputs(
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


def _first_g(method: str, g: Field, t0: Tensor, y0: Tensor) -> Tensor:
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


def _require_additive(
    method: str, g: Field, t0: Tensor, y0: Tensor, g0: Tensor, noise: str
) -> None:
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
class _Increments:
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


# --------------------------------------------------------------------------- fixed-step core
def _fixed_solve(
    method: str,
    step_fn,
    f,
    g,
    y0: Tensor,
    grid: Tensor,
    save_idx,
    generator,
    bm,
    noise: str,
    stage_c: Sequence[float] = (),
) -> Solution:
    """Shared driver of the fixed-step schemes: checks, setup, loop, finiteness, saving.

    ``step_fn(i, t, t_next, stage_ts, h, y, g_t, fc, gc, inc) -> (y_next, g_next)`` does
    one step; ``g_t`` is ``g`` at the step's start when the scheme can carry it over
    (additive noise), else ``None``. ``stage_c``: extra stage nodes whose times to precompute.
    """
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(f"grid must be a 1-D tensor of >= 2 times, got shape {tuple(grid.shape)}")
    grid = grid.to(dtype=y0.dtype, device=y0.device)  # times reach f and g in y's dtype
    g64 = grid.detach().double().cpu()
    tf = g64.tolist()  # the one host sync of the solve's setup
    n = len(tf) - 1
    _check_inputs(method, f, g, y0, tf[0], tf[-1], generator, bm, noise)
    hs = [b - a for a, b in zip(tf[:-1], tf[1:])]
    if not (all(h > 0 for h in hs) or all(h < 0 for h in hs)):
        raise ValueError(
            "grid must be strictly monotone (increasing or decreasing), with no repeated times"
        )
    ts = list(grid.unbind())
    stage_ts = {
        c: list((g64[:-1] + c * (g64[1:] - g64[:-1])).to(grid.dtype).to(grid.device).unbind())
        for c in stage_c
    }
    fc, gc = CountedField(f), CountedField(g)
    g_t = _first_g(method, gc, ts[0], y0)
    if "diagonal" not in METHODS[method].noise:
        _require_additive(method, gc, ts[0], y0, g_t, noise)
    inc = _Increments(y0, tf, hs, generator, bm)

    save_idx = list(save_idx or ())
    save_after = [False] * n
    for j in save_idx:
        if j > 0:
            save_after[j - 1] = True
    acc = torch.float32 if y0.dtype in (torch.float16, torch.bfloat16) else None
    y, saved, sums = y0, [], []
    for i in range(n):
        try:
            y, g_t = step_fn(
                i,
                ts[i],
                ts[i + 1],
                {c: s[i] for c, s in stage_ts.items()},
                hs[i],
                y,
                g_t,
                fc,
                gc,
                inc,
            )
        except FAULTS as e:  # the drift reported NaN/inf itself: name the step
            partial = Solution(y=y, nfe=fc.nfe, n_accepted=i, method=method, t=tf[i])
            raise locate(e, method, i, tf[i], tf[i + 1], partial=partial) from None
        sums.append(y.sum(dtype=acc))  # device-side; checked once after the loop
        if save_after[i]:
            saved.append(y)
    states = [y0] * (bool(save_idx) and save_idx[0] == 0) + saved
    first_bad = check_finite_steps(torch.stack(sums), y)
    if first_bad is not None:
        raise _nonfinite(method, tf, grid, save_idx, states, y0, first_bad, fc.nfe, gc.nfe)
    sol = Solution(y=y, nfe=fc.nfe, n_accepted=n, method=method, t=tf[-1], stats={"nfe_g": gc.nfe})
    if save_idx:
        sol.ts, sol.ys = grid[save_idx], torch.stack(states)
    return sol


def _nonfinite(method, tf, grid, save_idx, states, y0, step, nfe, nfe_g) -> NonFiniteError:
    good = [(j, s) for j, s in zip(save_idx, states) if j <= step]
    last_j, last_y = good[-1] if good else (0, y0)
    partial = Solution(
        y=last_y, nfe=nfe, n_accepted=step, method=method, t=tf[last_j], stats={"nfe_g": nfe_g}
    )
    if good:
        partial.ts = grid[[j for j, _ in good]]
        partial.ys = torch.stack([s for _, s in good])
    return NonFiniteError(
        f"{method}: the state became NaN/inf in step {step} (t={tf[step]:.6g} -> {tf[step + 1]:.6g}); "
        f"check the drift/diffusion near t={tf[step]:.6g}",
        t=tf[step],
        step=step,
        partial=partial,
    )


# --------------------------------------------------------------------------- the schemes
def _em_step(i, t, t_next, st, h, y, g_t, fc, gc, inc):
    g_t = g_t if i == 0 else gc(t, y)  # g may depend on y: evaluate at the current state
    return torch.addcmul(torch.add(y, fc(t, y), alpha=h), g_t, inc.dw(i)), None


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
    """Euler–Maruyama (Itô), strong order 0.5 (1.0 for additive noise), weak order 1.

        y_{n+1} = y_n + h f(t_n, y_n) + g(t_n, y_n) ⊙ ΔW_n,   ΔW_n ~ N(0, |h| I)

    Args:
        f, g: drift and diagonal diffusion; ``y0``: state of any shape at ``grid[0]``.
        grid: (N+1,) times, monotone either way, y0's dtype/device.
        save_idx: grid indices whose states go to ``ys``; generator/bm: the noise source.
        noise: ``"diagonal"`` or ``"additive"`` (both supported).

    Returns:
        ``Solution``; ``nfe = N`` drift calls, ``stats["nfe_g"] = N`` diffusion calls.
    """
    return _fixed_solve("euler_maruyama", _em_step, f, g, y0, grid, save_idx, generator, bm, noise)


def _heun_step(i, t, t_next, st, h, y, g_t, fc, gc, inc):
    dw = inc.dw(i)
    k1 = fc(t, y)
    gdw = g_t * dw
    y_pred = torch.add(y, k1, alpha=h).add_(gdw)
    k2 = fc(t_next, y_pred)
    g_next = gc(t_next, y_pred)  # additive: any y will do; carried to the next step
    y1 = torch.add(y, k1 + k2, alpha=0.5 * h).add_(gdw.add_(g_next * dw).mul_(0.5))
    return y1, g_next


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
    for the drift part.

        ỹ       = y_n + h f(t_n, y_n) + g(t_n) ΔW_n
        y_{n+1} = y_n + h/2 [f(t_n, y_n) + f(t_{n+1}, ỹ)] + ½ [g(t_n) + g(t_{n+1})] ΔW_n

    A Stratonovich scheme; with additive noise (checked) that is the Itô solution too.
    ``nfe = 2N`` drift calls; ``nfe_g = N + 2`` (``g`` carried over; one additivity probe).
    """
    return _fixed_solve("heun_sde", _heun_step, f, g, y0, grid, save_idx, generator, bm, noise)


_SQRT3 = math.sqrt(3.0)


def _sra1_step(i, t, t_next, st, h, y, g_t, fc, gc, inc):
    dw, area = inc.dw_area(i)
    k1 = fc(t, y)
    g_next = gc(t_next, y)
    a = area / h  # I10 / h
    h2 = torch.add(y, k1, alpha=0.75 * h).add_(g_next * a, alpha=1.5)
    k2 = fc(st[0.75], h2)
    y1 = torch.add(y, k1, alpha=h / 3.0).add_(k2, alpha=2.0 * h / 3.0)
    y1 = y1.add_(g_next * (dw - a)).add_(g_t * a)
    return y1, g_next


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
    strong order 1.5, deterministic order 2.

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
    return _fixed_solve(
        "sra1", _sra1_step, f, g, y0, grid, save_idx, generator, bm, noise, stage_c=(0.75,)
    )


# --------------------------------------------------------------------------- adaptive
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
    pair of Jolicoeur-Martineau et al. (2021), "Gotta Go Fast When Generating Data with
    Score-Based Models". Strong order 1 (Heun, with local extrapolation).

    One attempt from ``(t, y)`` with step ``h`` and increment ``ΔW = W(t+h) − W(t)``:

        y'  = y + h f(t, y) + g(t) ΔW                                   (Euler–Maruyama)
        y'' = y + h/2 [f(t, y) + f(t+h, y')] + ½ [g(t) + g(t+h)] ΔW       (stochastic Heun)
        E   = norm((y'' − y') / (atol + rtol · max(|y'|, |y'_prev|)))     (default RMS)

    accepted when ``E ≤ 1`` (then ``y ← y''`` and ``y'_prev ← y'``); in every case
    ``h ← θ h E^(−r)`` with θ = ``safety`` = 0.9, r = ``exponent`` = 0.9, the growth capped
    by ``factormax`` and the step clipped to land on ``save_at`` times and ``t1``.

    The noise comes from a ``BrownianPath`` (``bm``, or one seeded from ``generator``), so
    a rejected step is retried on a sub-interval of the same path. ``f(t, y)`` and ``g(t)``
    at the step's start are reused across rejections. One host sync per attempt.

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
            with the step and time: shrinking onto it would refine the Brownian path
            without bound).
    """
    name = "adaptive_heun_sde"
    norm = resolve_norm(norm)
    t0, t1 = float(t0), float(t1)
    if t0 == t1:
        raise ValueError(f"t0 and t1 must differ, got t0 = t1 = {t0}")
    _check_inputs(name, f, g, y0, t0, t1, generator, bm, noise)
    for val, nm in ((rtol, "rtol"), (atol, "atol")):
        if not (isinstance(val, (int, float)) and val >= 0 and math.isfinite(val)):
            raise ValueError(f"{nm} must be finite and >= 0, got {val}")
    if rtol == 0 and atol == 0:
        raise ValueError("rtol and atol must not both be 0")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    direction = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)
    path = (
        bm
        if bm is not None
        else BrownianPath(t0, t1, y0.shape, y0.dtype, y0.device, generator, levy_area=False)
    )
    fc, gc = CountedField(f), CountedField(g)
    g_t = _first_g(name, gc, time_tensor(t0, y0), y0)
    _require_additive(name, gc, time_tensor(t0, y0), y0, g_t, noise)

    targets, save_flags, saved_t, saved_y = save_targets(save_at, t0, t1, y0)

    t, y, y_prime_prev = t0, y0, y0
    k1: Tensor | None = None
    n_acc = n_rej = 0
    h = direction * min(abs(h0) if h0 is not None else 0.01 * span, span)
    h_min_rel = 10 * torch.finfo(y0.dtype).eps

    def partial() -> Solution:
        sol = Solution(
            y=y,
            nfe=fc.nfe,
            n_accepted=n_acc,
            n_rejected=n_rej,
            method=name,
            t=t,
            stats={"nfe_g": gc.nfe, "h_last": h},
        )
        return attach_saved(sol, saved_t, saved_y, y0)

    ti = 0
    while ti < len(targets):
        if n_acc + n_rej >= max_steps:
            raise StepLimitError(
                f"{name}: reached max_steps={max_steps} attempted steps at t={t:.6g} before t1={t1:.6g} "
                f"({n_acc} accepted, {n_rej} rejected); raise max_steps or loosen rtol/atol",
                t=t,
                step=n_acc,
                partial=partial(),
            )
        target = targets[ti]
        clipped = abs(h) >= abs(target - t)
        h_try = (target - t) if clipped else h
        t_new = target if clipped else t + h_try
        tt, tt_new = torch.tensor(
            [t, t_new], dtype=y0.dtype, device=y0.device
        ).unbind()  # one H2D copy
        if k1 is None:
            try:
                k1 = fc(tt, y)
            except FAULTS as e:  # at the step's start: no smaller step avoids it
                raise locate(e, name, n_acc, t, None, partial=partial()) from None
        try:
            dw = path.increment(t, t_new)
        except RecursionError:  # torchsde's Brownian tree, after many nested rejections
            raise collapse_error(name, h_try, t, n_acc, math.nan, None, partial()) from None
        gdw = g_t * dw
        y_em = torch.add(y, k1, alpha=h_try).add_(gdw)
        try:
            k2 = fc(tt_new, y_em)
        except FAULTS as e:  # stop at once: shrinking towards it refines the path unboundedly
            raise locate(e, name, n_acc, t, t_new, partial=partial()) from None
        g_new = gc(tt_new, y_em)
        y_heun = torch.add(y, k1 + k2, alpha=0.5 * h_try).add_((gdw + g_new * dw).mul_(0.5))
        with torch.no_grad():
            probe = torch.stack(
                [
                    error_ratio(y_heun - y_em, y_prime_prev, y_em, rtol, atol, norm).double(),
                    y_heun.sum(dtype=torch.float64),
                ]
            )
        ratio, ysum = probe.tolist()  # the one sync per attempt
        finite = math.isfinite(ratio) and math.isfinite(ysum)
        accepted = finite and ratio <= 1.0
        if not finite:
            factor = 0.2
        elif ratio == 0.0:
            factor = factormax
        else:
            factor = min(factormax, safety * ratio ** (-exponent))
        h_next = abs(h_try) * factor
        if accepted:
            n_acc += 1
            t, y, y_prime_prev, g_t, k1 = t_new, y_heun, y_em, g_new, None
            if clipped:
                h_next = max(h_next, abs(h))  # a clip for saving should not throttle the step
                if save_flags[ti]:
                    saved_t.append(t)
                    saved_y.append(y)
                ti += 1
        else:
            n_rej += 1
        h = direction * min(h_next, span)
        if ti < len(targets) and abs(h) < h_min_rel * max(abs(t), span):
            ratio = ratio if finite else math.nan
            raise collapse_error(name, h, t, n_acc, ratio, None, partial())

    sol = partial()
    sol.t = t1
    return sol


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
