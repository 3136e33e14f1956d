"""Transport metrics against known answers: closed-form W2 of Gaussians, straight paths,
monotone 1D flows, and the exact PF-ODE of a classical diffusion."""

import math

import pytest
import torch
from helpers import F64, gen, one_thread_fixture
from hypothesis import given, settings
from hypothesis import strategies as st

import ndmsolve as nd
from ndmsolve.metrics import (
    coupling_cost,
    coupling_ratio,
    kinetic_energy,
    kinetic_ratio,
    ot_cost,
    retimed_kinetic_ratio,
)

_one_thread = one_thread_fixture()


def test_ot_cost_two_1d_gaussians_closed_form():
    # W2²(N(m1, s1²), N(m2, s2²)) = (m1 − m2)² + (s1 − s2)²
    n, (m1, s1), (m2, s2) = 200_000, (0.3, 0.5), (-1.2, 2.0)
    g = gen(0)
    a = m1 + s1 * torch.randn(n, 1, generator=g, dtype=F64)
    b = m2 + s2 * torch.randn(n, 1, generator=g, dtype=F64)
    exact = (m1 - m2) ** 2 + (s1 - s2) ** 2
    assert float(ot_cost(a, b)) == pytest.approx(exact, rel=1e-2)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_ot_cost_identical_zero_and_shift_squared(d):
    a = torch.randn(300, d, generator=gen(1), dtype=F64)
    shift = torch.linspace(-1.0, 2.0, d, dtype=F64)
    assert float(ot_cost(a, a[torch.randperm(300, generator=gen(2))])) == pytest.approx(
        0.0, abs=1e-12
    )
    # translating a set: the identity pairing is optimal, cost ‖shift‖²
    assert float(ot_cost(a, a + shift)) == pytest.approx(float(shift.pow(2).sum()), rel=1e-10)


def test_assignment_agrees_with_sorting_on_a_line():
    # a 1D problem embedded in 2D (zero second coordinate) goes through the assignment solver
    a, b = (
        torch.randn(400, 1, generator=gen(3), dtype=F64),
        torch.randn(400, 1, generator=gen(4), dtype=F64) ** 3,
    )
    z = torch.zeros_like(a)
    assert float(ot_cost(torch.cat([a, z], 1), torch.cat([b, z], 1))) == pytest.approx(
        float(ot_cost(a, b)), rel=1e-12
    )


def test_ot_cost_below_any_coupling_and_max_n_error():
    a, b = (
        torch.randn(200, 3, generator=gen(5), dtype=F64),
        torch.randn(200, 3, generator=gen(6), dtype=F64) + 1,
    )
    assert float(ot_cost(a, b)) < float(coupling_cost(a, b))
    assert float(coupling_ratio(a, b)) > 1.0
    big = torch.zeros(11, 2)
    with pytest.raises(ValueError, match="max_n=10"):
        ot_cost(big, big, max_n=10)
    with pytest.raises(ValueError, match="same shape"):
        ot_cost(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(TypeError, match="floating"):
        ot_cost(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2))


@pytest.mark.parametrize("reverse", [False, True])
def test_kinetic_energy_of_straight_constant_speed_path(reverse):
    a, b = (
        torch.randn(50, 3, generator=gen(7), dtype=F64),
        torch.randn(50, 3, generator=gen(8), dtype=F64),
    )
    ts = torch.linspace(0.0, 1.0, 17, dtype=F64)
    path = a + ts[:, None, None] * (b - a)  # (S, n, 3)
    if reverse:  # the same path traversed from t = 1 to t = 0
        ts, path = ts.flip(0), path.flip(0)
    torch.testing.assert_close(kinetic_energy(path, ts), (b - a).pow(2).sum(1))
    # the straight paths of a translation are OT: ratio 1
    shift = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    path = a + torch.linspace(0, 1, 9, dtype=F64)[:, None, None] * shift
    assert float(kinetic_ratio(path, torch.linspace(0, 1, 9, dtype=F64))) == pytest.approx(
        1.0, abs=1e-12
    )


def test_kinetic_energy_bad_input():
    with pytest.raises(ValueError, match="ts must be a tensor of shape"):
        kinetic_energy(torch.zeros(5, 3, 1), torch.linspace(0, 1, 4))
    with pytest.raises(ValueError, match="monotone"):
        kinetic_energy(torch.zeros(3, 3, 1), torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="S >= 2"):
        kinetic_energy(torch.zeros(1, 3, 1), torch.zeros(1))


