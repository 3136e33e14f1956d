"""Closed-form NDMs: Gaussian-mixture data with a transform affine in x.

With F(x, t) = a(t) ⊙ x + b(t) and x ~ Σ_k π_k N(m_k, S_k), every marginal q(z_t) is a
Gaussian mixture and the posterior mean E[x | z_t] is closed form. Because F is affine
in x, plugging x̂ = E[x | z_t] into the NDM gives the exact marginal score and the exact
probability-flow velocity: E[F(x,t) | z] = F(E[x | z], t), likewise for ∂_t F. This is
the reference model the tests of samplers and likelihoods are checked against.

Data here are flat vectors, shape (B, d).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._checks import seeded
from .schedules import Schedule

__all__ = ["AffineTimeTransform", "GaussianMixture", "ExactPredictor", "UniformBoxes"]


class AffineTimeTransform(nn.Module):
    """F(x, t) = a(t) ⊙ x + b(t), a(t) = 1 + a1 t + a2 t², b(t) = b1 t + b2 t².

    F(x, 0) = x. ∂_t F = (a1 + 2 a2 t) ⊙ x + b1 + 2 b2 t is given analytically.
    a1, a2, b1, b2: tensors of shape (d,); learnable when ``learnable=True``.
    Keep 1 + a1 t + a2 t² away from 0 on [0, 1] so that F is invertible.
    """

    identity_at_zero = True

    def __init__(self, a1: Tensor, a2: Tensor, b1: Tensor, b2: Tensor, learnable: bool = False):
        super().__init__()
        params = {"a1": a1, "a2": a2, "b1": b1, "b2": b2}
        shapes = {tuple(torch.as_tensor(v).shape) for v in params.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"a1, a2, b1, b2 must all have one shape (d,), got {shapes}")
        for k, v in params.items():
            v = torch.as_tensor(v)
            # Keep a floating tensor's own dtype: float64 coefficients must not be rounded.
            v = (v if v.is_floating_point() else v.to(torch.get_default_dtype())).clone()
            if learnable:
                setattr(self, k, nn.Parameter(v))
            else:
                self.register_buffer(k, v)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """a(t), b(t), a'(t), b'(t), each (B, d)."""
        tt = t.unsqueeze(-1)
        a1, a2, b1, b2 = (p.to(t.dtype) for p in (self.a1, self.a2, self.b1, self.b2))
        return 1 + a1 * tt + a2 * tt**2, b1 * tt + b2 * tt**2, a1 + 2 * a2 * tt, b1 + 2 * b2 * tt

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        a, b, _, _ = self.coefficients(t)
        return a * x + b

    def forward_and_dt(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        a, b, da, db = self.coefficients(t)
        return a * x + b, da * x + db


def _affine_coeffs(transform: nn.Module | None, t: Tensor, d: int):
    if transform is None or transform.__class__.__name__ == "IdentityTransform":
        ones = torch.ones(t.shape[0], d, dtype=t.dtype, device=t.device)
        return ones, torch.zeros_like(ones)
    if not isinstance(transform, AffineTimeTransform):
        raise TypeError(
            f"transform must be None, an IdentityTransform or an AffineTimeTransform for a "
            f"closed form, got {type(transform).__name__}"
        )
    a, b, _, _ = transform.coefficients(t)
    return a, b


class GaussianMixture:
    """x ~ Σ_k π_k N(m_k, S_k) in d dimensions.

    Args:
        weights: (K,) positive, normalised here.
        means: (K, d).
        covs: (K, d, d) symmetric positive definite.
    """

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor):
        weights, means, covs = (torch.as_tensor(v) for v in (weights, means, covs))
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        K, d = means.shape
        if weights.shape != (K,) or not bool((weights > 0).all()):
            raise ValueError(
                f"weights must be positive with shape ({K},), got {tuple(weights.shape)}"
            )
        if covs.shape != (K, d, d):
            raise ValueError(f"covs must have shape ({K}, {d}, {d}), got {tuple(covs.shape)}")
        self.weights = weights / weights.sum()
        self.means, self.covs = means, covs
        self.K, self.d = K, d

    def to(self, dtype=None, device=None) -> GaussianMixture:
        return GaussianMixture(
            *(v.to(dtype=dtype, device=device) for v in (self.weights, self.means, self.covs))
        )

    @seeded
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n draws, (n, d)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        L = torch.linalg.cholesky(self.covs)
        eps = torch.randn(
            n, self.d, generator=generator, dtype=self.means.dtype, device=self.means.device
        )
        return self.means[k] + (L[k] @ eps.unsqueeze(-1)).squeeze(-1)

    def components_at(
        self, t: Tensor, schedule: Schedule, transform
    ) -> tuple[Tensor, Tensor, Tensor]:
        """q(z_t | component k) = N(μ_k, C_k) at times ``t`` (B,): the means μ (B, K, d), the
        covariances C (B, K, d, d) and the gain A = α a (B, d) with z = A ⊙ x + α b + σ ε."""
        alpha, sigma = schedule(t)
        a, b = _affine_coeffs(transform, t, self.d)
        A = alpha.unsqueeze(-1) * a  # (B, d): z = A ⊙ x + α b + σ ε
        mu = A.unsqueeze(1) * self.means + (alpha.unsqueeze(-1) * b).unsqueeze(1)
        cov = A[:, None, :, None] * self.covs * A[:, None, None, :]
        cov = cov + (sigma**2)[:, None, None, None] * torch.eye(
            self.d, dtype=t.dtype, device=t.device
        )
        return mu, cov, A

    def _log_resp(self, z: Tensor, mu: Tensor, cov: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        L = torch.linalg.cholesky(cov)
        diff = (z.unsqueeze(1) - mu).unsqueeze(-1)  # (B, K, d, 1)
        sol = torch.cholesky_solve(diff, L)
        maha = (diff * sol).sum((-2, -1))
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        logp = torch.log(self.weights) - 0.5 * (maha + logdet + self.d * math.log(2 * math.pi))
        return logp, sol.squeeze(-1), L

    def log_prob(self, x: Tensor) -> Tensor:
        """log density of the data, (B,)."""
        mu = self.means.unsqueeze(0).expand(x.shape[0], -1, -1)
        cov = self.covs.unsqueeze(0).expand(x.shape[0], -1, -1, -1)
        return torch.logsumexp(self._log_resp(x, mu, cov)[0], dim=1)

    def marginal_log_prob(self, z: Tensor, t: Tensor, schedule: Schedule, transform=None) -> Tensor:
        """log q(z_t) of the NDM's forward marginal at time t, (B,)."""
        mu, cov, _ = self.components_at(t, schedule, transform)
        return torch.logsumexp(self._log_resp(z, mu, cov)[0], dim=1)

    def posterior_mean(self, z: Tensor, t: Tensor, schedule: Schedule, transform=None) -> Tensor:
        """E[x | z_t = z], (B, d)."""
        mu, cov, A = self.components_at(t, schedule, transform)
        logp, sol, _ = self._log_resp(z, mu, cov)
        r = torch.softmax(logp, dim=1)  # (B, K)
        # E[x | z, k] = m_k + S_k A C_k^{-1} (z − μ_k)
        cond = self.means + (self.covs @ (A.unsqueeze(1) * sol).unsqueeze(-1)).squeeze(-1)
        return (r.unsqueeze(-1) * cond).sum(1)

    def posterior_mean_shared(
        self, z: Tensor, t: Tensor, schedule: Schedule, transform=None
    ) -> Tensor:
        """E[x | z_t = z] for a batch at one time: z (B, d), t (B,) with every entry equal
        (only ``t[0]`` is read); (B, d). The same value as ``posterior_mean`` (to rounding,
        ~1e-15 relative), the K covariances factorised once instead of once per sample."""
        mu, cov, A = self.components_at(t[:1], schedule, transform)  # (1, K, ...)
        L = torch.linalg.cholesky(cov[0])  # (K, d, d)
        diff = z.unsqueeze(1) - mu  # (B, K, d)
        sol = torch.cholesky_solve(diff.permute(1, 2, 0), L).permute(2, 0, 1)  # C_k^{-1} diff
        maha = (diff * sol).sum(-1)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        r = torch.softmax(torch.log(self.weights) - 0.5 * (maha + logdet), dim=1)
        # E[x | z, k] = m_k + S_k A C_k^{-1} (z − μ_k)
        cond = self.means + torch.einsum("kij,bkj->bki", self.covs, A[0] * sol)
        return (r.unsqueeze(-1) * cond).sum(1)


