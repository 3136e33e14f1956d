"""Importance sampling of t and the variance-reduced held-out negative ELBO, against closed forms."""

import math

import numpy as np
import pytest
import torch
from helpers import F64, gen, one_thread_fixture, random_affine
from hypothesis import given, settings
from hypothesis import strategies as st

import ndmsolve as nd
from ndmsolve.objectives import continuous_loss, nelbo_estimate
from ndmsolve.time_proposal import AdaptiveTimeProposal, TimeProposal

_one_thread = one_thread_fixture()


# ----------------------------------------------------------------- TimeProposal
@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(0.0, 10.0), min_size=1, max_size=12).filter(lambda w: sum(w) > 0),
    st.floats(0.01, 1.0),
)
def test_quantile_inverts_the_cdf_and_density_matches(w, floor):
    q = TimeProposal(torch.tensor(w, dtype=F64), floor=floor)
    assert abs(float(q.probs.sum()) - 1.0) < 1e-12
    u = torch.linspace(0.0, 0.999, 257, dtype=F64)
    t, dens = q.quantile(u)
    assert bool((t >= 0).all() and (t <= 1).all())
    assert bool((torch.diff(t) >= -1e-15).all())  # monotone
    torch.testing.assert_close(dens, q.density(t), rtol=0, atol=1e-12)
    assert bool((dens >= floor - 1e-12).all())  # 1/q <= 1/floor
    # CDF(t) = u: integrate the piecewise-constant density up to t.
    K = q.bins
    k = (t * K).long().clamp(max=K - 1)
    cdf = torch.cumsum(q.probs, 0) - q.probs
    torch.testing.assert_close(cdf[k] + (t * K - k) * q.probs[k], u, rtol=0, atol=1e-12)


def test_importance_weights_integrate_exactly_in_expectation():
    # ∫_0^1 f = E_q[f(t)/q(t)]; stratified draws of a smooth f converge fast to the integral.
    q = TimeProposal(torch.tensor([5.0, 1.0, 0.2, 3.0]), floor=0.05)
    f = lambda t: torch.exp(3 * t) * torch.cos(4 * t)  # noqa: E731
    exact = (math.exp(3) * (3 * math.cos(4) + 4 * math.sin(4)) - 3) / 25
    t, dens = q.sample(200_000, generator=gen(1), stratified=False, dtype=F64)
    v = f(t) / dens
    assert abs(float(v.mean()) - exact) < 4 * float(v.std()) / math.sqrt(v.numel())
    # Stratified (one point per 1/B of u-space): the error is at most the total variation
    # of f/q in u over B.
    B = 4096
    t, dens = q.sample(B, generator=gen(2), stratified=True, dtype=F64)
    tg, qg = q.quantile(torch.linspace(0, 1 - 1e-9, 100_001, dtype=F64))
    tv = float((f(tg) / qg).diff().abs().sum())
    assert abs(float((f(t) / dens).mean()) - exact) < tv / B


def test_fit_weights_follow_the_pilot_spread():
    g = gen(3)
    t = torch.rand(40_000, generator=g, dtype=F64)
    scale = torch.where(t < 0.5, 4.0, 1.0)
    values = 10.0 + scale * torch.randn(40_000, generator=g, dtype=F64)
    rms = TimeProposal.fit(t, values, bins=2, floor=1e-6)
    sd = TimeProposal.fit(t, values, bins=2, floor=1e-6, center=True)
    # rms ∝ sqrt(100 + s²): 10.77 vs 10.05; sd ∝ s: 4 vs 1.
    assert abs(float(rms.probs[0] / rms.probs[1]) - math.sqrt(116 / 101)) < 0.02
    assert abs(float(sd.probs[0] / sd.probs[1]) - 4.0) < 0.15


def test_adaptive_proposal_moves_to_the_large_bins():
    p = AdaptiveTimeProposal(bins=4, floor=0.1, decay=0.9, warmup=5)
    assert torch.allclose(p.probs, torch.full((4,), 0.25, dtype=F64))
    g = gen(4)
    for _ in range(20):
        t, _ = p.sample(64, generator=g, dtype=F64)
        p.update(t, torch.where(t < 0.25, 9.0, 1.0))
    assert float(p.probs[0]) > 0.5 and float(p.probs.min()) >= 0.1 / 4 - 1e-12
    state = p.state_dict()
    p2 = AdaptiveTimeProposal(bins=4, floor=0.1, decay=0.9, warmup=5)
    p2.load_state_dict(state)
    torch.testing.assert_close(p2.probs, p.probs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="probs"):
        TimeProposal(torch.tensor([0.0, 0.0]))
    with pytest.raises(ValueError, match="probs"):
        TimeProposal(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="floor"):
        TimeProposal(torch.ones(3), floor=0.0)
    with pytest.raises(ValueError, match="bins"):
        AdaptiveTimeProposal(bins=0)
    with pytest.raises(ValueError, match="B must"):
        TimeProposal.uniform(4).sample(0)
    with pytest.raises(ValueError, match="one shape"):
        TimeProposal.fit(torch.rand(3), torch.rand(4))


