"""Likelihood along the PF-ODE, checked against closed forms (float64).

Reference density. For the closed-form NDM (GaussianMixture data, affine F, ExactPredictor)
the PF-ODE transports q_0 to q_1 exactly, so the model's density at t = 0 is

    log p_model(z0) = log q_0(z0) + log N(z1; 0, I) − log q_1(z1),

where z1 is the ODE image of z0. The last two terms are the prior mismatch (q_1 is not
exactly N(0, I) when λ_min = −10: α_1 ≈ 6.7e-3); they are ~α_1 |m| |z1|, i.e. ≲ 1e-3 for
data with a small mean. Tests compare to log q_0 (the brief's check) and, tighter, to the
exact model density above.
"""

from __future__ import annotations

import gc
import math
import warnings

import pytest
import torch
from helpers import one_thread_fixture

import ndmsolve as nd
from ndmsolve.likelihood import (
    LOG_JACOBIAN_PER_DIM,
    N_BINS,
    DivergenceFallbackWarning,
    bits_per_dim,
    dequantize,
    divergence,
    elbo_bits_per_dim,
    log_likelihood,
    sample_probes,
    standard_normal_logp,
)

DT = torch.float64


# Tiny tensors: intra-op threads only add contention (50x slower on a busy 2-core box).
_one_thread = one_thread_fixture()


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(DT)
    yield
    torch.set_default_dtype(old)


def _t(*v):
    return torch.tensor(v, dtype=DT)


SCHED = nd.LinearLogSNR(-10.0, 10.0)


def gaussian_data():
    """N(m, S) in 3D with a small mean (prior mismatch ≲ 1e-3 nats)."""
    S = _t([0.5, 0.1, 0.0], [0.1, 0.3, 0.05], [0.0, 0.05, 0.8])
    return nd.GaussianMixture(_t(1.0), _t([0.05, -0.04, 0.02]), S[None])


def mixture_data():
    covs = torch.stack(
        [0.2 * torch.eye(2, dtype=DT), _t([0.3, 0.1], [0.1, 0.15]), 0.1 * torch.eye(2, dtype=DT)]
    )
    return nd.GaussianMixture(_t(0.3, 0.5, 0.2), _t([0.8, 0.0], [-0.6, 0.4], [0.0, -0.8]), covs)


def affine(d):
    g = torch.Generator().manual_seed(3)
    r = lambda s: s * (torch.rand(d, generator=g, dtype=DT) - 0.5)  # noqa: E731
    return nd.AffineTimeTransform(r(0.8), r(0.4), r(1.0), r(0.6))


class ZeroDtAffine(nd.AffineTimeTransform):
    """The bug NDM warns about: ∂_t F silently dropped."""

    def forward_and_dt(self, x, t):
        F, dF = super().forward_and_dt(x, t)
        return F, torch.zeros_like(dF)


def exact_ndm(data, transform=None):
    return nd.NDM(nd.ExactPredictor(data, SCHED, transform), transform, SCHED)


def model_logp(data, transform, z0, z1):
    """Exact density of the closed-form NDM at z0 (see the module docstring)."""
    zero, one = torch.zeros(z0.shape[0], dtype=DT), torch.ones(z0.shape[0], dtype=DT)
    return (
        data.marginal_log_prob(z0, zero, SCHED, transform)
        + standard_normal_logp(z1)
        - data.marginal_log_prob(z1, one, SCHED, transform)
    )


def q0(data, transform, z0):
    return data.marginal_log_prob(z0, torch.zeros(z0.shape[0], dtype=DT), SCHED, transform)


TIGHT = dict(rtol=1e-8, atol=1e-8)


@pytest.fixture(scope="module")
def gauss_case():
    torch.set_default_dtype(DT)
    data = gaussian_data()
    model = exact_ndm(data)
    z0 = data.sample(6, torch.Generator().manual_seed(0))
    res = log_likelihood(model, z0, "dopri5", trace="exact", **TIGHT)
    return data, model, z0, res


