"""Samplers against closed forms.

Setting: Gaussian / Gaussian-mixture data in 2-D, a non-trivial affine-in-x transform
F(x, t) = a(t) ⊙ x + b(t), the exact predictor x̂ = E[x | z_t] and LinearLogSNR(−10, 10),
all in float64. Then the NDM's PF-ODE and reverse SDE carry q(z_1) exactly to
q(z_0) = ∫ N(α_0 x, σ_0² I) p(x) dx (F(x, 0) = x), whose mean and covariance are closed
form. To keep the tests about the samplers, the convergence studies start from exact
draws of q(z_1) (not N(0, I), which differs from q(z_1) by α_1 F(x, 1) ≈ 7e-3 · F).
"""

import math

import pytest
import torch
from helpers import Counting, gen, one_thread_fixture

import ndmsolve as nd
from ndmsolve.metrics import random_directions, sliced_wasserstein, wasserstein_1d
from ndmsolve.sampling import (
    DEFAULT_STEPS,
    SampleResult,
    check_grid,
    make_time_grid,
    sample,
    sampling_methods,
)

F64 = torch.float64


# --------------------------------------------------------------------------- set-up
def _transform():
    t = lambda *v: torch.tensor(v, dtype=F64)  # noqa: E731
    return nd.AffineTimeTransform(t(0.6, -0.4), t(0.3, 0.2), t(1.0, -0.6), t(-0.4, 0.5))


def _gaussian():
    return nd.GaussianMixture(
        torch.tensor([1.0], dtype=F64),
        torch.tensor([[1.0, -0.5]], dtype=F64),
        torch.tensor([[[0.5, 0.2], [0.2, 0.3]]], dtype=F64),
    )


def _mixture():
    return nd.GaussianMixture(
        torch.tensor([0.5, 0.3, 0.2], dtype=F64),
        torch.tensor([[-1.5, 0.0], [1.0, 1.0], [1.0, -1.5]], dtype=F64),
        torch.tensor(
            [
                [[0.20, 0.05], [0.05, 0.10]],
                [[0.10, 0.0], [0.0, 0.25]],
                [[0.15, -0.05], [-0.05, 0.10]],
            ],
            dtype=F64,
        ),
    )


def _model(data, transform="affine", schedule=None, count=False):
    schedule = schedule or nd.LinearLogSNR(-10.0, 10.0)
    transform = _transform() if transform == "affine" else transform
    pred = nd.ExactPredictor(data, schedule, transform)
    if count:
        pred = Counting(pred)
    return nd.NDM(pred, transform, schedule, data_shape=(data.d,))


def _data_moments(data):
    m = (data.weights[:, None] * data.means).sum(0)
    second = (
        data.weights[:, None, None] * (data.covs + data.means[:, :, None] * data.means[:, None, :])
    ).sum(0)
    return m, second - torch.outer(m, m)


def _z0_moments(model, data):
    """Mean and covariance of q(z_0) = ∫ N(α_0 x, σ_0² I) p(x) dx."""
    alpha0, sigma0 = model.schedule(torch.zeros(1, dtype=F64))
    m, S = _data_moments(data)
    return alpha0 * m, alpha0**2 * S + sigma0**2 * torch.eye(data.d, dtype=F64)


def _draw_q(model, data, n, t, seed):
    """Exact draws of q(z_t) = ∫ N(α_t F(x, t), σ_t² I) p(x) dx."""
    g = gen(seed)
    x = data.sample(n, generator=g)
    return model.sample_marginal(x, torch.full((n,), float(t), dtype=F64), generator=g)[0]


def _moment_err(x, mean, cov):
    return float((x.mean(0) - mean).norm() + (torch.cov(x.T) - cov).norm())