# ----------------------------------------------------------------- closed-form negative ELBO
class LinearlyWrong(torch.nn.Module):
    """x̂ = E[x | z_t] + c σ_t² z: still affine in z, so the integrand is quadratic in ε
    (σ_t² keeps the error's e^λ-weighted cost finite as t → 0)."""

    def __init__(self, exact, schedule, c=0.5):
        super().__init__()
        self.exact, self.schedule, self.c = exact, schedule, c

    def forward(self, z, t):
        sigma2 = self.schedule(t)[1] ** 2
        return self.exact(z, t) + self.c * sigma2[:, None] * z


def _gaussian_model(transform):
    gm = nd.GaussianMixture(
        torch.tensor([1.0], dtype=F64),
        torch.tensor([[0.5, -1.0]], dtype=F64),
        torch.tensor([[[0.6, 0.2], [0.2, 0.3]]], dtype=F64),
    )
    sched = nd.LinearLogSNR(-10.0, 10.0)
    pred = LinearlyWrong(nd.ExactPredictor(gm, sched, transform), sched)
    return gm, nd.NDM(pred, transform, sched, data_shape=(2,)).to(F64)


def exact_nelbo(model, x):
    """Per-point continuous negative ELBO: Gauss–Hermite in ε (exact: the integrand is
    quadratic in ε) and composite Gauss–Legendre in t (smooth integrand), (n,)."""
    h, hw = np.polynomial.hermite_e.hermegauss(3)  # probabilists': ∫ N(0,1) p = Σ w p
    hw = hw / hw.sum()
    e = torch.tensor(np.stack(np.meshgrid(h, h, indexing="ij"), -1).reshape(-1, 2), dtype=F64)
    we = torch.tensor(np.outer(hw, hw).reshape(-1), dtype=F64)
    gl, glw = np.polynomial.legendre.leggauss(16)
    panels = 40
    ts = torch.tensor(
        np.concatenate([(p + (gl + 1) / 2) / panels for p in range(panels)]), dtype=F64
    )
    wt = torch.tensor(np.tile(glw / 2 / panels, panels), dtype=F64)
    n, T, E = x.shape[0], ts.numel(), e.shape[0]
    out = continuous_loss(
        model,
        x.expand(T, E, n, 2).reshape(-1, 2),
        t=ts[:, None, None].expand(T, E, n).reshape(-1),
        eps=e[None, :, None, :].expand(T, E, n, 2).reshape(-1, 2),
    )
    w = (wt[:, None] * we[None, :]).reshape(T, E, 1)
    total = (w * out.diffusion.reshape(T, E, n)).sum((0, 1))
    out = continuous_loss(model, x, t=torch.full((n,), 0.5, dtype=F64), eps=torch.zeros(n, 2))
    return total + out.prior + out.reconstruction


@pytest.mark.parametrize("kind", ["identity", "affine"])
def test_nelbo_estimate_unbiased_against_closed_form(kind):
    tr = None if kind == "identity" else random_affine(2, seed=5)[0]
    gm, model = _gaussian_model(tr)
    x = gm.sample(48, generator=gen(6)).to(F64)
    exact = exact_nelbo(model, x)
    errs = {}
    for vr in (False, True):
        est = nelbo_estimate(
            model, x, draws=400, generator=gen(7), variance_reduction=vr, pilot_rows=4000
        )
        err = est - exact
        se = float(err.std()) / math.sqrt(err.numel())
        assert abs(float(err.mean())) < 4 * se, (kind, vr, float(err.mean()), se)
        errs[vr] = float(err.std())
    assert errs[True] < 0.5 * errs[False], errs  # the point of the reduction


def test_importance_sampled_loss_unbiased_against_closed_form():
    gm, model = _gaussian_model(random_affine(2, seed=8)[0])
    x = gm.sample(8, generator=gen(9)).to(F64)
    exact = exact_nelbo(model, x)
    q = TimeProposal(torch.tensor([6.0, 4.0, 2.0, 1.0, 0.5]), floor=0.05)
    xr = x.repeat(5000, 1)
    vals = continuous_loss(model, xr, generator=gen(10), time_proposal=q).total.reshape(5000, 8)
    err = vals.mean(0) - exact
    se = vals.std(0) / math.sqrt(5000)
    assert bool((err.abs() < 4.5 * se).all()), (err, se)
    with pytest.raises(ValueError, match="not both"):
        continuous_loss(model, x, t=torch.full((8,), 0.5, dtype=F64), time_proposal=q)


def test_nelbo_estimate_same_seed_same_result_and_errors():
    gm, model = _gaussian_model(None)
    x = gm.sample(16, generator=gen(11)).to(F64)
    a = nelbo_estimate(model, x, draws=7, generator=3, pilot_rows=500, max_rows=40)
    b = nelbo_estimate(model, x, draws=7, generator=3, pilot_rows=500, max_rows=40)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.shape == (16,) and bool(torch.isfinite(a).all())
    with pytest.raises(ValueError, match="draws"):
        nelbo_estimate(model, x, draws=0)


