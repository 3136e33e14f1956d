"""Variance-preserving noise schedules given by their log signal-to-noise ratio λ(t).

α_t² = sigmoid(λ(t)), σ_t² = sigmoid(−λ(t)), λ strictly decreasing on t ∈ [0, 1].
Identities used across the package (tested against autograd):

    d/dt log α_t = ½ σ_t² λ'(t)
    g²(t)        = σ_t² d/dt log(σ_t²/α_t²) = −σ_t² λ'(t)  > 0

Every method takes ``t`` of shape ``(B,)`` (or any shape) and returns a tensor of the
same shape.
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
