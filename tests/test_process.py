"""The NDM process against closed forms: marginals, Fokker–Planck, continuity, posterior.

Everything that checks accuracy runs in float64. The PDE checks also run with the
α ∂_t F term removed and assert a large residual, so they can fail.
"""

import math

import pytest
import torch
from helpers import Counting, gen, one_thread_fixture, random_affine
from helpers import small_mlp as _mlp
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ndmsolve as nd

D = torch.float64


_one_thread = one_thread_fixture()


def _affine(d, seed=0):
    return random_affine(d, seed, scale=0.3)[0]


def _residual(d, seed=0):
    return nd.ResidualTransform(_mlp(d, seed))


class _NoDF(nd.AffineTimeTransform):
    """The same F, but ∂_t F reported as 0: an NDM that forgets the α ∂_t F term."""

    def forward_and_dt(self, x, t):
        F, dF = super().forward_and_dt(x, t)
        return F, torch.zeros_like(dF)


class _Unused(nn.Module):
    def forward(self, z, t):  # pragma: no cover - guard
        raise AssertionError("predictor should not be called")


def _bc(a, x):
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


# ----------------------------------------------------------------- marginals
@pytest.mark.parametrize("which", ["affine", "residual"])
def test_sample_marginal_moments(which):
    d, n = 3, 200_000
    tr = _affine(d) if which == "affine" else _residual(d)
    model = nd.NDM(_Unused(), tr, "cosine")
    g = gen(11)
    x0 = torch.randn(2, d, generator=g, dtype=D)
    t0 = torch.tensor([0.3, 0.8], dtype=D)
    x, t = x0.repeat_interleave(n, 0), t0.repeat_interleave(n)
    z, eps = model.sample_marginal(x, t, generator=g)
    alpha, sigma = model.schedule(t0)
    mean_want = alpha[:, None] * tr(x0, t0)
    for i in range(2):
        zi = z[i * n : (i + 1) * n]
        # CLT: the sample mean has std σ/√n, the sample variance std σ²√(2/n); 5 std.
        torch.testing.assert_close(
            zi.mean(0), mean_want[i], rtol=0, atol=5 * float(sigma[i]) / math.sqrt(n)
        )
        torch.testing.assert_close(
            zi.var(0),
            sigma[i].expand(d) ** 2,
            rtol=0,
            atol=5 * float(sigma[i]) ** 2 * math.sqrt(2 / n),
        )
    # z = mean + σ ε exactly, with the returned ε.
    torch.testing.assert_close(
        z, _bc(model.schedule(t)[0], x) * tr(x, t) + _bc(model.schedule(t)[1], x) * eps
    )


def test_sample_marginal_is_seeded():
    model = nd.NDM(_Unused(), _affine(2))
    x, t = torch.randn(5, 2, dtype=D), torch.rand(5, dtype=D)
    a = model.sample_marginal(x, t, generator=gen(3))[0]
    b = model.sample_marginal(x, t, generator=gen(3))[0]
    c = model.sample_marginal(x, t, generator=gen(4))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


# ----------------------------------------------------------------- Fokker–Planck
def _log_q_cond(model, x, z, t):
    """log N(z; α_t F(x, t), σ_t² I), written out from the schedule and the transform."""
    lam = model.schedule.log_snr(t)
    a2, s2 = torch.sigmoid(lam), torch.sigmoid(-lam)
    mean = a2.sqrt()[:, None] * model.transform(x, t)
    d = z.shape[1]
    return -0.5 * ((z - mean) ** 2).sum(1) / s2 - 0.5 * d * torch.log(2 * math.pi * s2)


def _fp_residual(model, x, z, t, drift_fn):
    """Pointwise ∂_t q + ∇·(f q) − ½ g² Δq, divided by q, and a scale to compare it with.

    In log form: ∂_t log q + ∇·f + f·∇ log q − ½ g² (Δ log q + |∇ log q|²).
    """
    z = z.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    logq = _log_q_cond(model, x, z, t)
    dt_logq, grad = torch.autograd.grad(logq.sum(), (t, z), create_graph=True)
    lap = sum(
        torch.autograd.grad(grad[:, i].sum(), z, retain_graph=True)[0][:, i]
        for i in range(z.shape[1])
    )
    f = drift_fn(z, t.detach())
    div_f = sum(
        torch.autograd.grad(f[:, i].sum(), z, retain_graph=True)[0][:, i] for i in range(z.shape[1])
    )
    g2 = model.g2(t.detach())
    terms = [dt_logq, div_f, (f * grad).sum(1), -0.5 * g2 * lap, -0.5 * g2 * (grad**2).sum(1)]
    res = sum(terms)
    scale = sum(term.abs() for term in terms)
    return res.detach(), scale.detach()


