"""Variance-preserving noise schedules given by their log signal-to-noise ratio λ(t).

α_t² = sigmoid(λ(t)), σ_t² = sigmoid(−λ(t)), λ strictly decreasing on t ∈ [0, 1].
Identities used across the package (tested against autograd):

    d/dt log α_t = ½ σ_t² λ'(t)
    g²(t)        = σ_t² d/dt log(σ_t²/α_t²) = −σ_t² λ'(t)  > 0

Every method takes ``t`` of shape ``(B,)`` (or any shape) and returns a tensor of the
same shape. ``DiscreteSchedule`` is the schedule of a table ᾱ_k of a discrete-time diffusion
(DDPM, diffusers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from ._checks import check_time
from .config import configurable

__all__ = [
    "Schedule",
    "LinearLogSNR",
    "CosineLogSNR",
    "LearnedLogSNR",
    "make_schedule",
    "SCHEDULES",
    "DiscreteSchedule",
    "INTERPOLATIONS",
]


class Schedule(nn.Module):
    """Base class: subclasses define ``log_snr`` and, where they can, ``dlog_snr``."""

    logsnr_min: float
    logsnr_max: float

    def log_snr(self, t: Tensor) -> Tensor:
        """λ(t), same shape as ``t``."""
        raise NotImplementedError

    def t_of_log_snr(self, lam) -> Tensor:
        """The time t ∈ [0, 1] with λ(t) = ``lam`` (any shape; a float or a tensor), float64
        unless ``lam`` is a floating tensor (then its dtype).

        λ is strictly decreasing, so t is unique; ``lam`` must lie in [λ(1), λ(0)] (up to
        1e-6 relative, float32 rounding of the end points). Subclasses override with a closed form; this base class bisects,
        vectorised, in float64 (64 halvings of [0, 1]: t to ~1e-16, λ(t) to ~1e-15 |λ'|).
        """
        lam64 = _lam_in_range(self, lam)
        lo, hi = torch.zeros_like(lam64), torch.ones_like(lam64)
        with torch.no_grad():
            for _ in range(64):
                mid = 0.5 * (lo + hi)
                early = self.log_snr(mid).to(torch.float64) > lam64  # λ(mid) > target: t > mid
                lo, hi = torch.where(early, mid, lo), torch.where(early, hi, mid)
            ends = self.log_snr(torch.tensor([1.0, 0.0], dtype=torch.float64))
        t = 0.5 * (lo + hi)
        t = torch.where(lam64 >= ends[1], 0.0, torch.where(lam64 <= ends[0], 1.0, t))  # exact ends
        return _like(t, lam)

    def dlog_snr(self, t: Tensor) -> Tensor:
        """λ'(t) by forward-mode AD; subclasses override with the closed form."""
        t = t.contiguous()  # a stride-0 (expanded) t cannot carry a tangent
        _, d = torch.func.jvp(self.log_snr, (t,), (torch.ones_like(t),))
        return d

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha, sigma)`` at ``t``, each the shape of ``t``."""
        check_time(t)
        return self.alpha_sigma(t)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha, sigma)`` without validating ``t`` (for callers that already did)."""
        lam = self.log_snr(t)
        # exp(½ log sigmoid) keeps α, σ accurate when λ is large in magnitude.
        return torch.exp(0.5 * nnf.logsigmoid(lam)), torch.exp(0.5 * nnf.logsigmoid(-lam))

    def alpha_sigma2(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha², sigma²)`` at ``t``."""
        lam = self.log_snr(t)
        return torch.sigmoid(lam), torch.sigmoid(-lam)

    def dlog_alpha(self, t: Tensor) -> Tensor:
        """d/dt log α_t = ½ σ_t² λ'(t)."""
        return 0.5 * torch.sigmoid(-self.log_snr(t)) * self.dlog_snr(t)

    def g2(self, t: Tensor) -> Tensor:
        """Squared diffusion g²(t) = −σ_t² λ'(t) (positive)."""
        return -torch.sigmoid(-self.log_snr(t)) * self.dlog_snr(t)


