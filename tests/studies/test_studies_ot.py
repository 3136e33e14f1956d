"""The OT-dynamics study's pieces: the conditional velocity against autograd, the penalised
loss, the 1D quantile map and the displacement paths."""

import pytest
import torch
from helpers import F64, gen, one_thread_fixture

import ndmsolve as nd
from ndmsolve.metrics import kinetic_ratio, ot_cost
from ndmsolve.studies import ot

_one_thread = one_thread_fixture()


def _model(learned: bool):
    torch.manual_seed(0)
    sched = nd.LearnedLogSNR(-8.0, 8.0)
    with torch.no_grad():  # move the schedule off its near-linear start
        sched.v_raw.add_(2.0)
    tr = nd.ResidualTransform(nd.MLP(2, hidden=16, depth=2)) if learned else None
    pred = nd.EpsilonPredictor(nd.MLP(2, hidden=16, depth=2), sched)
    return nd.NDM(pred, transform=tr, schedule=sched, data_shape=(2,)).double()


@pytest.mark.parametrize("learned", [False, True])
def test_conditional_velocity_is_the_time_derivative_of_the_forward_path(learned):
    model = _model(learned)
    x = torch.randn(32, 2, generator=gen(1), dtype=F64)
    eps = torch.randn(32, 2, generator=gen(2), dtype=F64)
    t = torch.rand(32, generator=gen(3), dtype=F64) * 0.98 + 0.01

    def z(tt):
        alpha, sigma = model.schedule(tt)
        return alpha[:, None] * model.F(x, tt) + sigma[:, None] * eps

    _, dz = torch.func.jvp(z, (t,), (torch.ones_like(t),))
    torch.testing.assert_close(ot.conditional_velocity(model, x, t, eps), dz)
    # the same velocity written as the conditional PF-ODE field f(z, t, x) + ½ g² ε / σ
    _, sigma = model.schedule(t)
    v_pf = model.forward_drift(z(t), t, x) + (0.5 * model.g2(t) / sigma)[:, None] * eps
    torch.testing.assert_close(ot.conditional_velocity(model, x, t, eps), v_pf)


def test_penalized_loss():
    model = _model(True)
    x = torch.randn(16, 2, generator=gen(4), dtype=F64)
    base = nd.continuous_loss(model, x, generator=gen(5)).total
    torch.testing.assert_close(ot.penalized_loss(0.0)(model, x, generator=gen(5)), base)
    pen = ot.penalized_loss(0.5)(model, x, generator=gen(5))
    # same generator: the ELBO part is drawn first, so the difference is 0.5 × the penalty draw
    g = gen(5)
    nd.continuous_loss(model, x, generator=g)
    torch.testing.assert_close(pen - base, 0.5 * ot.kinetic_penalty(model, x, generator=g))
    assert bool((pen > base).all())
    pen.sum().backward()  # reaches the schedule and the transform
    assert (
        model.schedule.v_raw.grad is not None
        and model.transform.net.out.weight.grad.abs().sum() > 0
    )
    for bad in (-1.0, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="lam"):
            ot.penalized_loss(bad)


def test_quantile_map_and_displacement_paths_are_ot():
    data = nd.data.gaussian_mixture_1d(
        100_000, gen(6), dtype=F64, means=(-1.5, 1.5), stds=(0.25, 0.25), weights=(0.5, 0.5)
    )
    z1 = torch.randn(2000, 1, generator=gen(7), dtype=F64)
    x0 = ot.quantile_map(data, z1)
    assert bool((x0[z1.argsort(0)[:, 0]].diff(dim=0) >= 0).all())  # monotone
    fresh = nd.data.gaussian_mixture_1d(
        2000, gen(8), dtype=F64, means=(-1.5, 1.5), stds=(0.25, 0.25), weights=(0.5, 0.5)
    )
    floor = float(
        ot_cost(
            fresh,
            nd.data.gaussian_mixture_1d(
                2000, gen(9), dtype=F64, means=(-1.5, 1.5), stds=(0.25, 0.25), weights=(0.5, 0.5)
            ),
        )
    )
    assert float(ot_cost(x0, fresh)) < 5 * floor + 1e-3
    ts = torch.linspace(1.0, 0.0, 11, dtype=F64)
    paths = ot.displacement_paths(z1, x0, ts)
    torch.testing.assert_close(paths[0], z1)
    torch.testing.assert_close(paths[-1], x0)
    assert float(kinetic_ratio(paths, ts)) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="shape"):
        ot.quantile_map(data, torch.zeros(3, 2))


