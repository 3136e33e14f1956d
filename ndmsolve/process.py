"""The Neural Diffusion Model: a learned forward process and the reverse process built on it.

Forward marginal  q(z_t | x) = N(α_t F(x, t), σ_t² I).
Conditional SDE   dz = f(z, t, x) dt + g(t) dw,  f = (d/dt log α_t) z + α_t ∂_t F(x, t),
                  g² = −σ_t² λ'(t).
Model             x̂ = x̂_θ(z, t) in place of x:
                  score  s = −(z − α_t F(x̂, t)) / σ_t²
                  reverse SDE drift  f(z, t, x̂) − g² s   (t from 1 to 0)
                  PF-ODE velocity    f(z, t, x̂) − ½ g² s
∂_t F(x̂, t) is taken with x̂ held fixed.

Shapes: data and states (B, *shape); time (B,) (a 0-dim t is broadcast over the batch).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ._checks import (
    as_generator,
    check_batch_time,
    check_finite,
    check_output,
    model_dtype_device,
)
from .config import configurable
from .schedules import Schedule, make_schedule
from .tensors import bcast
from .transforms import IdentityTransform

__all__ = ["NDM", "NDMFields", "TransformAtX", "DF_METHODS"]

DF_METHODS = ("auto", "analytic", "func", "autograd", "fd")


class NDMFields(NamedTuple):
    """Everything one evaluation of the model gives at (z, t); tensors (B, *shape), g2 (B,)."""

    x_hat: Tensor
    F: Tensor  # F(x̂, t)
    dF: Tensor  # ∂_t F(x̂, t)
    score: Tensor
    drift: Tensor  # forward drift f(z, t, x̂)
    g2: Tensor


class TransformAtX:
    """F_φ(x, ·) at one fixed batch x (B, *shape), made by ``NDM.at_x(x)``: the losses need
    F at several times and ∂_t F at one; this spends the fewest transform passes on them.

    * a transform with ``features`` (t-free network, e.g. ``TimeBasisTransform``): one pass
      on first use, shared by every later call at any t;
    * otherwise ``F(t1, t2, ...)`` is one call over the stacked batch [x; x; ...] and
      ``F_and_dF(t)`` one pass with the derivative (the NDM's ``dF`` method);
    * ``F_zero()`` is x itself, no pass, when the transform declares ``identity_at_zero``.

    Outputs are checked like ``NDM.F`` (shape; finiteness when the NDM's ``check`` is on).
    """

    def __init__(self, model: NDM, x: Tensor):
        self.model, self.x = model, x
        self._h: Tensor | None = None
        self._features = hasattr(model.transform, "features") and hasattr(
            model.transform, "from_features"
        )

    def _check(self, name: str, out: Tensor) -> Tensor:
        return check_output(name, out, self.x, self.model.check)

    def _from_features(self, t: Tensor) -> tuple[Tensor, Tensor]:
        if self._h is None:
            self._h = self.model.transform.features(self.x)
        return self.model.transform.from_features(self.x, self._h, t)

    def F(self, *ts: Tensor) -> list[Tensor]:
        """[F(x, t) for t in ts], each t (B,), each output (B, *shape)."""
        ts = [check_batch_time(self.x, t) for t in ts]
        if self._features:
            return [self._check("transform", self._from_features(t)[0]) for t in ts]
        n = len(ts)
        xs = self.x if n == 1 else torch.cat([self.x] * n)
        out = self.model.transform(xs, ts[0] if n == 1 else torch.cat(ts))
        check_output("transform", out, xs, self.model.check)
        return list(out.chunk(n)) if n > 1 else [out]

    def F_and_dF(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(F(x, t), ∂_t F(x, t)) at fixed x, each (B, *shape)."""
        t = check_batch_time(self.x, t)
        F, dF = self._from_features(t) if self._features else self.model._F_dF(self.x, t)
        return self._check("transform", F), self._check("transform's time derivative", dF)

    def F_zero(self) -> Tensor:
        """F(x, 0): x itself when the transform declares ``identity_at_zero``."""
        if getattr(self.model.transform, "identity_at_zero", False):
            return self.x
        zero = torch.zeros(self.x.shape[0], dtype=self.x.dtype, device=self.x.device)
        return self.F(zero)[0]


@configurable
class NDM(nn.Module):
    """A Neural Diffusion Model.

    Args:
        predictor: module ``x̂_θ(z, t)``: (B, *shape), (B,) -> (B, *shape).
        transform: module ``F_φ(x, t)`` of the same signature, or ``None`` for the
            identity (a classical diffusion).
        schedule: a ``Schedule``, a name (``"linear"``, ``"cosine"``, ``"learned"``) or
            ``None`` (``LinearLogSNR()``).
        dF: how ∂_t F is obtained: ``"auto"`` (analytic when the transform defines
            ``forward_and_dt``, else ``"func"``), ``"analytic"``, ``"func"``
            (``torch.func.jvp``), ``"autograd"`` (``torch.autograd.functional.jvp``) or
            ``"fd"`` (central finite differences; not exact, for comparison only).
        data_shape: shape of one sample, used by samplers; optional.
        check: validate network outputs (shape always; finiteness when ``True``).
    """

    def __init__(
        self,
        predictor: nn.Module,
        transform: nn.Module | None = None,
        schedule: Schedule | None = None,
        *,
        dF: str = "auto",
        data_shape: tuple | None = None,
        check: bool = True,
    ):
        super().__init__()
        if not callable(predictor):
            raise TypeError(
                f"predictor must be a callable nn.Module, got {type(predictor).__name__}"
            )
        if transform is not None and not callable(transform):
            raise TypeError(
                f"transform must be a callable nn.Module or None, got {type(transform).__name__}"
            )
        if dF not in DF_METHODS:
            raise ValueError(f"dF must be one of {DF_METHODS}, got {dF!r}")
        self.predictor = predictor
        self.transform = IdentityTransform() if transform is None else transform
        self.schedule = make_schedule(schedule)
        if dF == "analytic" and not hasattr(self.transform, "forward_and_dt"):
            raise ValueError("dF='analytic' needs a transform with forward_and_dt(x, t)")
        self.dF_method = dF
        self.data_shape = tuple(data_shape) if data_shape is not None else None
        self.check = check

    # ----------------------------------------------------------------- transform
    def F(self, x: Tensor, t: Tensor) -> Tensor:
        """F_φ(x, t), (B, *shape)."""
        t = check_batch_time(x, t)
        return check_output("transform", self.transform(x, t), x, self.check, self.transform)

    def F_and_dF(self, x: Tensor, t: Tensor, method: str | None = None) -> tuple[Tensor, Tensor]:
        """(F_φ(x, t), ∂_t F_φ(x, t)) at fixed x, each (B, *shape).

        Differentiable w.r.t. x, t and the transform's parameters (except ``"fd"`` in t).
        """
        t = check_batch_time(x, t)
        F, dF = self._F_dF(x, t, method)
        check_output("transform", F, x, self.check, self.transform)
        check_output("transform's time derivative", dF, x, self.check, self.transform)
        return F, dF

    def at_x(self, x: Tensor) -> TransformAtX:
        """F_φ(x, ·) at fixed x, evaluated at several times with the fewest passes."""
        return TransformAtX(self, x)

    def _F_dF(self, x: Tensor, t: Tensor, method: str | None = None) -> tuple[Tensor, Tensor]:
        """``F_and_dF`` for a ``t`` already validated as (B,); outputs not checked."""
        method = method or self.dF_method
        if method not in DF_METHODS:
            raise ValueError(f"method must be one of {DF_METHODS}, got {method!r}")
        if method == "auto":
            method = "analytic" if hasattr(self.transform, "forward_and_dt") else "func"
        if method == "analytic":
            F, dF = self.transform.forward_and_dt(x, t)
        elif method == "func":
            # contiguous: a broadcast (stride-0) t, e.g. from a 0-dim t, cannot carry a tangent.
            t = t.contiguous()
            F, dF = torch.func.jvp(lambda tt: self.transform(x, tt), (t,), (torch.ones_like(t),))
        elif method == "autograd":
            F, dF = torch.autograd.functional.jvp(
                lambda tt: self.transform(x, tt),
                t,
                torch.ones_like(t),
                create_graph=torch.is_grad_enabled(),
            )
        else:
            F, dF = self._fd(x, t)
        return F, dF

    def _fd(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        # Central differences, one-sided inside [0, 1] at the ends; h ~ eps^(1/3).
        h = torch.finfo(x.dtype).eps ** (1 / 3)
        lo, hi = (t - h).clamp(min=0.0), (t + h).clamp(max=1.0)
        F = self.transform(x, t)
        dF = (self.transform(x, hi) - self.transform(x, lo)) / bcast(hi - lo, x)
        return F, dF

    # ----------------------------------------------------------------- forward process
    def marginal(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean α_t F(x, t) (B, *shape) and std σ_t (B,) of q(z_t | x)."""
        t = check_batch_time(x, t)
        alpha, sigma = self.schedule(t)
        return bcast(alpha, x) * self.F(x, t), sigma

    def sample_marginal(self, x: Tensor, t: Tensor, generator=None) -> tuple[Tensor, Tensor]:
        """z_t = α_t F(x, t) + σ_t ε; returns (z_t, ε), each (B, *shape)."""
        mean, sigma = self.marginal(x, t)
        generator = as_generator(generator, x.device)
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return mean + bcast(sigma, x) * eps, eps

    def g2(self, t: Tensor) -> Tensor:
        """g²(t) = −σ_t² λ'(t), (B,)."""
        return self.schedule.g2(t)

    def forward_drift(self, z: Tensor, t: Tensor, x: Tensor) -> Tensor:
        """f(z, t, x) = (d/dt log α_t) z + α_t ∂_t F(x, t), (B, *shape)."""
        t = check_batch_time(z, t)
        if x.shape != z.shape:
            raise ValueError(f"x must have z's shape {tuple(z.shape)}, got {tuple(x.shape)}")
        _, dF = self.F_and_dF(x, t)
        alpha, _ = self.schedule(t)
        return bcast(self.schedule.dlog_alpha(t), z) * z + bcast(alpha, z) * dF

    # ----------------------------------------------------------------- reverse process
    def x_hat(self, z: Tensor, t: Tensor) -> Tensor:
        """The predictor x̂_θ(z, t), (B, *shape)."""
        t = check_batch_time(z, t, "z")
        return check_output("predictor", self.predictor(z, t), z, self.check, self.predictor)

    def fields(self, z: Tensor, t: Tensor) -> NDMFields:
        """x̂, F(x̂), ∂_t F(x̂), score, forward drift and g² at (z, t); one predictor call."""
        t = check_batch_time(z, t, "z")
        x_hat = check_output("predictor", self.predictor(z, t), z, False, self.predictor)
        F, dF = self._F_dF(x_hat, t)
        check_output("transform", F, z, False, self.transform)
        check_output("transform's time derivative", dF, z, False, self.transform)
        if self.check:  # one host sync per evaluation: this is the samplers' hot path
            check_finite(
                (
                    ("predictor", x_hat, self.predictor),
                    ("transform", F, self.transform),
                    ("transform's time derivative", dF, self.transform),
                )
            )
        sched = self.schedule
        alpha, sigma = sched.alpha_sigma(t)  # t checked above
        lam_dot = sched.dlog_snr(t)
        alpha_b, sigma2_b = bcast(alpha, z), bcast(sigma, z) ** 2
        score = -(z - alpha_b * F) / sigma2_b
        drift = bcast(0.5 * sigma**2 * lam_dot, z) * z + alpha_b * dF
        return NDMFields(x_hat, F, dF, score, drift, -(sigma**2) * lam_dot)

    def score(self, z: Tensor, t: Tensor) -> Tensor:
        """s(z, t) = −(z − α_t F(x̂, t)) / σ_t², (B, *shape)."""
        t = check_batch_time(z, t, "z")
        x_hat = self.x_hat(z, t)
        alpha, sigma = self.schedule(t)
        return -(z - bcast(alpha, z) * self.F(x_hat, t)) / bcast(sigma, z) ** 2

    def reverse_drift(self, z: Tensor, t: Tensor) -> Tensor:
        """Drift of the reverse SDE, f(z, t, x̂) − g² s(z, t), (B, *shape)."""
        fl = self.fields(z, t)
        return fl.drift - bcast(fl.g2, z) * fl.score

    def diffusion(self, t: Tensor) -> Tensor:
        """g(t) = sqrt(g²(t)), (B,)."""
        return self.schedule.g2(t).sqrt()

    def velocity(self, z: Tensor, t: Tensor) -> Tensor:
        """PF-ODE velocity f(z, t, x̂) − ½ g² s(z, t), (B, *shape)."""
        fl = self.fields(z, t)
        return fl.drift - bcast(0.5 * fl.g2, z) * fl.score

    # ----------------------------------------------------------------- discrete time
    def posterior(
        self, z_t: Tensor, t: Tensor, s: Tensor, x: Tensor, eta: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """q(z_s | z_t, x) for s < t: mean (B, *shape) and variance (B,).

        mean = α_s F(x, s) + sqrt(σ_s² − η² σ̃²) (z_t − α_t F(x, t)) / σ_t,  var = η² σ̃²,
        σ̃² = σ_s² (1 − e^{λ_t − λ_s}) (DDPM's posterior variance when F = identity).
        η = 1 is the ancestral (DDPM) posterior, η = 0 the deterministic DDIM map.
        With x̂ in place of x this is the model's p_θ(z_s | z_t).
        """
        t = check_batch_time(z_t, t, "z_t")
        s = check_batch_time(z_t, s, "z_t", "s")
        if x.shape != z_t.shape:
            raise ValueError(f"x must have z_t's shape {tuple(z_t.shape)}, got {tuple(x.shape)}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        return self.posterior_from_F(z_t, t, s, self.F(x, t), self.F(x, s), eta)

    def posterior_from_F(
        self, z_t: Tensor, t: Tensor, s: Tensor, F_t: Tensor, F_s: Tensor, eta: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """``posterior`` given F(x, t) and F(x, s) (B, *shape); t, s already checked (B,)."""
        sched = self.schedule
        lam_t, lam_s = sched.log_snr(t), sched.log_snr(s)
        if not bool((lam_s > lam_t).all()):
            raise ValueError("s must be earlier than t (s < t) for every sample")
        alpha_t, sigma_t = sched(t)
        alpha_s, sigma_s = sched(s)
        var_tilde = sigma_s**2 * -torch.expm1(lam_t - lam_s)
        var = eta**2 * var_tilde
        coef = torch.sqrt((sigma_s**2 - var).clamp(min=0.0)) / sigma_t
        eps_dir = z_t - bcast(alpha_t, z_t) * F_t
        mean = bcast(alpha_s, z_t) * F_s + bcast(coef, z_t) * eps_dir
        return mean, var

    # ----------------------------------------------------------------- prior
    def prior_sample(
        self,
        n: int,
        shape: tuple | None = None,
        *,
        generator=None,
        dtype: torch.dtype | None = None,
        device=None,
    ) -> Tensor:
        """n draws from the prior N(0, I) at t = 1, (n, *shape), in the model's dtype and
        device unless given; ``generator`` a ``torch.Generator`` or an int seed."""
        shape = self._shape(shape)
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        m_dtype, m_device = model_dtype_device(self)
        dtype = dtype or m_dtype or torch.get_default_dtype()
        device = device if device is not None else m_device
        generator = as_generator(generator, device)
        return torch.randn((n, *shape), generator=generator, dtype=dtype, device=device)

    def _shape(self, shape: tuple | None) -> tuple:
        shape = self.data_shape if shape is None else tuple(shape)
        if shape is None:
            raise ValueError(
                "shape is needed: pass shape=(...) or build the NDM with data_shape=(...)"
            )
        return shape