def _lam_in_range(schedule: Schedule, lam) -> Tensor:
    """``lam`` as a float64 tensor, checked to lie in [λ(1), λ(0)] (1e-6 relative slack)."""
    lam64 = torch.as_tensor(lam).detach().to(torch.float64)
    with torch.no_grad():
        ends = schedule.log_snr(torch.tensor([1.0, 0.0], dtype=torch.float64)).to(torch.float64)
    lo, hi = float(ends[0]), float(ends[1])
    slack = 1e-6 * max(1.0, abs(lo), abs(hi))
    if lam64.numel() and not bool(((lam64 >= lo - slack) & (lam64 <= hi + slack)).all()):
        raise ValueError(
            f"lam must lie in the schedule's log-SNR range [{lo:g}, {hi:g}] (λ(1), λ(0)), "
            f"got values in [{float(lam64.min()):g}, {float(lam64.max()):g}]"
        )
    return lam64.clamp(lo, hi)


def _like(t: Tensor, lam) -> Tensor:
    """t clamped to [0, 1], in ``lam``'s dtype and device when it is a floating tensor."""
    t = t.clamp(0.0, 1.0)
    if isinstance(lam, Tensor) and lam.is_floating_point():
        return t.to(dtype=lam.dtype, device=lam.device)
    return t


def _check_range(logsnr_min: float, logsnr_max: float) -> None:
    for name, v in (("logsnr_min", logsnr_min), ("logsnr_max", logsnr_max)):
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if not logsnr_min < logsnr_max:
        raise ValueError(
            f"logsnr_min must be < logsnr_max, got logsnr_min={logsnr_min}, logsnr_max={logsnr_max}"
        )


@configurable
class LinearLogSNR(Schedule):
    """λ(t) = λ_max + (λ_min − λ_max) t: linear in t, from λ_max at t=0 to λ_min at t=1."""

    def __init__(self, logsnr_min: float = -12.0, logsnr_max: float = 12.0):
        super().__init__()
        _check_range(logsnr_min, logsnr_max)
        self.logsnr_min, self.logsnr_max = float(logsnr_min), float(logsnr_max)

    def log_snr(self, t: Tensor) -> Tensor:
        return self.logsnr_max + (self.logsnr_min - self.logsnr_max) * t

    def dlog_snr(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.logsnr_min - self.logsnr_max)

    def t_of_log_snr(self, lam) -> Tensor:
        """t = (λ − λ_max)/(λ_min − λ_max); see ``Schedule.t_of_log_snr``."""
        lam64 = _lam_in_range(self, lam)
        return _like((lam64 - self.logsnr_max) / (self.logsnr_min - self.logsnr_max), lam)

    def extra_repr(self) -> str:
        return f"logsnr_min={self.logsnr_min}, logsnr_max={self.logsnr_max}"


@configurable
class CosineLogSNR(Schedule):
    """Cosine schedule (Nichol & Dhariwal) in log-SNR form, clipped to [λ_min, λ_max]:

    λ(t) = −2 log tan(a t + b),  b = atan(e^{−λ_max/2}),  a = atan(e^{−λ_min/2}) − b.
    """

    def __init__(self, logsnr_min: float = -15.0, logsnr_max: float = 15.0):
        super().__init__()
        _check_range(logsnr_min, logsnr_max)
        self.logsnr_min, self.logsnr_max = float(logsnr_min), float(logsnr_max)
        self.b = math.atan(math.exp(-0.5 * self.logsnr_max))
        self.a = math.atan(math.exp(-0.5 * self.logsnr_min)) - self.b

    def log_snr(self, t: Tensor) -> Tensor:
        return -2.0 * torch.log(torch.tan(self.a * t + self.b))

    def dlog_snr(self, t: Tensor) -> Tensor:
        # d/du [−2 log tan u] = −2 / (sin u cos u) = −4 / sin 2u
        return -4.0 * self.a / torch.sin(2.0 * (self.a * t + self.b))

    def t_of_log_snr(self, lam) -> Tensor:
        """t = (atan(e^{−λ/2}) − b)/a; see ``Schedule.t_of_log_snr``."""
        lam64 = _lam_in_range(self, lam)
        return _like((torch.atan(torch.exp(-0.5 * lam64)) - self.b) / self.a, lam)

    def extra_repr(self) -> str:
        return f"logsnr_min={self.logsnr_min}, logsnr_max={self.logsnr_max}"