class ExactPredictor(nn.Module):
    """x̂(z, t) = E[x | z_t = z] for Gaussian-mixture data under an affine-in-x transform
    (or ``UniformBoxes`` data under the identity); z (B, d), t (B,) -> (B, d).

    ``shared_time=True`` (Gaussian mixtures): a batch whose times are all equal, as every
    fixed-grid sampler's, goes through ``GaussianMixture.posterior_mean_shared`` (the K
    covariances factorised once per call, not once per sample: ~50x faster for 4000
    samples in 2D); mixed times take the general path.
    """

    def __init__(
        self,
        data: GaussianMixture,
        schedule: Schedule,
        transform: nn.Module | None = None,
        *,
        shared_time: bool = False,
    ):
        super().__init__()
        if shared_time and not isinstance(data, GaussianMixture):
            raise TypeError(
                f"shared_time=True needs GaussianMixture data, got {type(data).__name__}"
            )
        self.data, self.schedule, self.transform = data, schedule, transform
        self.shared_time = bool(shared_time)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        data = self.data.to(dtype=z.dtype, device=z.device)
        if self.shared_time and bool(t.min() == t.max()):
            return data.posterior_mean_shared(z, t, self.schedule, self.transform)
        return data.posterior_mean(z, t, self.schedule, self.transform)