# --------------------------------------------------------------------------- metrics
def test_sliced_wasserstein_two_gaussians_closed_form():
    # 1-D projections N(θ·μ_i, θᵀS_iθ): W2² = (θ·(μ1 − μ2))² + (s1 − s2)² per direction.
    n, d = 20_000, 2
    mu1, mu2 = torch.tensor([0.0, 0.0], dtype=F64), torch.tensor([1.0, -0.5], dtype=F64)
    S1 = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=F64)
    S2 = torch.tensor([[0.4, -0.1], [-0.1, 2.0]], dtype=F64)
    g = gen(1)
    x = mu1 + torch.randn(n, d, generator=g, dtype=F64) @ torch.linalg.cholesky(S1).T
    y = mu2 + torch.randn(n, d, generator=g, dtype=F64) @ torch.linalg.cholesky(S2).T
    dirs = random_directions(16, d, generator=gen(2), dtype=F64)
    s1 = torch.einsum("pi,ij,pj->p", dirs, S1, dirs).sqrt()
    s2 = torch.einsum("pi,ij,pj->p", dirs, S2, dirs).sqrt()
    w2sq = (dirs @ (mu1 - mu2)) ** 2 + (s1 - s2) ** 2
    # per projection
    per = wasserstein_1d(x @ dirs.T, y @ dirs.T)
    torch.testing.assert_close(per, w2sq, rtol=0.05, atol=5e-3)
    # aggregated
    sw = sliced_wasserstein(x, y, directions=dirs)
    assert abs(float(sw) - float(w2sq.mean().sqrt())) < 0.01 * float(w2sq.mean().sqrt()) + 2e-3
    # random directions: close to the exact sphere average (d = 2: uniform angle)
    ang = torch.linspace(0, math.pi, 2001, dtype=F64)[:-1]
    circ = torch.stack([ang.cos(), ang.sin()], 1)
    c1 = torch.einsum("pi,ij,pj->p", circ, S1, circ).sqrt()
    c2 = torch.einsum("pi,ij,pj->p", circ, S2, circ).sqrt()
    exact = float((((circ @ (mu1 - mu2)) ** 2 + (c1 - c2) ** 2).mean()).sqrt())
    sw_rand = float(sliced_wasserstein(x[:10_000], y[:10_000], 400, gen(3)))
    assert abs(sw_rand - exact) < 0.05 * exact


def test_sliced_wasserstein_basic_properties():
    g = gen(0)
    x, y = torch.randn(500, 3, generator=g), torch.randn(500, 3, generator=g) + 1.0
    assert float(sliced_wasserstein(x, x, 16, gen(1))) == 0.0
    a, b = sliced_wasserstein(x, y, 32, gen(1)), sliced_wasserstein(y, x, 32, gen(1))
    torch.testing.assert_close(a, b)
    assert float(sliced_wasserstein(x, y, 32, gen(1))) == float(a)  # seeded
    # different sizes: close to the equal-size value
    y2 = torch.randn(2000, 3, generator=g) + 1.0
    assert (
        abs(
            float(sliced_wasserstein(x, y2, 64, gen(1)))
            - float(sliced_wasserstein(x, y, 64, gen(1)))
        )
        < 0.1
    )
    # any trailing shape is flattened
    assert sliced_wasserstein(x.reshape(500, 3, 1), y.reshape(500, 3, 1), 8, gen(1)).ndim == 0
    with pytest.raises(ValueError, match="dimension"):
        sliced_wasserstein(x, torch.randn(10, 2), 8)
    with pytest.raises(ValueError, match="n_proj"):
        sliced_wasserstein(x, y, 0)
    with pytest.raises(ValueError, match="directions"):
        sliced_wasserstein(x, y, directions=torch.randn(4, 2))


# --------------------------------------------------------------------------- grids
def test_uniform_grid():
    g = make_time_grid(10, dtype=F64)
    assert g.shape == (11,) and g.dtype == F64
    assert float(g[0]) == 1.0 and float(g[-1]) == 0.0
    torch.testing.assert_close(g.diff(), torch.full((10,), -0.1, dtype=F64))
    g = make_time_grid(4, t_max=0.8, t_min=0.2)
    assert g.dtype == torch.float32
    torch.testing.assert_close(g, torch.tensor([0.8, 0.65, 0.5, 0.35, 0.2]))