@configurable
class LearnedLogSNR(Schedule):
    """Learnable monotone schedule with fixed end points (VDM-style).

    λ(t) = λ_max + (λ_min − λ_max) γ̃(t),  γ̃(t) = (h(t) − h(0)) / (h(1) − h(0)),
    h(t) = w t + Σ_j v_j sigmoid(u_j t + c_j) with w, v_j, u_j > 0 (softplus), so h is
    strictly increasing, γ̃(0) = 0, γ̃(1) = 1 and λ' has a closed form.
    Initialised close to ``LinearLogSNR`` with the same end points.
    """

    def __init__(self, logsnr_min: float = -12.0, logsnr_max: float = 12.0, hidden: int = 16):
        super().__init__()
        _check_range(logsnr_min, logsnr_max)
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive int, got {hidden!r}")
        self.logsnr_min, self.logsnr_max = float(logsnr_min), float(logsnr_max)
        self.w_raw = nn.Parameter(torch.tensor(1.0))
        self.v_raw = nn.Parameter(torch.full((hidden,), -3.0))
        self.u_raw = nn.Parameter(torch.linspace(-1.0, 2.0, hidden))
        self.c = nn.Parameter(torch.linspace(-4.0, 4.0, hidden))

    def _h(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """h(t) and h'(t), shape of ``t``."""
        w, v, u = nnf.softplus(self.w_raw), nnf.softplus(self.v_raw), nnf.softplus(self.u_raw)
        w, v, u, c = (p.to(t.dtype) for p in (w, v, u, self.c))
        s = torch.sigmoid(t.unsqueeze(-1) * u + c)
        h = w * t + (v * s).sum(-1)
        dh = w + (v * u * s * (1 - s)).sum(-1)
        return h, dh

    def _ends(self, t: Tensor) -> tuple[Tensor, Tensor]:
        h01, _ = self._h(torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device))
        return h01[0], h01[1] - h01[0]

    def log_snr(self, t: Tensor) -> Tensor:
        h, _ = self._h(t)
        h0, span = self._ends(t)
        return self.logsnr_max + (self.logsnr_min - self.logsnr_max) * (h - h0) / span

    def dlog_snr(self, t: Tensor) -> Tensor:
        _, dh = self._h(t)
        _, span = self._ends(t)
        return (self.logsnr_min - self.logsnr_max) * dh / span

    def extra_repr(self) -> str:
        return f"logsnr_min={self.logsnr_min}, logsnr_max={self.logsnr_max}, hidden={self.v_raw.numel()}"


SCHEDULES = {"linear": LinearLogSNR, "cosine": CosineLogSNR, "learned": LearnedLogSNR}


def make_schedule(schedule) -> Schedule:
    """A ``Schedule`` from an instance, a name in ``SCHEDULES`` or ``None`` (linear)."""
    if schedule is None:
        return LinearLogSNR()
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ValueError(
                f"schedule must be one of {sorted(SCHEDULES)} or a Schedule instance, got {schedule!r}"
            )
        return SCHEDULES[schedule]()
    raise TypeError(f"schedule must be a Schedule, a name or None, got {type(schedule).__name__}")


# --------------------------------------------------------------------------- a ᾱ table
INTERPOLATIONS = ("sigma_over_alpha", "log_snr")


def _table(alphas_cumprod) -> Tensor:
    """ᾱ as a float64 CPU tensor, validated: 1-D, ≥ 2 entries, in (0, 1), strictly decreasing."""
    try:
        a = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(
            f"alphas_cumprod must be a 1-D tensor or sequence of numbers, got "
            f"{type(alphas_cumprod).__name__}"
        ) from e
    if a.ndim != 1 or a.numel() < 2:
        raise ValueError(
            f"alphas_cumprod must be 1-D with at least 2 entries, got shape {tuple(a.shape)}"
        )
    if not bool(torch.isfinite(a).all()) or not bool(((a > 0) & (a < 1)).all()):
        raise ValueError(
            f"alphas_cumprod must lie in (0, 1) (a zero-terminal-SNR table needs its last "
            f"entry > 0), got values in [{float(a.min())}, {float(a.max())}]"
        )
    if not bool((a[1:] < a[:-1]).all()):
        raise ValueError("alphas_cumprod must be strictly decreasing in k")
    return a


