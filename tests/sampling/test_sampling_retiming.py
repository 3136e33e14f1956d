"""Re-timing an NDM leaves its continuous-time ELBO unchanged.

With τ: [0, 1] → [0, 1] increasing, τ(0) = 0, τ(1) = 1, the re-timed model reads its schedule,
transform and predictor at τ(t). Its forward path is the old one at τ(t), so f and g² pick up
a factor τ'(t) and the diffusion integrand ½ ‖f − f̂‖² / g² (per unit t) picks up τ'(t):
the integral over t is unchanged, and so are the prior and reconstruction ends. The OT studies
rely on this ("re-timing is free"), and the metric ``retimed_kinetic_ratio`` on the paths being
the same curves.
"""

import math

import torch
from torch import nn

import ndmsolve as nd
from ndmsolve.metrics import kinetic_ratio, retimed_kinetic_ratio
from ndmsolve.objectives import continuous_loss
from ndmsolve.schedules import LinearLogSNR, Schedule

A = 1.5  # τ(t) = (e^{A t} − 1) / (e^A − 1)


def tau(t):
    return torch.expm1(A * t) / math.expm1(A)


def dtau(t):
    return A * torch.exp(A * t) / math.expm1(A)


class Field(nn.Module):
    """A smooth nonlinear (input, t) -> output map, x + t·tanh(W x + b t + c)."""

    def __init__(self, d, seed, scale):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(scale * torch.randn(d, d, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(d, generator=g, dtype=torch.float64))
        self.c = nn.Parameter(0.3 * torch.randn(d, generator=g, dtype=torch.float64))

    def forward(self, x, t):
        return x + t[:, None] * torch.tanh(x @ self.W.T + t[:, None] * self.b + self.c)


class AtTau(nn.Module):
    """``net`` read at τ(t)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return self.net(x, tau(t))


class RetimedSchedule(Schedule):
    def __init__(self, base):
        super().__init__()
        self.base = base
        self.logsnr_min, self.logsnr_max = base.logsnr_min, base.logsnr_max

    def log_snr(self, t):
        return self.base.log_snr(tau(t))


def _models(retime_transform=True):
    schedule = LinearLogSNR(-6.0, 6.0)
    predictor, transform = Field(2, 0, 0.8), Field(2, 1, 1.2)
    base = nd.NDM(predictor, transform, schedule)
    retimed = nd.NDM(
        AtTau(predictor),
        AtTau(transform) if retime_transform else transform,
        RetimedSchedule(schedule),
    )
    return base, retimed


def _draws(n=64, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64).clamp(1e-3, 1 - 1e-3)
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x, t, eps


def test_retimed_diffusion_integrand_is_the_old_one_times_dtau():
    base, retimed = _models()
    x, t, eps = _draws()
    old = continuous_loss(base, x, t=tau(t), eps=eps)
    new = continuous_loss(retimed, x, t=t, eps=eps)
    assert torch.allclose(new.diffusion, dtau(t) * old.diffusion, rtol=1e-10, atol=1e-12)
    assert torch.allclose(new.prior, old.prior, rtol=1e-12)
    assert torch.allclose(new.reconstruction, old.reconstruction, rtol=1e-12)
    assert old.diffusion.abs().min() > 1e-6  # a non-trivial integrand


def test_retimed_elbo_integral_is_unchanged():
    # ∫_0^1 by Gauss–Legendre in t for both models, at fixed (x, ε): equal ELBOs.
    base, retimed = _models()
    x, _, eps = _draws(n=8)
    nodes, weights = (torch.as_tensor(v, dtype=torch.float64) for v in _gauss_legendre(96))
    totals = []
    for model in (base, retimed):
        integral = torch.zeros(len(x), dtype=torch.float64)
        for s, w in zip(nodes, weights):
            loss = continuous_loss(model, x, t=torch.full((len(x),), float(s)), eps=eps)
            integral += w * loss.diffusion
        totals.append(integral)
    assert torch.allclose(totals[0], totals[1], rtol=1e-6)


def test_retiming_only_the_schedule_changes_the_elbo():
    # Negative control: the identity above needs every part read at τ(t).
    base, partial = _models(retime_transform=False)
    x, t, eps = _draws()
    old = continuous_loss(base, x, t=tau(t), eps=eps)
    new = continuous_loss(partial, x, t=t, eps=eps)
    assert not torch.allclose(new.diffusion, dtau(t) * old.diffusion, rtol=1e-3)


def test_retimed_paths_trace_the_same_curves():
    # The PF-ODE of the re-timed model runs along the same curves: its re-timed kinetic ratio
    # is the old one, while the plain kinetic ratio (which sees the speed profile) changes.
    base, retimed = _models()
    z1 = torch.randn(256, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    steps = 400
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    paths = []
    for model in (base, retimed):
        sol = nd.sample(model, z1=z1, method="rk4", steps=steps, return_path=True)
        paths.append(sol.path)
    old, new = (retimed_kinetic_ratio(p, ts) for p in paths)
    assert abs(new / old - 1) < 2e-3
    assert abs(kinetic_ratio(paths[1], ts) / kinetic_ratio(paths[0], ts) - 1) > 0.02


def _gauss_legendre(n):
    import numpy as np

    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1), 0.5 * w