@pytest.mark.parametrize(
    "schedule",
    [nd.LinearLogSNR(-10.0, 10.0), nd.CosineLogSNR(-12.0, 9.0), nd.LearnedLogSNR(-8.0, 11.0)],
)
def test_logsnr_grid_is_uniform_in_lambda(schedule):
    if isinstance(schedule, nd.LearnedLogSNR):  # make it clearly non-linear
        with torch.no_grad():
            schedule.v_raw.fill_(1.0)
    for t_max, t_min in ((1.0, 0.0), (0.9, 0.05)):
        g = make_time_grid(16, "logsnr", schedule, t_max=t_max, t_min=t_min, dtype=F64)
        assert g.shape == (17,) and float(g[0]) == t_max and float(g[-1]) == t_min
        assert bool((g.diff() < 0).all())
        with torch.no_grad():
            lam = schedule.log_snr(g)
        d = lam.diff()
        torch.testing.assert_close(d, d.mean().expand(16), rtol=0, atol=1e-9)


def test_logsnr_bisection_matches_closed_forms():
    for sched in (nd.LinearLogSNR(-10.0, 10.0), nd.CosineLogSNR(-15.0, 15.0)):
        lam = torch.linspace(sched.logsnr_min, sched.logsnr_max, 9, dtype=F64)  # t = 1 -> 0
        closed = make_time_grid(8, "logsnr", sched, dtype=F64)
        torch.testing.assert_close(nd.Schedule.t_of_log_snr(sched, lam), closed, rtol=0, atol=1e-12)