def _points(model, d, b=32, seed=0):
    g = gen(seed)
    x = torch.randn(b, d, generator=g, dtype=D)
    t = 0.05 + 0.9 * torch.rand(b, generator=g, dtype=D)
    # z near and away from the conditional mean (a few σ), where q is not negligible.
    z = model.sample_marginal(x, t, generator=g)[0] + 0.5 * torch.randn(b, d, generator=g, dtype=D)
    return x, t, z


@pytest.mark.parametrize("sched", ["linear", "cosine"])
@pytest.mark.parametrize("which", ["affine", "residual"])
def test_fokker_planck_of_conditional_process(which, sched):
    d = 3
    tr = _affine(d) if which == "affine" else _residual(d)
    model = nd.NDM(_Unused(), tr, nd.LinearLogSNR(-6.0, 6.0) if sched == "linear" else "cosine")
    x, t, z = _points(model, d)

    res, scale = _fp_residual(model, x, z, t, lambda zz, tt: model.forward_drift(zz, tt, x))
    assert float((res.abs() / scale).max()) < 1e-11

    # Without α ∂_t F the same check fails by a wide margin: the test has teeth.
    def no_dF(zz, tt):
        return model.schedule.dlog_alpha(tt)[:, None] * zz

    res_bad, scale_bad = _fp_residual(model, x, z, t, no_dF)
    assert float((res_bad.abs() / scale_bad).median()) > 1e-3


# ----------------------------------------------------------------- continuity (exact model)
def _mixture(d, K, seed):
    g = gen(seed)
    means = 1.5 * torch.randn(K, d, generator=g, dtype=D)
    A = torch.randn(K, d, d, generator=g, dtype=D) * 0.5
    covs = A @ A.transpose(-1, -2) + 0.2 * torch.eye(d, dtype=D)
    weights = torch.rand(K, generator=g, dtype=D) + 0.3
    return nd.GaussianMixture(weights, means, covs)


def _exact_model(data, tr, sched, cls=None):
    return nd.NDM(nd.ExactPredictor(data, sched, tr), tr, sched)


def _continuity_residual(model, data, z, t, velocity=None):
    """∂_t log q + ∇·v + v·∇ log q (zero for the exact PF-ODE), a scale, and ∇ log q."""
    velocity = velocity or model.velocity
    z = z.clone().requires_grad_(True)
    t = t.clone().requires_grad_(True)
    # q's parameters come from the real transform; `model` may be the broken one.
    logq = data.marginal_log_prob(z, t, model.schedule, _ref_transform(model.transform))
    dt_logq, grad = torch.autograd.grad(logq.sum(), (t, z), create_graph=False)
    v = velocity(z, t.detach())
    div_v = sum(
        torch.autograd.grad(v[:, i].sum(), z, retain_graph=True)[0][:, i] for i in range(z.shape[1])
    )
    terms = [dt_logq, div_v, (v * grad).sum(1)]
    return sum(terms).detach(), sum(x.abs() for x in terms).detach(), grad.detach()


def _ref_transform(tr):
    if isinstance(tr, _NoDF):  # same F, so the same q
        return nd.AffineTimeTransform(tr.a1, tr.a2, tr.b1, tr.b2)
    return tr