def _log_interval_mass(a: Tensor, b: Tensor) -> Tensor:
    """log(Φ(b) − Φ(a)) for a < b, accurate in both tails (the interval reflected to the
    lower tail when it lies right of 0)."""
    flip = (a + b) > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log(-torch.expm1(log_lo - log_hi))


class UniformBoxes:
    """x uniform on a union of K disjoint axis-aligned boxes of equal volume in d dimensions
    (the checkerboard: 8 squares), with the identity transform (a classical diffusion).

    Under z_t = α_t x + σ_t ε, within box k the posterior of x is N(z/α, (σ/α)² I)
    truncated to the box: a product of 1D truncated normals, so E[x | z_t] is closed
    form. With ``ExactPredictor`` it gives the optimal denoiser, whose negative ELBO is
    the floor of any model's under the same schedule.

    Args:
        lo, hi: (K, d) lower and upper corners; every box the same volume.
    """

    def __init__(self, lo: Tensor, hi: Tensor):
        lo, hi = torch.as_tensor(lo), torch.as_tensor(hi)
        if lo.ndim != 2 or lo.shape != hi.shape or not bool((hi > lo).all()):
            raise ValueError("lo and hi must be (K, d) with hi > lo everywhere")
        vol = (hi - lo).prod(1)
        if not torch.allclose(vol, vol[0].expand_as(vol)):
            raise ValueError("every box must have the same volume (equal weights)")
        self.lo, self.hi = lo, hi
        self.K, self.d = lo.shape

    @classmethod
    def checkerboard(cls) -> UniformBoxes:
        """The 8 dark squares (side 2) of ``ndmsolve.data.checkerboard``'s 4×4 board on [−4, 4]²."""
        cells = [(c1, c2) for c1 in range(-2, 2) for c2 in range(-2, 2) if (c1 + c2) % 2 == 0]
        lo = torch.tensor(cells, dtype=torch.float64) * 2.0
        return cls(lo, lo + 2.0)

    def to(self, dtype=None, device=None) -> UniformBoxes:
        return UniformBoxes(
            self.lo.to(dtype=dtype, device=device), self.hi.to(dtype=dtype, device=device)
        )

    def contains(self, x: Tensor) -> Tensor:
        """Whether each point of ``x`` (n, d) lies in one of the boxes: (n,) bool."""
        lo, hi = self.lo.to(x.dtype), self.hi.to(x.dtype)
        inside = (x.unsqueeze(1) >= lo) & (x.unsqueeze(1) <= hi)  # (n, K, d)
        return inside.all(-1).any(-1)

    def entropy(self) -> float:
        """Differential entropy of the data, log(K · box volume) nats."""
        return math.log(self.K * float((self.hi[0] - self.lo[0]).prod()))

    def posterior_mean(self, z: Tensor, t: Tensor, schedule: Schedule, transform=None) -> Tensor:
        """E[x | z_t = z], (B, d)."""
        if transform is not None and transform.__class__.__name__ != "IdentityTransform":
            raise TypeError("UniformBoxes has a closed form for the identity transform only")
        alpha, sigma = schedule(t)
        c = (z / alpha[:, None]).unsqueeze(1)  # (B, 1, d): the likelihood's centre
        s = (sigma / alpha)[:, None, None]
        a, b = (self.lo - c) / s, (self.hi - c) / s  # (B, K, d)
        logm = _log_interval_mass(a, b)
        w = torch.softmax(logm.sum(-1), dim=1)  # (B, K)
        # Truncated-normal mean: c + s (φ(a) − φ(b)) / (Φ(b) − Φ(a)), in log space.
        log_phi = lambda u: -0.5 * u**2 - 0.5 * math.log(2 * math.pi)  # noqa: E731
        shift = torch.exp(log_phi(a) - logm) - torch.exp(log_phi(b) - logm)
        m = c + s * shift
        return (w.unsqueeze(-1) * m).sum(1)