# ----------------------------------------------------------------- checkerboard floor
def test_uniform_boxes_posterior_mean_matches_a_grid_integral():
    sched = nd.LinearLogSNR(-12.0, 12.0)
    box = nd.analytic.UniformBoxes.checkerboard()
    xs = torch.linspace(-4, 4, 801, dtype=F64)[:-1] + 4 / 800  # cell centres
    X, Y = torch.meshgrid(xs, xs, indexing="ij")
    P = torch.stack([X.flatten(), Y.flatten()], 1)
    inside = (torch.floor(P[:, 0] / 2) + torch.floor(P[:, 1] / 2)) % 2 == 0
    for tt, z0 in ((0.35, (0.3, -1.7)), (0.5, (1.1, 2.5)), (0.7, (-0.4, 0.2))):
        t = torch.tensor([tt], dtype=F64)
        a, s = sched(t)
        z = torch.tensor([z0], dtype=F64) * a
        w = torch.exp(-((z - a * P) ** 2).sum(1) / (2 * s**2)) * inside
        ref = (w[:, None] * P).sum(0) / w.sum()
        torch.testing.assert_close(box.posterior_mean(z, t, sched)[0], ref, rtol=0, atol=2e-3)
    assert abs(box.entropy() - math.log(32)) < 1e-12


def test_optimal_denoiser_reaches_the_checkerboard_entropy():
    # The optimal denoiser's negative ELBO is the data entropy log 32 up to the blur of the
    # edges by sigma_0 (~e^-6): a closed-form check of the whole estimator on the demo's data.
    sched = nd.LinearLogSNR(-12.0, 12.0)
    box = nd.analytic.UniformBoxes.checkerboard()
    model = nd.NDM(nd.ExactPredictor(box, sched), None, sched, data_shape=(2,)).to(F64)
    x = nd.data.checkerboard(1000, gen(12), dtype=F64)
    est = nelbo_estimate(model, x, draws=40, generator=gen(13), pilot_rows=10_000)
    se = float(est.std()) / math.sqrt(est.numel())
    assert se < 0.04
    assert abs(float(est.mean()) - math.log(32)) < 4 * se + 0.01, (float(est.mean()), se)


# ----------------------------------------------------------------- training with a proposal
def _tiny_ndm(seed=0):
    torch.manual_seed(seed)
    sched = nd.LinearLogSNR(-8.0, 8.0)
    pred = nd.EpsilonPredictor(nd.MLP(2, hidden=16, depth=2, time_dim=8), sched)
    tr = nd.ResidualTransform(nd.MLP(2, hidden=8, depth=1, time_dim=8, zero_init=True))
    return nd.NDM(pred, tr, sched, data_shape=(2,))


def test_train_with_adaptive_proposal_resumes_bit_for_bit(tmp_path):
    from ndmsolve.train import train

    data = nd.data.checkerboard(512, gen(0))
    kw = dict(batch_size=32, steps=12, progress=False, lr_schedule="cosine")
    full_p = AdaptiveTimeProposal(bins=4, warmup=2)
    full = train(_tiny_ndm(), data, generator=gen(2), time_proposal=full_p, **kw)
    assert not torch.allclose(full_p.probs, torch.full((4,), 0.25, dtype=F64))  # it adapted

    class Crashing(AdaptiveTimeProposal):
        calls = 0

        def observe(self, weighted):
            Crashing.calls += 1
            if Crashing.calls > 7:
                raise RuntimeError("crash")
            super().observe(weighted)

    ck = tmp_path / "ck.pt"
    with pytest.raises(RuntimeError, match="crash"):  # after the step-5 checkpoint
        train(
            _tiny_ndm(),
            data,
            generator=gen(2),
            time_proposal=Crashing(bins=4, warmup=2),
            checkpoint=ck,
            checkpoint_every=5,
            **kw,
        )
    p = AdaptiveTimeProposal(bins=4, warmup=2)
    resumed = train(
        _tiny_ndm(seed=9), data, generator=gen(3), time_proposal=p, checkpoint=ck, resume=True, **kw
    )
    assert resumed.losses == full.losses
    torch.testing.assert_close(p.probs, full_p.probs, rtol=0, atol=0)


def test_train_time_proposal_needs_the_continuous_loss():
    from ndmsolve.train import train

    with pytest.raises(ValueError, match="time_proposal needs loss='continuous'"):
        train(
            _tiny_ndm(),
            nd.data.checkerboard(64, gen(0)),
            steps=1,
            batch_size=8,
            generator=0,
            loss=lambda m, x, generator: x.sum(1),
            time_proposal=TimeProposal.uniform(4),
            progress=False,
        )


def test_uniform_boxes_contains():
    box = nd.analytic.UniformBoxes.checkerboard()
    assert bool(box.contains(nd.data.checkerboard(500, gen(14))).all())
    pts = torch.tensor([[0.5, 0.5], [1.0, 3.0], [-1.0, 1.0], [2.5, -0.5], [4.5, 0.5]])
    assert box.contains(pts).tolist() == [True, False, False, True, False]  # cells c1 + c2 even