@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("sched", ["linear", "cosine", "learned"])
def test_continuity_equation_for_exact_model(K, sched):
    d = 2 if K == 3 else 3
    data = _mixture(d, K, seed=K)
    tr = _affine(d, seed=K + 7)
    schedule = {
        "linear": nd.LinearLogSNR(-8.0, 8.0),
        "cosine": nd.CosineLogSNR(),
        "learned": nd.LearnedLogSNR(),
    }[sched]
    model = _exact_model(data, tr, schedule)
    g = gen(5)
    x = data.sample(24, generator=g)
    t = 0.05 + 0.9 * torch.rand(24, generator=g, dtype=D)
    z = model.sample_marginal(x, t, generator=g)[0]

    res, scale, grad = _continuity_residual(model, data, z, t)
    assert float((res.abs() / scale).max()) < 1e-8, float((res.abs() / scale).max())
    # The model's score is the exact marginal score.
    torch.testing.assert_close(model.score(z, t), grad, rtol=1e-8, atol=1e-8)

    # An NDM whose transform reports ∂_t F = 0 gives a wrong velocity: large residual.
    broken = nd.NDM(
        nd.ExactPredictor(data, schedule, tr),
        _NoDF(tr.a1, tr.a2, tr.b1, tr.b2),
        schedule,
        dF="analytic",
    )
    res_bad, scale_bad, _ = _continuity_residual(broken, data, z, t)
    assert float((res_bad.abs() / scale_bad).median()) > 1e-3

    # Same with the term mis-scaled by 2.
    def twice(zz, tt):
        fl = model.fields(zz, tt)
        alpha = model.schedule(tt)[0][:, None]
        return fl.drift + alpha * fl.dF - 0.5 * fl.g2[:, None] * fl.score

    res_2, scale_2, _ = _continuity_residual(model, data, z, t, velocity=twice)
    assert float((res_2.abs() / scale_2).median()) > 1e-3


# ----------------------------------------------------------------- reverse-time relations
def _tiny_model(d=3, transform="residual", dtype=D, **kw):
    tr = {"residual": lambda: _residual(d), "identity": lambda: None, "affine": lambda: _affine(d)}[
        transform
    ]()
    return nd.NDM(_mlp(d, seed=9, dtype=dtype), tr, "cosine", **kw)


@pytest.mark.parametrize("transform", ["residual", "affine"])
def test_reverse_drift_and_velocity_relations(transform):
    model = _tiny_model(transform=transform)
    g = gen(2)
    z, t = torch.randn(8, 3, generator=g, dtype=D), 0.05 + 0.9 * torch.rand(8, generator=g, dtype=D)
    x_hat = model.x_hat(z, t)
    f = model.forward_drift(z, t, x_hat)  # ∂_t F at fixed x̂
    s = model.score(z, t)
    g2 = model.g2(t)[:, None]
    torch.testing.assert_close(model.reverse_drift(z, t), f - g2 * s, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.velocity(z, t), f - 0.5 * g2 * s, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.diffusion(t) ** 2, model.g2(t), rtol=1e-14, atol=0)
    fl = model.fields(z, t)
    torch.testing.assert_close(fl.x_hat, x_hat)
    torch.testing.assert_close(fl.F, model.F(x_hat, t))
    torch.testing.assert_close(fl.score, s)
    torch.testing.assert_close(fl.drift, f)
    # score = −(z − α F(x̂, t)) / σ².
    alpha, sigma = model.schedule(t)
    torch.testing.assert_close(
        s, -(z - alpha[:, None] * model.transform(x_hat, t)) / sigma[:, None] ** 2
    )


def test_identity_transform_is_classical_vp():
    model = _tiny_model(transform="identity")
    g = gen(4)
    z, t = torch.randn(8, 3, generator=g, dtype=D), 0.05 + 0.9 * torch.rand(8, generator=g, dtype=D)
    x_hat = model.x_hat(z, t)
    # Textbook VP SDE: dz = −½ β z dt + √β dw, β(t) = −d/dt log α_t² (here by autograd).
    tt = t.clone().requires_grad_(True)
    (beta,) = torch.autograd.grad(-torch.log(model.schedule(tt)[0] ** 2).sum(), tt)
    alpha, sigma = model.schedule(t)
    s = -(z - alpha[:, None] * x_hat) / sigma[:, None] ** 2  # ε-parametrised score
    f_vp = -0.5 * beta[:, None] * z
    torch.testing.assert_close(model.g2(t), beta, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        model.velocity(z, t), f_vp - 0.5 * beta[:, None] * s, rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        model.reverse_drift(z, t), f_vp - beta[:, None] * s, rtol=1e-10, atol=1e-12
    )
    assert torch.equal(model.fields(z, t).dF, torch.zeros_like(z))