@pytest.fixture(scope="module")
def mixture_case():
    torch.set_default_dtype(DT)
    data, tr = mixture_data(), affine(2)
    model = exact_ndm(data, tr)
    z0 = data.sample(6, torch.Generator().manual_seed(1))
    res = log_likelihood(model, z0, "dopri5", trace="exact", rtol=1e-7, atol=1e-7)
    return data, tr, model, z0, res


# ---------------------------------------------------------------------------- closed forms
def test_gaussian_identity_matches_closed_form(gauss_case):
    data, model, z0, res = gauss_case
    assert res.logp.shape == (6,) and res.logp.dtype == DT
    assert torch.allclose(res.logp, q0(data, None, z0), atol=1e-3, rtol=0)
    # tighter: the exact model density including the prior mismatch
    assert torch.allclose(res.logp, model_logp(data, None, z0, res.z1), atol=2e-6, rtol=0)
    assert torch.allclose(res.logp, res.prior_logp + res.delta_logp)
    assert res.stderr is None and res.nfe > 0 and res.z1.shape == z0.shape


def test_affine_gaussian_matches_closed_form():
    data, tr = gaussian_data(), affine(3)
    z0 = data.sample(4, torch.Generator().manual_seed(2))
    res = log_likelihood(exact_ndm(data, tr), z0, "dopri5", rtol=1e-7, atol=1e-7)
    assert torch.allclose(res.logp, q0(data, tr, z0), atol=1e-2, rtol=0)
    assert torch.allclose(res.logp, model_logp(data, tr, z0, res.z1), atol=1e-5, rtol=0)


def test_affine_mixture_matches_closed_form(mixture_case):
    data, tr, model, z0, res = mixture_case
    assert torch.allclose(res.logp, q0(data, tr, z0), atol=1e-2, rtol=0)
    assert torch.allclose(res.logp, model_logp(data, tr, z0, res.z1), atol=1e-5, rtol=0)


def test_dropping_dF_is_detectably_wrong(mixture_case):
    data, tr, _, z0, res_ok = mixture_case
    bad_tr = ZeroDtAffine(tr.a1, tr.a2, tr.b1, tr.b2)
    bad = nd.NDM(nd.ExactPredictor(data, SCHED, bad_tr), bad_tr, SCHED)
    res = log_likelihood(bad, z0, "dopri5", rtol=1e-6, atol=1e-6)
    err = (res.logp - q0(data, tr, z0)).abs().max()
    assert err > 0.1, f"zeroed ∂_t F should be visibly wrong, off by only {err:.3g}"
    assert (res_ok.logp - q0(data, tr, z0)).abs().max() < 1e-2


# ---------------------------------------------------------------------------- Hutchinson
def _field_case():
    data, tr = mixture_data(), affine(2)
    model = exact_ndm(data, tr)
    z = data.sample(3, torch.Generator().manual_seed(4))
    return model, z, torch.full((3,), 0.35, dtype=DT)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_unbiased_at_divergence_level(noise):
    model, z, t = _field_case()
    v_ex, div_ex = divergence(model.velocity, z, t, method="exact")
    eps = sample_probes(4000, z, noise, torch.Generator().manual_seed(5))
    assert eps.shape == (4000, 3, 2)
    v_h, per = divergence(model.velocity, z, t, method="hutchinson", probes=eps, per_probe=True)
    assert per.shape == (4000, 3)
    assert torch.allclose(v_h, v_ex)
    se = per.std(0) / math.sqrt(per.shape[0])
    assert ((per.mean(0) - div_ex).abs() < 4 * se + 1e-12).all()
    _, mean = divergence(model.velocity, z, t, method="hutchinson", probes=eps)
    assert torch.allclose(mean, per.mean(0))


def test_exact_divergence_matches_jacobian_trace():
    model, z, t = _field_case()
    J = torch.autograd.functional.jacobian(lambda a: model.velocity(a, t).sum(0), z)  # (d, B, d)
    _, div = divergence(model.velocity, z, t)
    assert torch.allclose(div, torch.einsum("ibi->b", J), atol=1e-10)