def test_grid_errors():
    with pytest.raises(ValueError, match="steps"):
        make_time_grid(0)
    with pytest.raises(ValueError, match="kind"):
        make_time_grid(4, "quadratic")
    with pytest.raises(ValueError, match="schedule"):
        make_time_grid(4, "logsnr")
    with pytest.raises(ValueError, match="t_min"):
        make_time_grid(4, t_max=0.3, t_min=0.5)
    with pytest.raises(ValueError, match="decreasing"):
        check_grid(torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="decreasing"):
        check_grid(torch.tensor([1.0, 0.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_grid(torch.tensor([1.2, 0.5, 0.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_grid(torch.tensor([1.0, 0.5, -0.1]))
    with pytest.raises(ValueError, match="1-D"):
        check_grid(torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="1-D"):
        check_grid(torch.tensor([1.0]))
    torch.testing.assert_close(
        check_grid([1.0, 0.25, 0.0], dtype=F64), torch.tensor([1.0, 0.25, 0.0], dtype=F64)
    )


# --------------------------------------------------------------------------- shared fixtures
# Batches here are small (n ≈ 2000, d = 2): intra-op threads only add synchronisation,
# which is very slow on a busy machine. Restored afterwards.
_one_thread = one_thread_fixture()


N = 2000


@pytest.fixture(scope="module")
def mix():
    """Mixture setting: model, exact z1 ~ q(z_1), q(z_0) moments, two reference draws, SW floor."""
    data = _mixture()
    model = _model(data)
    z1 = _draw_q(model, data, N, 1.0, seed=0)
    mean, cov = _z0_moments(model, data)
    ref1, ref2 = _draw_q(model, data, N, 0.0, seed=1), _draw_q(model, data, N, 0.0, seed=2)
    floor = float(sliced_wasserstein(ref1, ref2, 200, gen(5)))
    return dict(data=data, model=model, z1=z1, mean=mean, cov=cov, ref=ref1, floor=floor)


@pytest.fixture(scope="module")
def ode_ref(mix):
    """PF-ODE solution from the same z1 by an independent implementation (torchdiffeq)."""
    return sample(
        mix["model"], method="torchdiffeq:dopri5", z1=mix["z1"], rtol=1e-8, atol=1e-8
    ).samples


def _kw(setting):
    return dict(rtol=setting, atol=setting) if isinstance(setting, float) else dict(steps=setting)


# (coarse, fine): steps for fixed-step/discrete methods, rtol = atol (floats) for adaptive ones.
ODE_SETTINGS = {
    "euler": (4, 64),
    "midpoint": (2, 32),
    "heun": (2, 32),
    "rk4": (2, 16),
    "bosh3": (1e-1, 1e-4),
    "dopri5": (1e-1, 1e-5),
    "tsit5": (1e-1, 1e-5),
    "torchdiffeq:dopri5": (1e-1, 1e-5),
    "ddim": (4, 64),
}
SDE_SETTINGS = {
    "euler_maruyama": (4, 128),
    "heun_sde": (2, 64),
    "sra1": (2, 64),
    "adaptive_heun_sde": (1.0, 1e-2),
    "torchsde:euler": (4, 128),
    "ancestral": (4, 128),
}
MOMENT_TOL = 0.25  # mean + covariance error allowed at n = 2000 (Monte Carlo: ≈ 0.06–0.13)
SW_FACTOR = 1.75  # sliced W2 to a data draw within this factor of data-vs-data


def _check_converged(mix, samples):
    err = _moment_err(samples, mix["mean"], mix["cov"])
    sw = float(sliced_wasserstein(samples, mix["ref"], 200, gen(5)))
    assert err < MOMENT_TOL, err
    assert sw < SW_FACTOR * mix["floor"], (sw, mix["floor"])
    return err


@pytest.mark.parametrize("method", list(ODE_SETTINGS))
def test_ode_and_ddim_converge(mix, ode_ref, method):
    """Deterministic samplers from one z1: distance to the PF-ODE solution shrinks with the
    steps/tolerance; the finest setting matches q(z_0) (moments, sliced W2)."""
    coarse, fine = ODE_SETTINGS[method]
    dist = []
    for setting in (coarse, fine):
        out = sample(mix["model"], method=method, z1=mix["z1"], **_kw(setting))
        assert out.samples.shape == mix["z1"].shape and out.samples.dtype == F64
        dist.append(float((out.samples - ode_ref).norm(dim=1).mean()))
    assert dist[1] < 0.25 * dist[0], dist
    first_order, second_order = ("euler", "ddim"), ("midpoint", "heun")
    assert dist[1] < (
        5e-2 if method in first_order else 1e-2 if method in second_order else 2e-3
    ), dist
    _check_converged(mix, out.samples)


@pytest.mark.parametrize("method", list(SDE_SETTINGS))
def test_sde_and_ancestral_converge(mix, method):
    """Stochastic samplers: moment error vs closed form drops from the coarse to the fine
    setting; the fine setting matches q(z_0) (moments, sliced W2)."""
    coarse, fine = SDE_SETTINGS[method]
    errs = []
    for setting in (coarse, fine):
        out = sample(mix["model"], method=method, z1=mix["z1"], generator=gen(1), **_kw(setting))
        assert out.samples.dtype == F64
        errs.append(_moment_err(out.samples, mix["mean"], mix["cov"]))
    assert errs[0] > 3 * errs[1], errs
    _check_converged(mix, out.samples)


def test_rk4_pf_ode_map_exact_for_gaussian():
    """For Gaussian data the exact predictor is affine in z, so the PF-ODE flow map is
    affine: z_0 = M z_1 + c. Pushing q(z_1) = N(μ_1, C_1) through it must give
    q(z_0) = N(α_0 m, α_0² S + σ_0² I) exactly. Three points determine M and c, so this
    checks the NDM velocity and the solver with no Monte Carlo error."""
    data = _gaussian()
    model = _model(data)
    sched, tr = model.schedule, model.transform
    one = torch.ones(1, dtype=F64)
    alpha1, sigma1 = sched(one)
    a1, b1, _, _ = tr.coefficients(one)
    A1 = (alpha1[:, None] * a1)[0]
    mu1 = A1 * data.means[0] + alpha1 * b1[0]
    C1 = A1[:, None] * data.covs[0] * A1[None, :] + sigma1**2 * torch.eye(2, dtype=F64)
    pts = torch.stack(
        [mu1, mu1 + torch.tensor([1.0, 0.0], dtype=F64), mu1 + torch.tensor([0.0, 1.0], dtype=F64)]
    )
    mean0, cov0 = _z0_moments(model, data)
    for method, kw, tol in (
        ("rk4", dict(steps=100), 1e-7),
        ("dopri5", dict(rtol=1e-9, atol=1e-9), 1e-8),
    ):
        out = sample(model, method=method, z1=pts, **kw).samples
        M = (out[1:] - out[0]).T  # columns: images of e_1, e_2
        torch.testing.assert_close(out[0], mean0, rtol=0, atol=tol)
        torch.testing.assert_close(M @ C1 @ M.T, cov0, rtol=0, atol=10 * tol)
    # the affine-map claim itself: a fourth point lands on M z + c
    z = mu1 + torch.tensor([0.3, -0.7], dtype=F64)
    out4 = sample(model, method="rk4", z1=torch.cat([pts, z[None]]), steps=50).samples
    M = (out4[1:3] - out4[0]).T
    torch.testing.assert_close(out4[3], out4[0] + M @ (z - mu1), rtol=0, atol=1e-9)


def test_t_min_stops_at_intermediate_marginal():
    data = _gaussian()
    model = _model(data)
    z1 = _draw_q(model, data, N, 1.0, seed=3)
    out = sample(model, method="rk4", z1=z1, steps=16, t_min=0.5).samples
    t = torch.full((1,), 0.5, dtype=F64)
    alpha, sigma = model.schedule(t)
    a, b, _, _ = model.transform.coefficients(t)
    A = alpha * a[0]
    mean = A * data.means[0] + alpha * b[0]
    cov = A[:, None] * data.covs[0] * A[None, :] + sigma**2 * torch.eye(2, dtype=F64)
    assert _moment_err(out, mean, cov) < 0.15
    # same map from the exact q(z_1)-draws as the one to t = 0 run only half way
    x = _draw_q(model, data, N, 0.5, seed=4)
    assert float(sliced_wasserstein(out, x, 200, gen(5))) < 0.1


# --------------------------------------------------------------------------- DDIM specifics
def test_ndm_ddim_differs_from_plain_ddim(mix):
    """Same z1, same predictor: NDM-DDIM (affine F) and identity-transform DDIM differ."""
    model = mix["model"]
    plain = nd.NDM(model.predictor, None, model.schedule, data_shape=(2,))
    z1 = mix["z1"][:500]
    a = sample(model, method="ddim", z1=z1, steps=32).samples
    b = sample(plain, method="ddim", z1=z1, steps=32).samples
    assert float((a - b).norm(dim=1).mean()) > 0.1


def test_identity_transform_ddim_is_classical_ddim():
    data = _mixture()
    model = _model(data, transform=None)
    z1 = torch.randn(300, 2, generator=gen(0), dtype=F64)
    grid = make_time_grid(10, dtype=F64)
    out = sample(model, method="ddim", z1=z1, grid=grid).samples
    z = z1
    for t, s in zip(grid[:-1], grid[1:]):
        (a_t, s_t), (a_s, s_s) = model.schedule(t.expand(1)), model.schedule(s.expand(1))
        x_hat = model.predictor(z, t.expand(300))
        eps = (z - a_t * x_hat) / s_t
        z = a_s * x_hat + s_s * eps
    torch.testing.assert_close(out, z, rtol=1e-10, atol=1e-10)


def test_ddim_converges_to_pf_ode(mix, ode_ref):
    """DDIM discretises the PF-ODE: ‖ddim(z1) − PF-ODE(z1)‖ → 0 at first order."""
    z1, ref = mix["z1"][:500], ode_ref[:500]
    dist = [
        float(
            (sample(mix["model"], method="ddim", z1=z1, steps=k).samples - ref).norm(dim=1).mean()
        )
        for k in (8, 32, 128)
    ]
    assert dist[0] > dist[1] > dist[2], dist
    # first order: ×4 steps should cut the error by about 4 (≥ 2.5 here)
    assert dist[0] / dist[1] > 2.5 and dist[1] / dist[2] > 2.5, dist


# --------------------------------------------------------------------------- interface
@pytest.mark.parametrize(
    "method, kw",
    [
        ("heun", dict(steps=8)),
        ("dopri5", {}),
        ("euler_maruyama", dict(steps=8)),
        ("sra1", dict(steps=8)),
        ("adaptive_heun_sde", dict(rtol=0.05, atol=0.05)),
        ("torchsde:euler", dict(steps=8)),
        ("ancestral", dict(steps=8)),
        ("ddim", dict(steps=8)),
    ],
)
def test_seeded_runs_reproduce(method, kw):
    model = _model(_mixture())
    run = lambda seed: sample(model, 200, method, generator=gen(seed), dtype=F64, **kw).samples  # noqa: E731
    a, b, c = run(7), run(7), run(8)
    assert a.dtype == F64 and a.shape == (200, 2)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_sde_reproduces_for_a_fixed_z1():
    model = _model(_mixture())
    z1 = torch.randn(200, 2, generator=gen(0), dtype=F64)
    a = sample(model, method="euler_maruyama", z1=z1, steps=8, generator=gen(1)).samples
    b = sample(model, method="euler_maruyama", z1=z1, steps=8, generator=gen(1)).samples
    c = sample(model, method="euler_maruyama", z1=z1, steps=8, generator=gen(2)).samples
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_from_the_prior_end_to_end(mix):
    """Default path: z1 ~ N(0, I) from the generator (not q(z_1)); still matches q(z_0)."""
    out = sample(mix["model"], N, "heun", steps=24, generator=gen(11), dtype=F64)
    assert isinstance(out, SampleResult) and out.nfe == 48
    _check_converged(mix, out.samples)


def test_dtypes():
    model = _model(_mixture())
    out = sample(model, 50, "heun", steps=4, generator=gen(0))
    assert out.samples.dtype == torch.float32  # the default
    out = sample(model, 50, "ddim", steps=4, generator=gen(0), dtype=F64, return_path=True)
    assert out.samples.dtype == F64 and out.path.dtype == F64 and out.path_ts.dtype == F64
    z1 = torch.randn(50, 2, dtype=F64, generator=gen(0))
    assert (
        sample(model, method="euler_maruyama", z1=z1, steps=4, generator=gen(0)).samples.dtype
        == F64
    )
    assert sample(model, method="dopri5", z1=z1.float()).samples.dtype == torch.float32


@pytest.mark.parametrize("method", ["rk4", "ddim", "ancestral", "euler_maruyama", "torchsde:euler"])
@pytest.mark.parametrize("grid_kind", ["uniform", "logsnr"])
def test_return_path_fixed(method, grid_kind):
    model = _model(_mixture(), schedule=nd.CosineLogSNR(-10.0, 10.0))
    z1 = torch.randn(30, 2, dtype=F64, generator=gen(0))
    out = sample(
        model,
        method=method,
        z1=z1,
        steps=5,
        grid_kind=grid_kind,
        generator=gen(1),
        return_path=True,
    )
    assert out.path.shape == (6, 30, 2) and out.path_ts.shape == (6,)
    torch.testing.assert_close(out.path_ts, make_time_grid(5, grid_kind, model.schedule, dtype=F64))
    assert bool((out.path_ts.diff() < 0).all())
    torch.testing.assert_close(out.path[0], z1)
    torch.testing.assert_close(out.path[-1], out.samples)


def test_return_path_adaptive_and_explicit_grid():
    model = _model(_mixture())
    z1 = torch.randn(30, 2, dtype=F64, generator=gen(0))
    out = sample(model, method="dopri5", z1=z1, return_path=True)
    assert out.path.shape == (11, 30, 2)
    torch.testing.assert_close(out.path_ts, torch.linspace(1, 0, 11, dtype=F64))
    torch.testing.assert_close(out.path[-1], out.samples)
    times = torch.tensor([1.0, 0.5, 0.1, 0.0], dtype=F64)
    out = sample(model, method="tsit5", z1=z1, save_at=times)
    assert out.path.shape == (4, 30, 2)
    torch.testing.assert_close(out.path_ts, times)
    # an explicit grid: one step per interval, state at grid[0] is z1
    grid = torch.tensor([1.0, 0.7, 0.3, 0.1, 0.0], dtype=F64)
    out = sample(model, method="heun", z1=z1, grid=grid, return_path=True)
    assert out.nfe == 8 and out.path.shape == (5, 30, 2)
    torch.testing.assert_close(out.path_ts, grid)


@pytest.mark.parametrize(
    "method, kw",
    [
        ("heun", dict(steps=6)),
        ("rk4", dict(steps=3, grid_kind="logsnr")),
        ("dopri5", dict(rtol=1e-4, atol=1e-4)),
        ("torchdiffeq:dopri5", dict(rtol=1e-4, atol=1e-4)),
        ("euler_maruyama", dict(steps=6)),
        ("sra1", dict(steps=6)),
        ("adaptive_heun_sde", dict(rtol=0.05, atol=0.05)),
        ("torchsde:euler", dict(steps=6)),
        ("ddim", dict(steps=6)),
        ("ancestral", dict(steps=6)),
        ("ddim", dict(steps=6, denoise=True)),
        ("heun", dict(steps=6, denoise=True)),
    ],
)
def test_nfe_counts_predictor_calls(method, kw):
    model = _model(_mixture(), count=True)
    out = sample(model, 40, method, generator=gen(0), dtype=F64, **kw)
    assert out.nfe == model.predictor.calls > 0
    if method in ("ddim", "ancestral"):
        assert out.nfe == kw["steps"] + kw.get("denoise", False)


def test_denoise_returns_x_hat_at_t_min():
    model = _model(_mixture())
    z1 = torch.randn(40, 2, dtype=F64, generator=gen(0))
    z0 = sample(model, method="heun", z1=z1, steps=8).samples
    x = sample(model, method="heun", z1=z1, steps=8, denoise=True).samples
    torch.testing.assert_close(x, model.x_hat(z0, torch.zeros(40, dtype=F64)))


def test_default_steps_and_eta():
    model = _model(_mixture(), count=True)
    out = sample(model, 10, "ddim", generator=gen(0))
    assert out.nfe == DEFAULT_STEPS
    z1 = torch.randn(40, 2, dtype=F64, generator=gen(0))
    # ancestral with η = 0 is DDIM; DDIM with η = 1 is ancestral (same noise draws)
    a = sample(model, method="ancestral", z1=z1, steps=5, eta=0.0).samples
    b = sample(model, method="ddim", z1=z1, steps=5).samples
    torch.testing.assert_close(a, b)
    a = sample(model, method="ddim", z1=z1, steps=5, eta=1.0, generator=gen(3)).samples
    b = sample(model, method="ancestral", z1=z1, steps=5, generator=gen(3)).samples
    torch.testing.assert_close(a, b)


def test_errors():
    model = _model(_mixture())
    with pytest.raises(ValueError, match="unknown method") as info:
        sample(model, 10, "rk45")
    msg = str(info.value)
    for name in (
        "euler",
        "rk4",
        "dopri5",
        "tsit5",
        "euler_maruyama",
        "adaptive_heun_sde",
        "ddim",
        "ancestral",
        "torchdiffeq:",
        "torchsde:",
    ):
        assert name in msg, name
    with pytest.raises(ValueError, match="unknown method"):
        sample(model, 10, "torchdiffeq:nope", steps=4)
    with pytest.raises(ValueError, match="n must"):
        sample(model, 0, "heun", steps=4)
    with pytest.raises(ValueError, match="n must"):
        sample(model, -3, "heun", steps=4)
    with pytest.raises(ValueError, match="n must"):
        sample(model, None, "heun", steps=4)
    with pytest.raises(ValueError, match="decreasing"):
        sample(model, 10, "heun", grid=torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sample(model, 10, "ddim", grid=torch.tensor([1.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match="either steps or grid"):
        sample(model, 10, "heun", steps=3, grid=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="adaptive"):
        sample(model, 10, "dopri5", steps=10)
    with pytest.raises(ValueError, match="adaptive"):
        sample(model, 10, "adaptive_heun_sde", grid=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="eta"):
        sample(model, 10, "heun", steps=4, eta=0.5)
    with pytest.raises(ValueError, match="eta"):
        sample(model, 10, "ancestral", steps=4, eta=1.5)
    with pytest.raises(ValueError, match="grid_kind"):
        sample(model, 10, "heun", steps=4, grid_kind="exponential")
    with pytest.raises(ValueError, match="save_at"):
        sample(model, 10, "heun", steps=4, save_at=torch.tensor([1.0, 0.0]))
    no_shape = nd.NDM(model.predictor, model.transform, model.schedule)
    with pytest.raises(ValueError, match="shape"):
        sample(no_shape, 10, "heun", steps=4)
    assert sample(no_shape, 10, "heun", steps=2, shape=(2,)).samples.shape == (10, 2)
    with pytest.raises(ValueError, match="shape"):
        sample(model, 10, "heun", steps=2, shape=(3,))  # conflicts with model.data_shape (2,)
    with pytest.raises(ValueError, match="z1"):
        sample(model, method="heun", steps=2, z1=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="n must equal"):
        sample(model, 4, "heun", steps=2, z1=torch.zeros(5, 2))


def test_sampling_methods_lists_everything():
    m = sampling_methods()
    assert {"euler", "midpoint", "heun", "rk4"} <= set(m["ode_fixed"])
    assert {"bosh3", "dopri5", "tsit5"} <= set(m["ode_adaptive"])
    assert "euler_maruyama" in m["sde_fixed"] and m["sde_adaptive"]
    assert m["discrete"][:2] == ("ddim", "ancestral")
    assert {"dpmpp_2m", "dpmpp_3m", "ei_3m", "unipc_2m", "unipc_3m"} <= set(m["discrete"])
    assert "torchdiffeq:dopri5" in m["backends"] and "torchsde:euler" in m["backends"]


def test_no_graph_is_built():
    model = _model(_mixture())
    z1 = torch.randn(20, 2, dtype=F64, requires_grad=True)
    out = sample(model, method="heun", z1=z1, steps=2)
    assert not out.samples.requires_grad


# --------------------------------------------------------------------------- study
STUDY = {
    # size: (n, data, ODE steps, SDE steps)
    "small": (256, "mixture", (4, 8, 16), None),
    "full": (20_000, "both", (4, 8, 16, 32, 64), (8, 32, 128, 512)),
}
ODE_ORDERS = {"euler": 1, "ddim": 1, "midpoint": 2, "heun": 2, "rk4": 4}


@pytest.mark.parametrize("size", ["small", pytest.param("full", marks=pytest.mark.slow)])
def test_convergence_study(size):
    """Empirical convergence orders of the deterministic samplers against a tight PF-ODE
    solve from the same z1 (observed order ≥ 0.7 × nominal over the last doublings); at
    full size also the stochastic samplers' moment error vs closed form, decreasing in
    the steps, and the sliced W2 at the finest setting within SW_FACTOR of the floor."""
    n, which, ode_steps, sde_steps = STUDY[size]
    datasets = {"gaussian": _gaussian(), "mixture": _mixture()}
    if which != "both":
        datasets = {which: datasets[which]}
    for name, data in datasets.items():
        model = _model(data)
        z1 = _draw_q(model, data, n, 1.0, seed=20)
        ref = sample(model, method="dopri5", z1=z1, rtol=1e-10, atol=1e-10).samples
        for method, order in ODE_ORDERS.items():
            errs = [
                float(
                    (sample(model, method=method, z1=z1, steps=k).samples - ref).norm(dim=1).mean()
                )
                for k in ode_steps
            ]
            rates = [math.log2(a / b) for a, b in zip(errs[:-1], errs[1:])]
            assert all(r > 0 for r in rates), (name, method, errs)
            assert rates[-1] > 0.7 * order, (name, method, errs, rates)
        if sde_steps is None:
            continue
        mean, cov = _z0_moments(model, data)
        ref1, ref2 = _draw_q(model, data, n, 0.0, seed=21), _draw_q(model, data, n, 0.0, seed=22)
        floor = float(sliced_wasserstein(ref1, ref2, 500, gen(5)))
        for method in ("euler_maruyama", "heun_sde", "sra1", "ancestral", "torchsde:euler"):
            outs = [
                sample(model, method=method, z1=z1, steps=k, generator=gen(k)).samples
                for k in sde_steps
            ]
            errs = [_moment_err(o, mean, cov) for o in outs]
            assert errs[0] > errs[-1] and min(errs) < 0.05, (name, method, errs)
            sw = float(sliced_wasserstein(outs[-1], ref1, 500, gen(5)))
            assert sw < SW_FACTOR * floor, (name, method, sw, floor)


@pytest.mark.parametrize(
    "method", ["ddim", "ancestral", "dpmpp_2m", "unipc_2m", "heun", "euler_maruyama"]
)
def test_save_at_refused_for_fixed_step_methods(method):
    model = nd.NDM(lambda z, t: torch.zeros_like(z), data_shape=(2,))
    with pytest.raises(ValueError, match="save_at is for adaptive methods"):
        nd.sample(model, 3, method, steps=4, save_at=torch.tensor([1.0, 0.5]))