# ----------------------------------------------------------------- posterior
def _ddpm(model, z_t, t, s, x):
    """DDPM's q(z_s | z_t, x) written with α_{t|s} = α_t/α_s and σ_{t|s}² = σ_t² − α_{t|s}² σ_s²."""
    a_t, s_t = model.schedule(t)
    a_s, s_s = model.schedule(s)
    a_ts = a_t / a_s
    s2_ts = s_t**2 - a_ts**2 * s_s**2
    mean = (a_ts * s_s**2 / s_t**2)[:, None] * z_t + (a_s * s2_ts / s_t**2)[:, None] * x
    return mean, s2_ts * s_s**2 / s_t**2


def _post_points(d=3, b=10, seed=0):
    g = gen(seed)
    t = 0.1 + 0.85 * torch.rand(b, generator=g, dtype=D)
    s = t * torch.rand(b, generator=g, dtype=D)
    return torch.randn(b, d, generator=g, dtype=D), torch.randn(b, d, generator=g, dtype=D), t, s


def test_posterior_identity_is_ddpm():
    model = _tiny_model(transform="identity")
    z, x, t, s = _post_points()
    mean, var = model.posterior(z, t, s, x)
    mean_w, var_w = _ddpm(model, z, t, s, x)
    torch.testing.assert_close(mean, mean_w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, var_w, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("transform", ["identity", "affine", "residual"])
def test_posterior_eta_zero_is_ddim(transform):
    model = _tiny_model(transform=transform)
    z, x, t, s = _post_points(seed=1)
    mean, var = model.posterior(z, t, s, x, eta=0.0)
    a_t, s_t = model.schedule(t)
    a_s, s_s = model.schedule(s)
    eps = (z - a_t[:, None] * model.transform(x, t)) / s_t[:, None]
    torch.testing.assert_close(
        mean, a_s[:, None] * model.transform(x, s) + s_s[:, None] * eps, rtol=1e-12, atol=1e-12
    )
    assert torch.equal(var, torch.zeros_like(var))


@pytest.mark.parametrize("eta", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("transform", ["affine", "residual"])
def test_posterior_marginalises_to_forward_marginal(transform, eta):
    # ∫ q(z_s | z_t, x) q(z_t | x) dz_t = N(α_s F(x, s), σ_s² I): by Monte Carlo.
    d, n = 2, 100_000
    model = _tiny_model(d, transform=transform)
    g = gen(21)
    x0 = torch.randn(1, d, generator=g, dtype=D)
    t0, s0 = torch.tensor([0.7], dtype=D), torch.tensor([0.35], dtype=D)
    x, t, s = x0.expand(n, d), t0.expand(n), s0.expand(n)
    z_t = model.sample_marginal(x, t, generator=g)[0]
    mean, var = model.posterior(z_t, t, s, x, eta=eta)
    z_s = mean + var.sqrt()[:, None] * torch.randn(n, d, generator=g, dtype=D)
    a_s, s_s = model.schedule(s0)
    sd = float(s_s)
    torch.testing.assert_close(
        z_s.mean(0), (a_s * model.transform(x0, s0))[0], rtol=0, atol=5 * sd / math.sqrt(n)
    )
    torch.testing.assert_close(
        z_s.var(0), torch.full((d,), sd**2, dtype=D), rtol=0, atol=5 * sd**2 * math.sqrt(2 / n)
    )
    # And exactly: mean is affine in ε with slope c σ_t, and c² σ_t² + var = σ_s².
    a_t, s_t = model.schedule(t0)
    eps = torch.randn(1, d, generator=g, dtype=D)
    m1, v1 = model.posterior(a_t * model.transform(x0, t0) + s_t * eps, t0, s0, x0, eta=eta)
    m0, _ = model.posterior(a_t * model.transform(x0, t0), t0, s0, x0, eta=eta)
    torch.testing.assert_close(m0, a_s * model.transform(x0, s0), rtol=1e-12, atol=1e-12)
    c = (m1 - m0) / eps  # per-coordinate, all equal to coef · σ_t
    torch.testing.assert_close(
        c**2 + v1[:, None], (s_s**2)[:, None].expand(1, d), rtol=1e-10, atol=1e-12
    )


# ----------------------------------------------------------------- shapes, dtypes, batches
class _FlatNet(nn.Module):
    """A per-sample net on any data shape: flatten, a small MLP in (x, t), reshape back."""

    def __init__(self, shape, seed, out_mult=1):
        super().__init__()
        n = math.prod(shape)
        torch.manual_seed(seed)
        self.shape, self.out_mult = tuple(shape), out_mult
        self.l1 = nn.Linear(n + 1, 8)
        self.l2 = nn.Linear(8, n * out_mult)

    def forward(self, x, t=None):
        h = x.flatten(1)
        tt = torch.zeros_like(h[:, :1]) if t is None else t[:, None].to(h.dtype)
        out = self.l2(torch.tanh(self.l1(torch.cat([h, tt], 1))))
        return out if self.out_mult > 1 else out.reshape(x.shape)


def _shape_model(shape, kind, dtype):
    pred = _FlatNet(shape, 1).to(dtype)
    tr = {
        "identity": lambda: None,
        "residual": lambda: nd.ResidualTransform(_FlatNet(shape, 2).to(dtype)),
        "basis": lambda: nd.TimeBasisTransform(_FlatNet(shape, 3, out_mult=2).to(dtype), 2),
    }[kind]()
    return nd.NDM(pred, tr, "cosine")


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
    b=st.integers(1, 5),
    kind=st.sampled_from(["identity", "residual", "basis"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 1000),
)
def test_any_shape_and_dtype(shape, b, kind, dtype, seed):
    model = _shape_model(shape, kind, dtype)
    g = gen(seed)
    z = torch.randn(b, *shape, generator=g, dtype=dtype)
    x = torch.randn(b, *shape, generator=g, dtype=dtype)
    t = 0.1 + 0.8 * torch.rand(b, generator=g, dtype=dtype)
    fl = model.fields(z, t)
    for name in ("x_hat", "F", "dF", "score", "drift"):
        out = getattr(fl, name)
        assert out.shape == z.shape and out.dtype == dtype, name
        assert torch.isfinite(out).all(), name
    assert fl.g2.shape == (b,) and fl.g2.dtype == dtype
    for out in (
        model.velocity(z, t),
        model.reverse_drift(z, t),
        model.forward_drift(z, t, x),
        model.sample_marginal(x, t, generator=g)[0],
    ):
        assert out.shape == z.shape and out.dtype == dtype
    mean, var = model.posterior(z, t, 0.5 * t, x)
    assert (
        mean.shape == z.shape and mean.dtype == dtype and var.shape == (b,) and var.dtype == dtype
    )
    # A 0-dim t is broadcast over the batch.
    torch.testing.assert_close(model.velocity(z, t[0]), model.velocity(z, t[0].expand(b)))


@pytest.mark.parametrize("transform", ["residual", "affine", "identity"])
def test_batch_independence(transform):
    model = _tiny_model(transform=transform)
    g = gen(8)
    z, t = torch.randn(6, 3, generator=g, dtype=D), torch.rand(6, generator=g, dtype=D)
    batch = model.velocity(z, t)
    rows = torch.cat([model.velocity(z[i : i + 1], t[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(batch, rows, rtol=1e-12, atol=1e-12)
    # Changing one row leaves the others alone (∂_t F is per-sample, not a batch sum).
    z2 = z.clone()
    z2[0] += 1.0
    torch.testing.assert_close(model.velocity(z2, t)[1:], batch[1:], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(model.velocity(z2, t)[0], batch[0])


@pytest.mark.parametrize("dF", ["auto", "func", "autograd", "fd"])
def test_fields_calls_predictor_once(dF):
    pred = Counting(_mlp(3, seed=1))
    model = nd.NDM(pred, _residual(3), dF=dF)
    z, t = torch.randn(4, 3, dtype=D), torch.rand(4, dtype=D)
    model.fields(z, t)
    assert pred.calls == 1
    model.velocity(z, t)
    model.reverse_drift(z, t)
    assert pred.calls == 3


# ----------------------------------------------------------------- bad input
class _Const(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, t):
        return self.fn(x, t)


def _ok_model(**kw):
    return nd.NDM(_Const(lambda z, t: torch.tanh(z)), **kw)


def test_bad_time():
    model = _ok_model()
    z = torch.randn(4, 2)
    with pytest.raises(ValueError, match="t must lie"):
        model.velocity(z, torch.tensor([0.1, 0.2, 1.5, 0.3]))
    with pytest.raises(ValueError, match="t must lie"):
        model.velocity(z, torch.full((4,), -0.1))
    with pytest.raises(ValueError, match="t must have shape"):
        model.velocity(z, torch.rand(3))
    with pytest.raises(ValueError, match="t must have shape"):
        model.fields(z, torch.rand(4, 1))
    with pytest.raises(TypeError, match="t must be a floating"):
        model.velocity(z, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="t must lie"):
        model.sample_marginal(z, torch.full((4,), 2.0))
    with pytest.raises(TypeError, match="z must be a floating"):
        model.velocity(torch.ones(4, 2, dtype=torch.long), torch.rand(4))


def test_bad_networks():
    z, t = torch.randn(4, 2), torch.rand(4)
    with pytest.raises(ValueError, match=r"predictor \(_Const\) must return shape"):
        nd.NDM(_Const(lambda z, t: z[:, :1])).velocity(z, t)
    with pytest.raises(ValueError, match=r"predictor \(_Const\) must return finite"):
        nd.NDM(_Const(lambda z, t: z * float("nan"))).velocity(z, t)
    with pytest.raises(TypeError, match=r"predictor \(_Const\) must return a torch.Tensor"):
        nd.NDM(_Const(lambda z, t: z.tolist())).velocity(z, t)
    for dF in ("func", "autograd", "fd"):
        with pytest.raises(ValueError, match=r"transform \(_Const\) must return shape"):
            _ok_model(
                transform=_Const(lambda x, t: x.sum(1, keepdim=True) * t[:, None]), dF=dF
            ).velocity(z, t)
        with pytest.raises(ValueError, match=r"transform \(_Const\) must return finite"):
            _ok_model(transform=_Const(lambda x, t: x / (t[:, None] * 0)), dF=dF).velocity(z, t)
    with pytest.raises(ValueError, match=r"transform \(_Const\) must return shape"):
        _ok_model(transform=_Const(lambda x, t: x[:, :1])).F(z, t)
    # check=False skips the finiteness check (the shape check stays).
    out = nd.NDM(_Const(lambda z, t: z * float("nan")), check=False).velocity(z, t)
    assert torch.isnan(out).all()


class _Plain(torch.nn.Module):
    def forward(self, x, t):
        return x + t[:, None]


def test_bad_constructor_arguments():
    pred = _Const(lambda z, t: z)
    with pytest.raises(ValueError, match="schedule"):
        nd.NDM(pred, schedule="nope")
    with pytest.raises(TypeError, match="schedule"):
        nd.NDM(pred, schedule=1.0)
    with pytest.raises(ValueError, match="logsnr_min"):
        nd.NDM(pred, schedule=nd.LinearLogSNR(logsnr_min=3.0, logsnr_max=1.0))
    with pytest.raises(ValueError, match="dF"):
        nd.NDM(pred, dF="spline")
    with pytest.raises(ValueError, match="dF"):
        nd.NDM(pred, _Plain(), dF="analytic")  # no forward_and_dt
    with pytest.raises(ValueError, match="method"):
        nd.NDM(pred).F_and_dF(torch.randn(2, 2), torch.rand(2), method="spline")
    with pytest.raises(TypeError, match="predictor"):
        nd.NDM(3)
    with pytest.raises(TypeError, match="transform"):
        nd.NDM(pred, transform="identity")


def test_bad_posterior_arguments():
    model = _ok_model()
    z, x = torch.randn(3, 2), torch.randn(3, 2)
    t = torch.tensor([0.5, 0.6, 0.7])
    with pytest.raises(ValueError, match="s must be earlier"):
        model.posterior(z, t, t, x)  # s = t
    with pytest.raises(ValueError, match="s must be earlier"):
        model.posterior(z, t, torch.tensor([0.4, 0.9, 0.1]), x)  # one s > t
    with pytest.raises(ValueError, match="s must lie"):
        model.posterior(z, t, torch.tensor([-0.1, 0.1, 0.1]), x)
    with pytest.raises(ValueError, match="s must have shape"):
        model.posterior(z, t, torch.rand(2) * 0.4, x)
    with pytest.raises(ValueError, match="eta"):
        model.posterior(z, t, 0.5 * t, x, eta=1.5)
    with pytest.raises(ValueError, match="x must have"):
        model.posterior(z, t, 0.5 * t, x[:, :1])
    with pytest.raises(ValueError, match="x must have"):
        model.forward_drift(z, t, x[:2])