def test_hutchinson_variance_scales_as_one_over_probes():
    model, z, t = _field_case()
    eps = sample_probes(8000, z, "gaussian", torch.Generator().manual_seed(6))
    _, per = divergence(model.velocity, z, t, method="hutchinson", probes=eps, per_probe=True)
    P = 4
    var_P = per.reshape(-1, P, 3).mean(1).var(0)  # 2000 estimates with P probes
    var_4P = per.reshape(-1, 4 * P, 3).mean(1).var(0)  # 500 estimates with 4P probes
    ratio = var_P / var_4P
    assert ((ratio > 3.0) & (ratio < 5.3)).all(), ratio


def test_hutchinson_logp_unbiased_with_stderr(gauss_case):
    data, model, z0, res_ex = gauss_case
    g = torch.Generator().manual_seed(7)
    res = log_likelihood(
        model, z0, "dopri5", trace="hutchinson", probes=48, generator=g, rtol=1e-6, atol=1e-6
    )
    assert res.stderr.shape == (6,) and res.logp_per_probe.shape == (48, 6)
    assert torch.allclose(res.stderr, res.logp_per_probe.std(0) / math.sqrt(48))
    assert torch.allclose(res.logp, res.logp_per_probe.mean(0))
    z = (res.logp - res_ex.logp) / res.stderr
    assert (z.abs() < 4).all(), z
    assert (res.stderr > 0).all()


def test_hutchinson_seeded_reproducible_and_noise_kinds(gauss_case):
    _, model, z0, _ = gauss_case
    kw = dict(method="rk4", steps=8, trace="hutchinson", probes=2)
    r1 = log_likelihood(model, z0, generator=torch.Generator().manual_seed(11), **kw)
    r2 = log_likelihood(model, z0, generator=torch.Generator().manual_seed(11), **kw)
    r3 = log_likelihood(model, z0, generator=torch.Generator().manual_seed(12), **kw)
    rg = log_likelihood(
        model, z0, generator=torch.Generator().manual_seed(11), noise="gaussian", **kw
    )
    assert torch.equal(r1.logp, r2.logp) and torch.equal(r1.stderr, r2.stderr)
    assert not torch.equal(r1.logp, r3.logp)
    assert torch.isfinite(rg.logp).all() and not torch.equal(rg.logp, r1.logp)
    eps = sample_probes(3, z0, "rademacher", torch.Generator().manual_seed(0))
    assert set(eps.unique().tolist()) <= {-1.0, 1.0}


# ---------------------------------------------------------------------------- solvers
def test_solvers_agree(gauss_case):
    data, model, z0, ref = gauss_case
    rk4 = log_likelihood(model, z0, "rk4", steps=100)
    assert rk4.nfe == 400
    assert (rk4.logp - ref.logp).abs().max() < 1e-5
    heun = log_likelihood(model, z0, "heun", steps=100)
    assert (heun.logp - ref.logp).abs().max() < 1e-3
    ts5 = log_likelihood(model, z0, "tsit5", rtol=1e-7, atol=1e-7)
    assert (ts5.logp - ref.logp).abs().max() < 1e-5


def test_torchdiffeq_backend_agrees(gauss_case):
    pytest.importorskip("torchdiffeq")
    try:
        import ndmsolve.solvers.backends  # noqa: F401
    except ImportError:
        pytest.skip("ndmsolve.solvers.backends not available")
    _, model, z0, ref = gauss_case
    res = log_likelihood(model, z0, "torchdiffeq:dopri5", rtol=1e-7, atol=1e-7)
    assert (res.logp - ref.logp).abs().max() < 1e-4


def test_velocity_keyword_linear_closed_form():
    """v(z, t) = a(t) M z: z1 = exp(M ∫a) z0, ∫ div = tr(M) ∫a, exactly."""
    M = _t([-0.5, 0.3], [0.1, 0.4])
    a = lambda t: 1.0 + t  # noqa: E731  ∫_0^1 a = 1.5
    v = lambda z, t: a(t)[:, None] * (z @ M.T)  # noqa: E731
    z0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    res = log_likelihood(z0=z0, velocity=v, method="dopri5", rtol=1e-10, atol=1e-10)
    z1 = z0 @ torch.linalg.matrix_exp(1.5 * M).T
    assert torch.allclose(res.z1, z1, atol=1e-8)
    assert torch.allclose(res.logp, standard_normal_logp(z1) + 1.5 * torch.trace(M), atol=1e-8)
    # t0 > 0: ∫_{0.5}^1 a = 0.875
    res = log_likelihood(z0=z0, velocity=v, method="rk4", steps=50, t0=0.5)
    assert torch.allclose(
        res.delta_logp, torch.full((5,), 0.875 * torch.trace(M).item()), atol=1e-9
    )


