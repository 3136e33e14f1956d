"""The NDM objectives against closed forms (float64): VDM and DDPM reductions, the
discrete → continuous limit, the bound on the true NLL, gradients, samplers, decoders."""

import math

import numpy as np
import pytest
import torch
from helpers import gen, one_thread_fixture
from torch import nn

import ndmsolve as nd
from ndmsolve.objectives import (
    NegELBO,
    continuous_loss,
    discrete_loss,
    discretized_gaussian_log_prob,
    prior_loss,
    reconstruction_loss,
    sample_times,
)

D64 = torch.float64


_one_thread = one_thread_fixture()


def _mixture():
    return nd.GaussianMixture(
        torch.tensor([0.4, 0.6], dtype=D64),
        torch.tensor([[0.5, -0.3], [-0.6, 0.4]], dtype=D64),
        torch.tensor([[[0.3, 0.05], [0.05, 0.2]], [[0.2, -0.04], [-0.04, 0.25]]], dtype=D64),
    )


def _affine(learnable=False):
    t = lambda *v: torch.tensor(v, dtype=D64)  # noqa: E731
    return nd.AffineTimeTransform(
        t(0.5, -0.3), t(0.2, 0.1), t(0.3, -0.2), t(0.1, 0.2), learnable=learnable
    )