def test_marginal_penalty_is_the_model_velocity_with_the_predictor_fixed():
    model = _model(True)
    z = torch.randn(16, 2, generator=gen(10), dtype=F64)
    t = torch.rand(16, generator=gen(11), dtype=F64) * 0.9 + 0.05
    v = ot.model_velocity_fixed_predictor(model, z, t)
    torch.testing.assert_close(v, model.velocity(z, t))
    x = torch.randn(16, 2, generator=gen(12), dtype=F64)
    ot.penalized_loss(1.0, velocity="marginal")(model, x, generator=gen(13)).sum().backward()
    pen_only = _model(True)
    ot.kinetic_penalty(pen_only, x, generator=gen(13), velocity="marginal").sum().backward()
    assert all(p.grad is None for p in pen_only.predictor.net.parameters())  # predictor untouched
    assert pen_only.transform.net.out.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="velocity"):
        ot.penalized_loss(0.1, velocity="straight")


def test_retimed_energy_closed_forms():
    B, bins = 4096, 16
    t = nd.sample_times(B, generator=gen(6), dtype=F64)
    # constant speed: nothing to gain from re-timing
    c = torch.full((B,), 2.5, dtype=F64)
    torch.testing.assert_close(ot.retimed_energy(t, c, bins), torch.tensor(2.5, dtype=F64))
    # e(t) = (3 t²)² (the path t³ between two points at distance 1): the best re-timing is the
    # straight constant-speed line, energy 1, against ∫ e dt = 9/5
    e = (3 * t**2) ** 2
    assert float(ot.retimed_energy(t, e, 256)) == pytest.approx(1.0, rel=1e-3)
    assert float(e.mean()) == pytest.approx(9 / 5, rel=1e-3)
    # never above the plain mean (Cauchy–Schwarz), whatever the speeds
    e = torch.rand(B, generator=gen(7), dtype=F64) * 10.0
    assert float(ot.retimed_energy(t, e, bins)) <= float(e.mean()) + 1e-12
    with pytest.raises(ValueError, match="bins"):
        ot.retimed_energy(t, e, 0)
    with pytest.raises(ValueError, match="every one of the"):
        ot.retimed_energy(torch.full((8,), 0.1, dtype=F64), e[:8], 4)
    with pytest.raises(ValueError, match="same shape"):
        ot.retimed_energy(t, e[:10], bins)


def test_retimed_penalized_loss():
    model = _model(True)
    x = torch.randn(64, 2, generator=gen(8), dtype=F64)
    base = nd.continuous_loss(model, x, generator=gen(9)).total
    pen = ot.penalized_loss(0.5, "marginal", retimed=True, bins=8)(model, x, generator=gen(9))
    # one batch value added to every sample: 0.5 × retimed_energy of the penalty's own draws
    g = gen(9)
    nd.continuous_loss(model, x, generator=g)
    t = nd.sample_times(64, generator=g, dtype=F64)
    g = gen(9)
    nd.continuous_loss(model, x, generator=g)
    v2 = ot.kinetic_penalty(model, x, generator=g, velocity="marginal")
    torch.testing.assert_close(pen - base, 0.5 * ot.retimed_energy(t, v2, 8).expand(64))
    pen.sum().backward()
    assert model.transform.net.out.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="bins"):
        ot.penalized_loss(0.5, retimed=True, bins=0)
