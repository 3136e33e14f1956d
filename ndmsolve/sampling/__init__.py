"""Sampling from an NDM: from the prior z_1 ~ N(0, I) at t = 1 down to t = 0.

Four families of methods, one entry point ``sample``:

* **ODE** (``euler``, ``midpoint``, ``heun``, ``rk4``; adaptive ``bosh3``, ``dopri5``,
  ``tsit5``; ``torchdiffeq:<m>``): the probability-flow ODE dz/dt = v(z, t)
  (``NDM.velocity``). Deterministic given z_1.
* **SDE** (``euler_maruyama`` and the higher-order / adaptive SDE schemes of
  ``ndmsolve.solvers.sde``; ``torchsde:<m>``): the reverse SDE
  dz = [f(z, t, x̂) − g² s(z, t)] dt + g(t) dw̄ run from t = 1 to 0 (``NDM.reverse_drift``);
  the noise is additive (g depends on t only) and diagonal, g(t)·1. Brownian increments
  come from ``generator``.
* **Discrete** (``ddim``, ``ancestral``): steps along the NDM posterior
  p_θ(z_s | z_t) = q(z_s | z_t, x = x̂_θ(z_t, t)) (``NDM.posterior``), η = 0 for ``ddim``
  (deterministic), η = 1 for ``ancestral``; see ``ndmsolve.sampling.discrete``.
* **Multistep** (``dpmpp_2m``, ``dpmpp_3m``, ``ei_3m``, ``unipc_1m``, ``unipc_2m``,
  ``unipc_3m``): the NDM-DDIM step with x̂ replaced by a combination of the last
  predictions (DPM-Solver++ and UniPC when F = identity); one predictor call per step, no
  JVP of F; see ``ndmsolve.sampling.multistep``.

The discrete and multistep samplers step with the model itself: they are registered in
``nd.solvers.METHODS`` with family ``"model"`` (``nd.sample`` only).

What is returned. Every method returns **z at the last time of the grid** (t = 0 by
default), i.e. a draw from (an approximation of) q(z_0) = ∫ N(α_0 F(x, 0), σ_0² I) p(x) dx
= ∫ N(α_0 x, σ_0² I) p(x) dx. The schedule keeps λ(0) = λ_max finite, so this is the data
blurred by σ_0 = sigmoid(−λ_max)^{1/2} (e.g. 6.7e-3 for λ_max = 10) and scaled by
α_0 ≈ 1. The discrete samplers also end with a posterior step to s = 0 (well defined
because λ_max is finite), not with x̂. Pass ``denoise=True`` to return x̂_θ(z_0, t_min)
instead (one more predictor evaluation, counted in ``nfe``).

Both ends of [0, 1] are safe: λ ∈ [λ_min, λ_max] is finite there, so α, σ, g² and the
PF-ODE are well defined on the closed interval. Times handed to the model by a solver
are clamped to [0, 1] (a stage time can round to −1e-17).

Sampling runs under ``torch.no_grad()``: no graph is built (the NDM's ∂_t F uses
forward-mode AD / analytic derivatives, which do not need one). The model's train/eval
mode is left as it is.

Modules: ``api`` (``sample``, ``SampleResult``), ``grids`` (time grids), ``fields``
(the NDM's fields for ``nd.solve``), ``discrete`` and ``multistep`` (the model-based
samplers; importing them registers them).
"""

from . import discrete, multistep  # noqa: F401  (registers the model-based samplers)
from .api import SampleResult, sample, sampling_methods
from .grids import (
    DEFAULT_STEPS,
    GRID_KINDS,
    KARRAS_RHO,
    check_grid,
    default_grid_kind,
    make_time_grid,
)

__all__ = [
    "sample",
    "SampleResult",
    "make_time_grid",
    "check_grid",
    "sampling_methods",
    "DEFAULT_STEPS",
    "default_grid_kind",
]