class Net(nn.Module):
    """Small MLP net(x, t) -> x's shape, fixed random weights from a seed."""

    def __init__(self, d, hidden=16, seed=0, scale=1.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1 = nn.Linear(d + 1, hidden, dtype=D64)
        self.l2 = nn.Linear(hidden, d, dtype=D64)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(
                    torch.randn(p.shape, generator=g, dtype=D64) * scale / math.sqrt(p.shape[-1])
                )

    def forward(self, x, t):
        return self.l2(torch.tanh(self.l1(torch.cat([x, t.unsqueeze(-1)], -1))))


class Perturbed(nn.Module):
    """An imperfect predictor: E[x | z] + c σ_t tanh(net(z, t)) (error O(σ_t), so the loss stays finite)."""

    def __init__(self, base, schedule, d, c=0.5):
        super().__init__()
        self.base, self.schedule, self.c, self.net = base, schedule, c, Net(d, seed=3, scale=2.0)

    def forward(self, z, t):
        _, sigma = self.schedule(t)
        return self.base(z, t) + self.c * sigma.unsqueeze(-1) * torch.tanh(self.net(z, t))


class Knows(nn.Module):
    """A predictor that returns the true x whatever z is."""

    def __init__(self, x):
        super().__init__()
        self.x = x

    def forward(self, z, t):
        return self.x.clone()


# --------------------------------------------------------------------------- classical reductions
@pytest.mark.parametrize("sched", [nd.LinearLogSNR(-10.0, 9.0), nd.CosineLogSNR(-12.0, 12.0)])
def test_identity_continuous_is_vdm(sched):
    gm = _mixture()
    pred = Perturbed(nd.ExactPredictor(gm, sched), sched, 2)
    model = nd.NDM(pred, None, sched)
    x = gm.sample(64, generator=gen(1))
    t = torch.rand(64, generator=gen(2), dtype=D64)
    out = continuous_loss(model, x, t=t, generator=gen(5))
    # VDM written out: z_t = α x + σ ε with the same ε, loss −½ λ' e^λ ‖x − x̂‖²
    eps = torch.randn(x.shape, generator=gen(5), dtype=D64)
    alpha, sigma = sched(t)
    z = alpha[:, None] * x + sigma[:, None] * eps
    x_hat = pred(z, t)
    vdm = -0.5 * sched.dlog_snr(t) * torch.exp(sched.log_snr(t)) * ((x - x_hat) ** 2).sum(1)
    assert isinstance(out, NegELBO)
    torch.testing.assert_close(out.diffusion, vdm, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.total, out.diffusion + out.prior + out.reconstruction)
    assert out.total.shape == (64,) and out.total.dtype == D64


def test_identity_discrete_is_ddpm():
    sched = nd.LinearLogSNR(-10.0, 9.0)
    gm = _mixture()
    pred = Perturbed(nd.ExactPredictor(gm, sched), sched, 2)
    model = nd.NDM(pred, None, sched)
    T = 20
    x = gm.sample(40, generator=gen(1))
    i = torch.arange(40) % T + 1
    out = discrete_loss(model, x, T, t_index=i, generator=gen(7))
    # DDPM (Ho et al.) with ᾱ = α²: β = 1 − ᾱ_t/ᾱ_s, posterior mean
    # μ̃ = √ᾱ_s β/(1 − ᾱ_t) x + √(ᾱ_t/ᾱ_s)(1 − ᾱ_s)/(1 − ᾱ_t) z_t, var β (1 − ᾱ_s)/(1 − ᾱ_t)
    t, s = i.to(D64) / T, (i - 1).to(D64) / T
    eps = torch.randn(x.shape, generator=gen(7), dtype=D64)
    ab_t, ab_s = torch.sigmoid(sched.log_snr(t)), torch.sigmoid(sched.log_snr(s))
    z = ab_t.sqrt()[:, None] * x + (1 - ab_t).sqrt()[:, None] * eps
    x_hat = pred(z, t)
    beta = 1 - ab_t / ab_s
    cx = (ab_s.sqrt() * beta / (1 - ab_t))[:, None]
    cz = ((ab_t / ab_s).sqrt() * (1 - ab_s) / (1 - ab_t))[:, None]
    var = beta * (1 - ab_s) / (1 - ab_t)
    mu_q, mu_p = cx * x + cz * z, cx * x_hat + cz * z
    kl = ((mu_q - mu_p) ** 2).sum(1) / (2 * var)
    torch.testing.assert_close(out.diffusion, T * kl, rtol=1e-8, atol=1e-10)


def test_diffusion_zero_when_predictor_knows_x():
    gm, sched, tr = _mixture(), nd.LinearLogSNR(-10.0, 10.0), _affine()
    x = gm.sample(16, generator=gen(0))
    model = nd.NDM(Knows(x), tr, sched)
    assert continuous_loss(model, x, generator=gen(1)).diffusion.abs().max() == 0
    assert discrete_loss(model, x, 50, generator=gen(1)).diffusion.abs().max() == 0
    # ... and positive for a predictor that does not
    model = nd.NDM(Knows(x + 0.01), tr, sched)
    assert (continuous_loss(model, x, generator=gen(1)).diffusion > 0).all()


# --------------------------------------------------------------------------- discrete -> continuous
def test_discrete_approaches_continuous():
    sched, tr, gm = nd.LinearLogSNR(-8.0, 8.0), _affine(), _mixture()
    model = nd.NDM(Perturbed(nd.ExactPredictor(gm, sched, tr), sched, 2), tr, sched)
    M, seed = 24, 11
    x = gm.sample(M, generator=gen(0))
    # fixed ε per sample (same generator state every call); the t-integral by quadrature
    nodes, weights = np.polynomial.legendre.leggauss(
        80
    )  # converged: 80 and 400 nodes agree to 1e-11
    with torch.no_grad():
        cont = sum(
            0.5
            * w
            * continuous_loss(
                model, x, t=torch.full((M,), 0.5 * (u + 1), dtype=D64), generator=gen(seed)
            ).diffusion
            for u, w in zip(nodes, weights)
        )

        def disc(T):  # Σ_i KL_i exactly: the mean over all i of T·KL_i
            return (
                sum(
                    discrete_loss(
                        model, x, T, t_index=torch.full((M,), i), generator=gen(seed)
                    ).diffusion
                    for i in range(1, T + 1)
                )
                / T
            )

        L_inf = cont.mean().item()
        errs = [abs(disc(T).mean().item() - L_inf) for T in (10, 100, 1000)]
    assert L_inf > 0.1
    assert errs[0] > errs[1] > errs[2]
    # roughly first order: each tenfold T cuts the error 4 to 25 fold
    assert 4 < errs[0] / errs[1] < 25 and 4 < errs[1] / errs[2] < 25, errs
    assert errs[2] < 1e-2 * L_inf


# --------------------------------------------------------------------------- a true bound
@pytest.mark.parametrize("transform", [None, "affine"])
def test_negative_elbo_bounds_true_nll(transform):
    # exact predictor, wide λ range: E[−ELBO] ≥ H(data) = −E log p(x), and close to it
    sched, gm = nd.LinearLogSNR(-10.0, 10.0), _mixture()
    tr = _affine() if transform == "affine" else None
    model = nd.NDM(nd.ExactPredictor(gm, sched, tr), tr, sched)
    N, d = 300_000, 2
    x = gm.sample(N, generator=gen(0))
    with torch.no_grad():
        out = continuous_loss(model, x, generator=gen(1))
    gap = (out.total + gm.log_prob(x)) / d  # per dimension
    mean, se = gap.mean().item(), gap.std().item() / math.sqrt(N)
    assert se < 0.02
    assert mean > -4 * se  # a bound (within Monte-Carlo error)
    assert mean < 0.05  # nearly tight
    assert out.prior.mean().item() < 1e-3


# --------------------------------------------------------------------------- gradients and cost
@pytest.mark.parametrize("which", ["residual", "affine"])
@pytest.mark.parametrize("loss", ["continuous", "discrete"])
def test_gradients_reach_every_part(which, loss):
    d = 2
    tr = nd.ResidualTransform(Net(d, seed=1)) if which == "residual" else _affine(learnable=True)
    sched = nd.LearnedLogSNR(-8.0, 8.0).to(D64)
    model = nd.NDM(Net(d, seed=2), tr, sched)
    x = torch.randn(32, d, generator=gen(0), dtype=D64)
    if loss == "continuous":
        out = continuous_loss(model, x, generator=gen(1))
    else:
        out = discrete_loss(model, x, 10, generator=gen(1))
    out.total.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def _reference_continuous(model, x, t, generator):
    """The continuous loss as first written (F at x three times over, then one stacked
    F_and_dF over [x; x̂]): the fewer-pass loss must give the same numbers."""
    B = x.shape[0]
    sched = model.schedule
    alpha, sigma = sched(t)
    lam, dlam = sched.log_snr(t), sched.dlog_snr(t)
    F = model.F(torch.cat([x, x, x]), torch.cat([t, torch.zeros_like(t), torch.ones_like(t)]))
    F_x, F0, F1 = F[:B], F[B : 2 * B], F[2 * B :]
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    z_t = alpha[:, None] * F_x + sigma[:, None] * eps
    x_hat = model.x_hat(z_t, t)
    F_both, dF_both = model.F_and_dF(torch.cat([x, x_hat]), torch.cat([t, t]))
    resid = dF_both[:B] - dF_both[B:] + dlam[:, None] * (F_both[:B] - F_both[B:])
    diffusion = 0.5 * torch.exp(lam) / (-dlam) * (resid**2).sum(1)
    return diffusion, F0, F1


def _reference_discrete(model, x, T, i, generator):
    B = x.shape[0]
    t, s = i.to(x.dtype) / T, (i - 1).to(x.dtype) / T
    alpha, sigma = model.schedule(t)
    F = model.F(torch.cat([x, x, x]), torch.cat([t, torch.zeros_like(t), torch.ones_like(t)]))
    F_x, F0, F1 = F[:B], F[B : 2 * B], F[2 * B :]
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    z_t = alpha[:, None] * F_x + sigma[:, None] * eps
    x_hat = model.x_hat(z_t, t)
    mean, var = model.posterior(
        torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([s, s]), torch.cat([x, x_hat])
    )
    return T * ((mean[:B] - mean[B:]) ** 2).sum(1) / (2.0 * var[:B]), F0, F1


class CountRows(nn.Module):
    """Wraps a net and records the batch size of every call (one call = one pass)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.rows = net, []

    def forward(self, x, t=None):
        self.rows.append(x.shape[0])
        return self.net(x) if t is None else self.net(x, t)


def _transform(kind, d, seed=1):
    if kind == "residual":
        return nd.ResidualTransform(CountRows(Net(d, seed=seed)))
    if kind == "time_basis":
        torch.manual_seed(seed)
        net = nd.MLP(d, hidden=16, depth=2, out_dim=3 * d).to(D64)
        with torch.no_grad():  # a non-zero h everywhere
            net.out.weight.normal_(0.0, 0.3)
        return nd.TimeBasisTransform(CountRows(net), 3, "sine")
    if kind == "affine":
        return _affine(learnable=True)
    if kind == "shift":
        return Shift()
    return None


KINDS = ["residual", "time_basis", "affine", "shift", None]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loss", ["continuous", "discrete"])
def test_fewer_passes_same_loss_and_gradients(kind, loss):
    # The losses spend the fewest transform passes; values and gradients must equal the
    # original many-pass computation to float64 rounding, on random models and times.
    d, B, T = 2, 16, 20
    model = nd.NDM(
        Net(d, seed=2, scale=2.0), _transform(kind, d), nd.LearnedLogSNR(-8.0, 8.0).to(D64)
    )
    x = torch.randn(B, d, generator=gen(0), dtype=D64)
    t = torch.rand(B, generator=gen(1), dtype=D64)
    i = torch.randint(1, T + 1, (B,), generator=gen(1))
    i[0] = 1  # s = 0 included
    params = [p for p in model.parameters()]

    def grads(v):
        return torch.autograd.grad(v.sum(), params, allow_unused=True)

    if loss == "continuous":
        out = continuous_loss(model, x, t=t, generator=gen(5))
        diff, F0, F1 = _reference_continuous(model, x, t, gen(5))
    else:
        out = discrete_loss(model, x, T, t_index=i, generator=gen(5))
        diff, F0, F1 = _reference_discrete(model, x, T, i, gen(5))
    from ndmsolve.objectives import _prior_from_F1, _reconstruction

    ref_total = (
        diff + _prior_from_F1(model, F1) + _reconstruction(model, x, F0, "gaussian", None, None)
    )
    assert out.diffusion.abs().min() > 1e-3  # a non-trivial comparison
    torch.testing.assert_close(out.diffusion, diff, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.total, ref_total, rtol=1e-12, atol=1e-12)
    for g_new, g_ref in zip(grads(out.total), grads(ref_total), strict=True):
        if g_ref is None:
            assert g_new is None or g_new.abs().max() == 0
        else:
            torch.testing.assert_close(g_new, g_ref, rtol=1e-10, atol=1e-12)


def test_explicit_eps_is_the_generators_draw():
    d, B = 2, 12
    model = nd.NDM(Net(d, seed=2), _transform("residual", d), nd.LinearLogSNR())
    x = torch.randn(B, d, generator=gen(0), dtype=D64)
    t = torch.rand(B, generator=gen(1), dtype=D64)
    eps = torch.randn(x.shape, generator=gen(4), dtype=D64)
    a = continuous_loss(model, x, t=t, generator=gen(4))
    b = continuous_loss(model, x, t=t, eps=eps)
    assert torch.equal(a.total, b.total)
    assert not torch.equal(continuous_loss(model, x, t=t, eps=-eps).total, b.total)
    with pytest.raises(ValueError, match="eps"):
        continuous_loss(model, x, t=t, eps=eps[:, :1])


@pytest.mark.parametrize("kind", ["residual", "time_basis"])
@pytest.mark.parametrize("loss", ["continuous", "discrete"])
def test_transform_passes(kind, loss):
    # General net: F and ∂_t F at x, F(x, 1), F and ∂_t F at x̂ (continuous; three B-row
    # passes) or one call over [x; x; x] and one over [x̂; x̂] (discrete). A t-free net:
    # one pass per input. F(x, 0) = x: never a pass.
    d, B = 3, 8
    tr = _transform(kind, d)
    model = nd.NDM(Net(d, seed=2), tr, nd.LinearLogSNR())
    x = torch.randn(B, d, generator=gen(0), dtype=D64)
    if loss == "continuous":
        continuous_loss(model, x, generator=gen(1))
        want = [B, B, B] if kind == "residual" else [B, B]
    else:
        discrete_loss(model, x, 10, generator=gen(1))
        want = [3 * B, 2 * B] if kind == "residual" else [B, B]
    assert tr.net.rows == want


# --------------------------------------------------------------------------- times
@pytest.mark.parametrize("method", ["antithetic", "stratified"])
def test_stratified_times(method):
    for B in (1, 7, 64):
        t = sample_times(B, generator=gen(B), method=method, dtype=D64)
        assert t.shape == (B,) and t.dtype == D64
        assert ((t >= 0) & (t < 1)).all()
        assert sorted(torch.floor(t * B).long().tolist()) == list(range(B))  # one per stratum
    t = sample_times(1000, generator=gen(0), method="uniform")
    assert t.dtype == torch.get_default_dtype() and ((t >= 0) & (t < 1)).all()
    # same seed, same times
    assert torch.equal(sample_times(5, generator=gen(3)), sample_times(5, generator=gen(3)))


@pytest.mark.parametrize("predictor", ["exact", "offset"])
def test_antithetic_lowers_variance(predictor):
    sched, gm, tr = nd.LinearLogSNR(-10.0, 10.0), _mixture(), _affine()
    x = gm.sample(64, generator=gen(0))
    # "exact": E[x | z_t], the loss noise is mostly from ε; "offset": x̂ = x + δ, the
    # loss depends on t alone, where stratification removes nearly all the variance
    pred = nd.ExactPredictor(gm, sched, tr) if predictor == "exact" else Knows(x + 0.01)
    model = nd.NDM(pred, tr, sched)
    n = 150
    with torch.no_grad():
        est = {
            m: torch.stack(
                [
                    continuous_loss(model, x, generator=gen(s), time_sampler=m).total.mean()
                    for s in range(n)
                ]
            )
            for m in ("uniform", "antithetic")
        }
    # both unbiased for the same quantity ...
    diff = (est["uniform"].mean() - est["antithetic"].mean()).abs()
    assert diff < 4 * (est["uniform"].var() / n).sqrt()
    # ... the stratified one with lower variance
    ratio = (est["antithetic"].var() / est["uniform"].var()).item()
    assert ratio < (0.9 if predictor == "exact" else 0.2)  # exact: about 0.72 over 1000 seeds


# --------------------------------------------------------------------------- prior and decoders
def test_prior_closed_form():
    sched, tr = nd.LinearLogSNR(-3.0, 5.0), _affine()
    model = nd.NDM(Net(2), tr, sched)
    x = torch.randn(10, 2, generator=gen(0), dtype=D64)
    one = torch.ones(10, dtype=D64)
    alpha1, sigma1 = sched(one)
    mu = alpha1[:, None] * tr(x, one)
    v = sigma1[:, None] ** 2
    kl = 0.5 * (v + mu**2 - 1 - torch.log(v)).sum(1)
    torch.testing.assert_close(prior_loss(model, x), kl)
    torch.testing.assert_close(continuous_loss(model, x, generator=gen(0)).prior, kl)


class Shift(nn.Module):
    """F(x, t) = (1 + 0.1 (1 − t)) x + 0.05: F(x, 0) ≠ x."""

    def forward(self, x, t):
        return (1 + 0.1 * (1 - t))[:, None] * x + 0.05


@pytest.mark.parametrize("tr", [None, Shift()])
def test_gaussian_decoder_expectation(tr):
    sched = nd.LinearLogSNR(-6.0, 4.0)
    model = nd.NDM(Net(2), tr, sched)
    x = torch.randn(3, 2, generator=gen(0), dtype=D64)
    exact = reconstruction_loss(model, x)
    # Monte Carlo over z_0 ~ q(z_0 | x) of the one-sample form
    n = 100_000
    xs = x.repeat(n, 1)
    zero = torch.zeros(3 * n, dtype=D64)
    z0, _ = model.sample_marginal(xs, zero, generator=gen(1))
    mc = reconstruction_loss(model, xs, z_0=z0).reshape(n, 3)
    assert ((mc.mean(0) - exact).abs() < 4 * mc.std(0) / math.sqrt(n)).all()
    torch.testing.assert_close(continuous_loss(model, x, generator=gen(0)).reconstruction, exact)


@pytest.mark.parametrize("logsnr_max", [12.0, 4.0, 0.0])
@pytest.mark.parametrize("z", [0.0, 0.3, -0.999, 1.2, 7.0])
def test_discretized_decoder_normalised(logsnr_max, z):
    model = nd.NDM(Net(1), None, nd.LinearLogSNR(-5.0, logsnr_max))
    bins = (torch.arange(256, dtype=D64) / 127.5 - 1.0)[:, None]
    z0 = torch.full_like(bins, z)
    nll = reconstruction_loss(model, bins, decoder="discretized", z_0=z0)
    assert torch.isfinite(nll).all()
    total = torch.exp(-nll).sum()
    assert abs(total.item() - 1.0) < 1e-10


def test_discretized_log_prob_accurate_in_tails_and_matches_cdf():
    x = torch.tensor([0, 60, 128, 200, 255], dtype=D64) / 127.5 - 1.0  # bin centres
    for mean, std in [(0.0, 0.3), (0.9, 0.01), (-3.0, 0.05)]:
        m, s = torch.full_like(x, mean), torch.full_like(x, std)
        lp = discretized_gaussian_log_prob(x, m, s)
        N = torch.distributions.Normal(m, s)
        hi = torch.where(x >= 1, torch.ones_like(x), N.cdf(x + 1 / 255))
        lo = torch.where(x <= -1, torch.zeros_like(x), N.cdf(x - 1 / 255))
        ref = torch.log(hi - lo)
        ok = torch.isfinite(ref) & (hi - lo > 1e-12)
        torch.testing.assert_close(lp[ok], ref[ok], rtol=1e-6, atol=0)
        assert torch.isfinite(lp).all()  # far tails too, where the plain CDF difference underflows


def test_discretized_decoder_in_loss_is_differentiable():
    tr = nd.ResidualTransform(Net(3, seed=1))
    model = nd.NDM(Net(3, seed=2), tr, nd.LinearLogSNR(-6.0, 7.0))
    x = torch.randint(0, 256, (16, 3), generator=gen(0)).to(D64) / 127.5 - 1
    out = continuous_loss(model, x, generator=gen(1), decoder="discretized")
    assert torch.isfinite(out.total).all() and (out.reconstruction > 0).all()
    out.total.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # same seed, same result; the decoder draw comes from the generator
    a = continuous_loss(model, x, generator=gen(1), decoder="discretized").total
    torch.testing.assert_close(a, out.total)


def test_float32_default():
    model = nd.NDM(Net(2).float(), None, nd.LinearLogSNR())
    x = torch.randn(8, 2, generator=gen(0))
    for out in (
        continuous_loss(model, x, generator=gen(1)),
        discrete_loss(model, x, 1000, generator=gen(1)),
    ):
        assert out.total.dtype == torch.float32 and torch.isfinite(out.total).all()


# --------------------------------------------------------------------------- bad input
def test_bad_input():
    model = nd.NDM(Net(2), None, nd.LinearLogSNR())
    x = torch.randn(4, 2, dtype=D64)
    with pytest.raises(TypeError, match="x"):
        continuous_loss(model, x.numpy())
    with pytest.raises(TypeError, match="x"):
        discrete_loss(model, [[0.0, 1.0]], 10)
    with pytest.raises(TypeError, match="x"):
        continuous_loss(model, torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="model"):
        continuous_loss(Net(2), x)
    with pytest.raises(ValueError, match="T"):
        discrete_loss(model, x, 0)
    with pytest.raises(TypeError, match="T"):
        discrete_loss(model, x, 2.5)
    with pytest.raises(ValueError, match="t_index"):
        discrete_loss(model, x, 10, t_index=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="t_index"):
        discrete_loss(model, x, 10, t_index=torch.tensor([1, 2, 11, 3]))
    with pytest.raises(ValueError, match="time_sampler"):
        continuous_loss(model, x, time_sampler="sobol")
    with pytest.raises(ValueError, match="decoder"):
        continuous_loss(model, x, decoder="bernoulli")
    with pytest.raises(ValueError, match="decoder"):
        discrete_loss(model, x, 10, decoder="bernoulli")
    with pytest.raises(ValueError, match="t"):
        continuous_loss(model, x, t=torch.tensor([0.1, 0.2, 1.5, 0.3], dtype=D64))
    with pytest.raises(ValueError, match="t"):
        continuous_loss(model, x, t=torch.tensor([0.1, 0.2], dtype=D64))
    with pytest.raises(ValueError, match="x"):
        continuous_loss(model, x * 5, decoder="discretized")
    with pytest.raises(ValueError, match="method"):
        sample_times(4, method="halton")
    with pytest.raises(ValueError, match="B"):
        sample_times(0)
