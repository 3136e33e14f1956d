"""Discrete-time NDM samplers: DDIM (deterministic) and ancestral (DDPM-like) steps.

A step from t to s < t evaluates the predictor once, x̂ = x̂_θ(z_t, t), and moves z
along the NDM posterior with x̂ in place of x (``NDM.posterior``; Song et al. 2021, DDIM):

    mean = α_s F(x̂, s) + sqrt(σ_s² − η² σ̃²) (z_t − α_t F(x̂, t)) / σ_t,   var = η² σ̃²,
    σ̃² = σ_s² (1 − e^{λ_t − λ_s}).

``eta = 0`` (``ddim``): z_s = mean (deterministic; a first-order discretisation of the
PF-ODE in the NDM's own coordinates). ``eta = 1`` (``ancestral``): z_s ~ N(mean, var).
With F = identity these are exactly DDIM and DDPM ancestral sampling.

The last step lands on the grid's last time (usually s = 0), where the posterior is
still well defined because λ(0) = λ_max is finite; the state returned is z at that
time, like every continuous sampler. NFE = one predictor evaluation per step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..solvers.base import FAULTS, Solution, check_grid_step, grid_solution, locate
from ..solvers.registry import register
from ..tensors import bcast

__all__ = ["discrete_solve", "ddim_step", "ancestral_step"]


def _posterior_step(
    model, z: Tensor, t: Tensor, s: Tensor, eta: float, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """One step z_t -> z_s; t, s of shape (B,). Returns (z_s, x̂)."""
    x_hat = model.x_hat(z, t)
    mean, var = model.posterior(z, t, s, x_hat, eta)
    if eta == 0.0:
        return mean, x_hat
    noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    return mean + bcast(var.sqrt(), z) * noise, x_hat


def ddim_step(model, z: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """Deterministic NDM-DDIM step from t to s (each (B,) or 0-dim); one predictor call."""
    t, s = _bt(t, z), _bt(s, z)
    return _posterior_step(model, z, t, s, 0.0, None)[0]


def ancestral_step(
    model,
    z: Tensor,
    t: Tensor,
    s: Tensor,
    *,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Stochastic step z_s ~ p_θ(z_s | z_t) (η = 1: the NDM ancestral posterior)."""
    t, s = _bt(t, z), _bt(s, z)
    return _posterior_step(model, z, t, s, float(eta), generator)[0]


def _bt(t, z: Tensor) -> Tensor:
    t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
    return t.expand(z.shape[0]) if t.ndim == 0 else t


def discrete_solve(
    model,
    z: Tensor,
    grid: Tensor,
    *,
    eta: float,
    generator: torch.Generator | None = None,
    save: bool = False,
    method: str = "",
) -> Solution:
    """Run the discrete sampler over ``grid`` (strictly decreasing, (N+1,)) from state ``z``.

    Returns a ``Solution`` with ``nfe = n_accepted = N``; ``ts``/``ys`` hold the whole
    path (grid and the N+1 states) when ``save``.
    """
    eta = float(eta)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    grid = grid.to(dtype=z.dtype, device=z.device)
    B = z.shape[0]
    ys = [z] if save else None
    nfe = 0
    for i in range(grid.shape[0] - 1):
        t, s = grid[i].expand(B), grid[i + 1].expand(B)
        try:
            z, _ = _posterior_step(model, z, t, s, eta, generator)
        except FAULTS as e:  # x̂_θ(z, t) is NaN/inf: name the step
            ta, tb = float(grid[i]), float(grid[i + 1])
            partial = Solution(y=z, nfe=nfe, n_accepted=i, method=method, t=ta)
            raise locate(e, method or "grid", i, ta, tb, partial=partial) from None
        nfe += 1
        if save:
            ys.append(z)
        check_grid_step(z, grid, i, nfe=nfe, method=method)
    return grid_solution(z, grid, ys, nfe=nfe, method=method, stats={"eta": eta})


def _posterior_method(default_eta: float):
    def run(
        model,
        z: Tensor,
        grid: Tensor,
        *,
        generator=None,
        save: bool = False,
        method: str = "",
        eta: float | None = None,
    ) -> Solution:
        return discrete_solve(
            model,
            z,
            grid,
            eta=default_eta if eta is None else eta,
            generator=generator,
            save=save,
            method=method,
        )

    return run


register(
    "ddim",
    family="model",
    stepping="fixed",
    order=1,
    nfe_per_step=1,
    run=_posterior_method(0.0),
    options=("eta",),
    description="NDM posterior step with x_hat frozen, eta = 0 (deterministic)",
)
register(
    "ancestral",
    family="model",
    stepping="fixed",
    order=1,
    nfe_per_step=1,
    run=_posterior_method(1.0),
    options=("eta",),
    description="NDM ancestral posterior sampling, eta = 1",
)