@settings(max_examples=25, deadline=None)
@given(
    a=st.floats(-2.0, 2.0),
    b=st.floats(0.0, 3.0),
    c=st.floats(0.1, 3.0),
    seed=st.integers(0, 10_000),
)
def test_coupling_ratio_of_any_1d_flow_is_one(a, b, c, seed):
    # dz/dt = 1 + a z + b sin(c z + t): a smooth 1D field; its flow map is monotone
    z0 = 2.0 * torch.randn(64, 1, generator=gen(seed), dtype=F64)
    sol = nd.solve(
        lambda t, z: 1.0 + a * z + b * torch.sin(c * z + t), z0, 0.0, 1.0, method="rk4", steps=20
    )
    assert float(coupling_ratio(z0, sol.y)) == pytest.approx(1.0, abs=1e-9)


def _exact_ddpm_1d():
    sched = nd.LinearLogSNR(-12.0, 12.0)
    mix = nd.GaussianMixture(
        torch.tensor([0.5, 0.5], dtype=F64),
        torch.tensor([[-1.5], [1.5]], dtype=F64),
        torch.full((2, 1, 1), 0.25**2, dtype=F64),
    )
    return nd.NDM(nd.ExactPredictor(mix, sched), schedule=sched, data_shape=(1,)).double()


def test_kinetic_ratio_of_exact_ddpm_pf_ode_converges():
    model = _exact_ddpm_1d()
    z1 = torch.randn(400, 1, generator=gen(9), dtype=F64)
    ratios = []
    for steps in (200, 400):
        s = nd.sample(model, z1=z1, method="heun", steps=steps, return_path=True)
        ratios.append(float(kinetic_ratio(s.path, s.path_ts)))
    assert math.isfinite(ratios[0]) and ratios[0] > 1.2  # a diffusion's PF-ODE is far from OT
    assert ratios[1] == pytest.approx(ratios[0], rel=1e-2)


def test_retimed_kinetic_ratio_closed_forms():
    ts = torch.linspace(0.0, 1.0, 401, dtype=F64)
    a = torch.randn(300, 1, generator=gen(3), dtype=F64).sort(0).values
    b = (2.0 * torch.randn(300, 1, generator=gen(4), dtype=F64) + 1.0).sort(0).values
    # sorted (OT) pairs on straight lines at the common speed profile phi(t) = t^3: a re-timing
    # makes them the displacement interpolation, ratio 1, while the kinetic ratio is
    # ∫ phi'^2 dt = 9/5
    path = a + (ts**3)[:, None, None] * (b - a)
    assert float(retimed_kinetic_ratio(path, ts)) == pytest.approx(1.0, abs=1e-12)
    assert float(kinetic_ratio(path, ts)) == pytest.approx(9 / 5, rel=1e-3)
    # curved paths at constant speed (arcs of circles): nothing to gain from re-timing
    r = 0.5 + torch.rand(300, 1, generator=gen(5), dtype=F64)
    angle = 2.0 * ts[:, None, None]
    arcs = r * torch.cat([angle.cos(), angle.sin()], -1)  # (S, 300, 2)
    torch.testing.assert_close(retimed_kinetic_ratio(arcs, ts), kinetic_ratio(arcs, ts))
    assert float(kinetic_ratio(arcs, ts)) > 1.2  # curved: far from OT, re-timed or not


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.floats(0.3, 4.0))
def test_retimed_kinetic_ratio_between_one_and_kinetic_ratio(seed, p):
    g = gen(seed)
    ts = torch.linspace(1.0, 0.0, 33, dtype=F64)
    z1 = torch.randn(40, 2, generator=g, dtype=F64)
    x0 = torch.randn(40, 2, generator=g, dtype=F64)
    wiggle = torch.randn(40, 2, generator=g, dtype=F64)
    s = (1 - ts) ** p
    path = z1 + s[:, None, None] * (x0 - z1) + torch.sin(math.pi * ts)[:, None, None] * wiggle
    retimed, ratio = float(retimed_kinetic_ratio(path, ts)), float(kinetic_ratio(path, ts))
    assert 1.0 - 1e-12 <= retimed <= ratio + 1e-12
