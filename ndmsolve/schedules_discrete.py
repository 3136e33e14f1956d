"""A schedule given by a table ᾱ_k (k = 0 … K−1) of a discrete-time diffusion (DDPM,
diffusers' ``alphas_cumprod``), as a continuous-time ``Schedule``.

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
"""

from __future__ import annotations

import torch
from torch import Tensor

from .config import configurable
from .schedules import Schedule

__all__ = ["DiscreteSchedule", "INTERPOLATIONS"]

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
    """Continuous-time schedule through the table ``alphas_cumprod`` (K,) (module docstring).

    Args:
        alphas_cumprod: ᾱ_k, k = 0 … K−1, in (0, 1), strictly decreasing (a tensor, so a
            checkpoint's configuration can store it).
        interp: ``"sigma_over_alpha"`` (default) or ``"log_snr"``: what is linear in k
            between integer k.

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