@configurable
class DiscreteSchedule(Schedule):
    """Continuous-time schedule through the table ``alphas_cumprod`` (K,) of a discrete-time
    diffusion (DDPM, diffusers' ``alphas_cumprod``).

    Args:
        alphas_cumprod: ᾱ_k, k = 0 … K−1, in (0, 1), strictly decreasing (a tensor, so a
            checkpoint's configuration can store it).
        interp: ``"sigma_over_alpha"`` (default) or ``"log_snr"``: what is linear in k
            between integer k.

    Time map t = k/(K−1): t = 0 is k = 0 (least noise), t = 1 is k = K−1. At integer k the
    schedule is exact: α_t² = ᾱ_k (λ_k = log ᾱ_k − log(1 − ᾱ_k)). Between integers it
    interpolates linearly in k, either

    * ``interp="sigma_over_alpha"`` (default): s = σ/α = e^{−λ/2} linear in k, as diffusers'
      σ-based schedulers (DPMSolverMultistep, UniPC, EulerDiscrete) interpolate their
      ``sigmas``; λ(t) = −2 log s(k), λ'(t) = −2 (K−1) (s_{j+1} − s_j)/s(k); or
    * ``interp="log_snr"``: λ linear in k (EulerDiscrete's ``"log_linear"``),
      λ'(t) = (K−1)(λ_{j+1} − λ_j),

    with j = ⌊k⌋ (clamped to [0, K−2]; the right-hand derivative at integer k). Both are
    strictly decreasing when ᾱ is, and differ between integers by up to ~4e-4 in λ on the
    usual linear-β table.

    The tables λ_k and s_k are kept in float64 (non-persistent buffers: they follow
    ``.to(device)`` and are rebuilt from ``alphas_cumprod`` on loading); every method
    computes in ``t``'s dtype.
    """

    def __init__(self, alphas_cumprod, interp: str = "sigma_over_alpha"):
        super().__init__()
        if interp not in INTERPOLATIONS:
            raise ValueError(f"interp must be one of {INTERPOLATIONS}, got {interp!r}")
        a = _table(alphas_cumprod)
        lam = torch.log(a) - torch.log1p(-a)
        self.interp = interp
        self.num_train_timesteps = int(a.numel())
        self.register_buffer("lam_table", lam, persistent=False)
        self.register_buffer("s_table", torch.exp(-0.5 * lam), persistent=False)
        self.logsnr_min, self.logsnr_max = float(lam[-1]), float(lam[0])

    # ------------------------------------------------------------- time <-> timestep
    def timestep(self, t: Tensor) -> Tensor:
        """The (float) timestep k = t (K−1) of time ``t``, same shape and dtype."""
        return t * (self.num_train_timesteps - 1)

    def time(self, k) -> Tensor:
        """The time t = k/(K−1) of timestep(s) ``k`` (int, float or tensor; float result)."""
        k = torch.as_tensor(k)
        if not k.is_floating_point():
            k = k.to(torch.get_default_dtype())
        return k / (self.num_train_timesteps - 1)

    # ------------------------------------------------------------- λ and λ'
    def _segment(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(j, frac, K−1): the table interval of t and the position in it."""
        scale = self.num_train_timesteps - 1
        k = t * scale
        j = torch.floor(k.detach()).clamp(0, scale - 1).long()
        return j, k - j.to(k.dtype), scale

    def _s(self, j: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
        s = self.s_table.to(f.dtype)
        s0, s1 = s[j], s[j + 1]
        return s0 + f * (s1 - s0), s1 - s0

    def log_snr(self, t: Tensor) -> Tensor:
        j, f, _ = self._segment(t)
        if self.interp == "log_snr":
            lam = self.lam_table.to(f.dtype)
            return lam[j] + f * (lam[j + 1] - lam[j])
        s, _ = self._s(j, f)
        return -2.0 * torch.log(s)

    def dlog_snr(self, t: Tensor) -> Tensor:
        j, f, scale = self._segment(t)
        if self.interp == "log_snr":
            lam = self.lam_table.to(f.dtype)
            return (lam[j + 1] - lam[j]) * scale
        s, ds = self._s(j, f)
        return -2.0 * scale * ds / s

    def extra_repr(self) -> str:
        return (
            f"K={self.num_train_timesteps}, interp={self.interp!r}, "
            f"logsnr_min={self.logsnr_min:.4g}, logsnr_max={self.logsnr_max:.4g}"
        )
