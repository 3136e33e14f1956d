"""k-diffusion's samplers on an ndmsolve model (a classical diffusion, F = identity), for
``benchmarks.fewstep``.

k-diffusion's ``sampling.py`` is loaded alone from its file (``import k_diffusion`` pulls
torchvision and more): a stub parent package supplies the one helper it uses
(``utils.append_dims``).
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import torch

KD_SAMPLERS = ("euler", "heun", "dpm_2", "lms", "dpmpp_2m", "dpmpp_3m")
TWO_EVAL = {"heun", "dpm_2"}  # k-diffusion samplers with 2 evaluations per step (last: 1)


def load_kdiffusion():
    """k-diffusion's sampling module loaded alone, or (None, reason)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None, "k-diffusion is not installed (pip install --no-deps k-diffusion)"
    path = Path(list(spec.submodule_search_locations)[0]) / "sampling.py"
    pkg = types.ModuleType("_kdiffusion")
    pkg.__path__ = []  # a package, so "from . import utils" resolves to the stub below
    utils = types.ModuleType("_kdiffusion.utils")

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    pkg.utils = utils
    sys.modules.setdefault("_kdiffusion", pkg)
    sys.modules.setdefault("_kdiffusion.utils", utils)
    try:
        mspec = importlib.util.spec_from_file_location("_kdiffusion.sampling", path)
        mod = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - report why and go on without it
        return None, f"loading {path} failed: {type(e).__name__}: {e}"
    version = None
    try:
        from importlib.metadata import version as _v

        version = _v("k-diffusion")
    except Exception:  # noqa: BLE001
        pass
    return mod, version


class KDDenoiser(torch.nn.Module):
    """k-diffusion's D(x, σ) for a classical (F = identity) NDM: x = z/α, σ = σ_t/α_t."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x, sigma):
        self.calls += 1
        lam = -2.0 * torch.log(sigma)
        t = t_of_lambda(self.model.schedule, lam).clamp(0.0, 1.0).to(x.dtype)
        alpha, _ = self.model.schedule(t)
        return self.model.x_hat(x * alpha[:, None], t)


def t_of_lambda(schedule, lam):
    """``schedule.t_of_log_snr(lam)``, ``lam`` first clamped to the schedule's range."""
    with torch.no_grad():
        ends = schedule.log_snr(torch.tensor([1.0, 0.0], dtype=torch.float64))
    # k-diffusion's float32 sigmas can round just past the schedule's ends
    lam64 = lam.double().clamp(float(ends[0]), float(ends[1]))
    return schedule.t_of_log_snr(lam64).to(lam.dtype)


def kd_sample(kd, model, z1, sampler: str, grid: str, nfe: int, s_min: float, rho=None):
    """Run a k-diffusion sampler with ``nfe`` evaluations from σ_max = s(t = 1) to ``s_min``
    and then to σ = 0; returns (x, counted NFE, steps), or None when the budget does not
    fit (two-evaluation samplers: odd budgets only)."""
    n = (nfe + 1) // 2 if sampler in TWO_EVAL else nfe
    if sampler in TWO_EVAL and 2 * n - 1 != nfe:
        return None
    lam1 = float(model.schedule.log_snr(torch.tensor([1.0], dtype=torch.float64)))
    s_max = math.exp(-0.5 * lam1)
    if grid == "karras":
        sigmas = kd.get_sigmas_karras(n, s_min, s_max, rho=rho)
    else:
        sigmas = kd.get_sigmas_exponential(n, s_min, s_max)
    sigmas = sigmas.to(z1.dtype)
    den = KDDenoiser(model)
    alpha1, _ = model.schedule(torch.ones(1, dtype=z1.dtype))
    x = z1 / alpha1  # z_1 = α_1 x at σ_max
    fn = getattr(kd, "sample_dpmpp_3m_sde" if sampler == "dpmpp_3m" else f"sample_{sampler}")
    kwargs = {"eta": 0.0} if sampler == "dpmpp_3m" else {}
    with torch.no_grad():
        out = fn(den, x, sigmas, disable=True, **kwargs)
    return out, den.calls, n