def test_any_state_shape_and_float32():
    v = lambda z, t: -z * (1 + t)[:, None, None]  # noqa: E731  div = −6 (1 + t)
    z0 = torch.randn(3, 2, 3, dtype=torch.float32)
    res = log_likelihood(z0=z0, velocity=v, method="rk4", steps=4)
    assert res.logp.dtype == torch.float32 and res.z1.shape == (3, 2, 3)
    assert torch.allclose(res.delta_logp, torch.full((3,), -9.0, dtype=torch.float32), atol=1e-5)


# ---------------------------------------------------------------------------- graph / memory
def _live_state_tensors() -> int:
    # Non-scalar tensors reachable from Python (the solver keeps one 0-dim sum per step
    # by design; scalars are not ours to count).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if torch.is_tensor(o) and o.ndim > 0)


def test_no_graph_kept_and_flat_tensor_count():
    from ndmsolve.fields.mlp import MLP

    model = nd.NDM(MLP(2, hidden=16, depth=2), None, SCHED).to(DT)
    z0 = torch.randn(4, 2, dtype=DT).requires_grad_(True)
    counts, calls = [], [0]

    def v(z, t):
        calls[0] += 1
        if calls[0] in (2, steps):  # gc.get_objects is slow: sample the 2nd and last calls
            counts.append(_live_state_tensors())
        return model.velocity(z, t)

    for steps in (5, 40):
        counts.clear()
        calls[0] = 0
        res = log_likelihood(
            z0=z0,
            velocity=v,
            method="euler",
            steps=steps,
            trace="hutchinson",
            probes=2,
            generator=torch.Generator().manual_seed(0),
        )
        # The solver's state is the sum of every step's field output: a graph kept by any
        # one evaluation would show up as a grad_fn here.
        assert res.solution.y.grad_fn is None and not res.solution.y.requires_grad
        for x in (res.logp, res.prior_logp, res.delta_logp, res.z1, res.stderr):
            assert x.grad_fn is None and not x.requires_grad
        # live (non-scalar) tensors do not grow with the number of steps
        assert len(counts) == 2 and counts[1] - counts[0] <= 2, counts
    assert any(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------- batch mixing, fallbacks
def test_batch_mixing_field():
    """v = z − mean_b z mixes samples: ∂v_bi/∂z_bi = 1 − 1/B."""
    z = torch.randn(4, 3, dtype=DT)
    f = lambda z, t: z - z.mean(0)  # noqa: E731
    _, div = divergence(f, z, 0.5, batch_independent=False)
    assert torch.allclose(div, torch.full((4,), 3 * (1 - 1 / 4)))
    _, div_naive = divergence(f, z, 0.5)  # the documented independence assumption fails here
    assert torch.allclose(div_naive, torch.zeros(4), atol=1e-12)
    eps = sample_probes(20000, z, generator=torch.Generator().manual_seed(0))
    _, per = divergence(f, z, 0.5, method="hutchinson", probes=eps, per_probe=True)
    se = per.std(0) / math.sqrt(per.shape[0])
    assert ((per.mean(0) - 2.25).abs() < 4 * se).all()


class _DataDependentBackward(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return x**2

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if bool((g != 0).any()):  # data-dependent control flow: vmap cannot batch this
            return 2 * x * g
        return torch.zeros_like(g)


class _OldStyle(torch.autograd.Function):  # no setup_context: torch.func.vjp refuses it
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**2

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


@pytest.mark.parametrize("fn,cause", [(_DataDependentBackward, "vmap"), (_OldStyle, "vjp")])
def test_fallback_warns_and_agrees(fn, cause):
    z = torch.randn(4, 3, dtype=DT)
    with pytest.warns(DivergenceFallbackWarning, match=f"torch.func.{cause}"):
        _, div = divergence(lambda z, t: fn.apply(z), z, 0.5)
    assert torch.allclose(div, 2 * z.sum(1))
    with warnings.catch_warnings(record=True) as w:  # one warning per solve, not per step
        warnings.simplefilter("always")
        res = log_likelihood(
            z0=z * 0.1, velocity=lambda z, t: -fn.apply(z), method="euler", steps=5
        )
    assert sum(issubclass(x.category, DivergenceFallbackWarning) for x in w) == 1
    assert torch.isfinite(res.logp).all()


# ---------------------------------------------------------------------------- bits per dim
def test_bpd_constant_against_discrete_probability():
    """Zero velocity: the model is N(0, I) in y-space, P(x) = Π_d [Φ(hi) − Φ(lo)] over
    the y-bin of x — fully independent of the dequantisation code."""
    x = torch.tensor([[0, 17], [128, 255], [90, 200]], dtype=torch.uint8)
    K = 2000
    res = bits_per_dim(
        velocity=lambda z, t: 0.0 * z,
        x_uint8=x,
        n_dequant=K,
        method="euler",
        steps=1,
        generator=torch.Generator().manual_seed(0),
        dtype=DT,
    )
    assert res.bpd_per_draw.shape == (K, 3) and res.bpd.shape == (3,) and res.nats.shape == (3,)
    edges = lambda k: -1.0 + 2.0 * k.to(DT) / 256  # noqa: E731  bin [−1 + 2k/256, −1 + 2(k+1)/256)
    Phi = torch.special.ndtr
    xl = x.long()  # uint8 255 + 1 would wrap
    logP = torch.log(Phi(edges(xl + 1)) - Phi(edges(xl))).sum(1)  # log P(x), D = 2
    true_bpd = -logP / (2 * math.log(2))
    mean_single = res.bpd_per_draw.mean(0)
    # E_u[single-draw bpd] ≥ true bpd (Jensen); the gap is ~h²/24 nats, invisible here.
    assert torch.allclose(mean_single, true_bpd, atol=5e-4, rtol=0), (mean_single, true_bpd)
    # log-mean-exp over draws: between the true value and the mean of single draws
    assert (res.bpd <= mean_single + 1e-12).all()
    assert torch.allclose(res.bpd, true_bpd, atol=2e-4, rtol=0)  # MC error ~5e-5
    assert torch.allclose(res.nats, res.bpd * 2 * math.log(2))
    # the named constant: log(2/256) = −7 ln 2, i.e. exactly 7 bits per dimension
    assert LOG_JACOBIAN_PER_DIM == pytest.approx(-7 * math.log(2), abs=1e-15) and N_BINS == 256


def test_bpd_closed_form_ndm():
    """8-bit 2-D 'images' from a Gaussian mixture in y-space; exact NDM; one dequantisation."""
    data = nd.GaussianMixture(
        _t(0.4, 0.6),
        _t([0.3, -0.2], [-0.4, 0.3]),
        torch.stack([0.05 * torch.eye(2, dtype=DT), _t([0.04, 0.01], [0.01, 0.06])]),
    )
    y = data.sample(5, torch.Generator().manual_seed(0))
    x = ((y + 1) * 128).floor().clamp(0, 255).to(torch.uint8)
    model = exact_ndm(data)
    res = bits_per_dim(
        model, x, generator=torch.Generator().manual_seed(42), dtype=DT, method="dopri5", **TIGHT
    )
    # independent dequantisation with the same seed (noise is drawn first, shape (K, B, *shape))
    u = torch.rand((1, 5, 2), generator=torch.Generator().manual_seed(42), dtype=DT)[0]
    y_deq = x.to(DT) / 128.0 + u / 128.0 - 1.0
    assert torch.allclose(dequantize(x, u), y_deq, atol=1e-15)
    logp_y = model_logp(data, None, y_deq, res.likelihood.z1)
    expected = -logp_y / (2 * math.log(2)) + math.log2(128)  # −log2 p_y / D + 7
    assert torch.allclose(res.bpd, expected, atol=1e-5, rtol=0)
    assert torch.allclose(res.bpd_per_draw[0], res.bpd)


def test_elbo_bits_per_dim_matches_continuous_loss():
    from ndmsolve import objectives

    data = mixture_data()
    model = exact_ndm(data)
    x = torch.tensor([[10, 200], [128, 127], [0, 255]], dtype=torch.uint8)
    r = elbo_bits_per_dim(model, x, generator=torch.Generator().manual_seed(0), n_t=3)
    g = torch.Generator().manual_seed(0)
    xs = x.to(DT) / 127.5 - 1
    tot = (
        sum(
            objectives.continuous_loss(model, xs, generator=g, decoder="discretized").total
            for _ in range(3)
        )
        / 3
    )
    assert torch.allclose(r.bpd, tot / (2 * math.log(2)))
    assert torch.allclose(r.bpd, r.diffusion + r.prior + r.reconstruction)
    assert (r.bpd > 0).all()


# ---------------------------------------------------------------------------- bad input
def test_bad_inputs():
    v = lambda z, t: -z  # noqa: E731
    z = torch.randn(3, 2, dtype=DT)
    with pytest.raises(ValueError, match="z0.*batch"):
        log_likelihood(z0=torch.randn(2, dtype=DT), velocity=v)
    with pytest.raises(ValueError, match="z0 must be finite"):
        log_likelihood(z0=torch.tensor([[0.0, float("nan")]], dtype=DT), velocity=v)
    with pytest.raises(TypeError, match="z0 must be a floating"):
        log_likelihood(z0=torch.zeros(2, 2, dtype=torch.long), velocity=v)
    with pytest.raises(ValueError, match="trace must be one of"):
        log_likelihood(z0=z, velocity=v, trace="skilling")
    with pytest.raises(ValueError, match="noise must be one of"):
        log_likelihood(z0=z, velocity=v, trace="hutchinson", noise="uniform")
    with pytest.raises(ValueError, match="probes must be a positive int"):
        log_likelihood(z0=z, velocity=v, trace="hutchinson", probes=0)
    with pytest.raises(ValueError, match="t0 must be < t1"):
        log_likelihood(z0=z, velocity=v, t0=0.5, t1=0.2)
    with pytest.raises(TypeError, match="velocity"):
        log_likelihood(object(), z)
    with pytest.raises(ValueError, match="velocity must return"):
        log_likelihood(z0=z, velocity=lambda z, t: z[:, :1], method="euler", steps=1)
    big = torch.randn(2, 3, 8, 8, dtype=DT)
    with pytest.raises(ValueError, match="trace='hutchinson'.*force_exact"):
        log_likelihood(z0=big, velocity=v)
    with pytest.raises(ValueError, match="method='hutchinson'"):
        divergence(v, big, 0.5)
    res = log_likelihood(z0=big, velocity=v, method="euler", steps=1, force_exact=True)
    assert torch.allclose(res.delta_logp, torch.full((2,), -192.0))
    with pytest.raises(ValueError, match="probes"):
        divergence(v, z, 0.5, method="hutchinson")
    with pytest.raises(ValueError, match="probes must have shape"):
        divergence(v, z, 0.5, method="hutchinson", probes=torch.ones(2, 3, 3, dtype=DT))
    with pytest.raises(TypeError, match="x_uint8 must be an integer"):
        bits_per_dim(velocity=v, x_uint8=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="x_uint8 must hold values"):
        bits_per_dim(velocity=v, x_uint8=torch.full((2, 2), 256, dtype=torch.long))
    with pytest.raises(ValueError, match="n_dequant"):
        bits_per_dim(velocity=v, x_uint8=torch.zeros(2, 2, dtype=torch.uint8), n_dequant=0)
    with pytest.raises(ValueError, match="dequant must be"):
        bits_per_dim(
            velocity=v, x_uint8=torch.zeros(2, 2, dtype=torch.uint8), dequant="variational"
        )
    model = exact_ndm(gaussian_data())
    model.data_shape = (3,)
    with pytest.raises(ValueError, match="z0 must have shape"):
        log_likelihood(model, torch.randn(2, 2, dtype=DT))
