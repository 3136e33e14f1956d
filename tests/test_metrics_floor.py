"""Energy distance and metric floors, checked where the answer is known: closed-form
energy distances of 1D Gaussians, the exact expected floor δ (1/n + 1/m), identical sets
at the floor and shifted sets clearly above it, floors falling with n."""

import math

import pytest
import torch
from helpers import gen, one_thread_fixture
from hypothesis import given, settings
from hypothesis import strategies as st

from ndmsolve.data import checkerboard
from ndmsolve.metrics import (
    SAMPLE_METRICS,
    call_metric,
    energy_distance,
    floor,
    get_metric,
    sliced_wasserstein,
)

_one_thread = one_thread_fixture()
F64 = torch.float64


def _abs_normal_mean(mu: float, s: float) -> float:
    """E|Z| for Z ~ N(mu, s²)."""
    Phi = 0.5 * (1 + math.erf(-mu / (s * math.sqrt(2))))
    return s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s**2)) + mu * (1 - 2 * Phi)


def _normal(shift: float = 0.0, scale: float = 1.0):
    return lambda n, g: shift + scale * torch.randn(n, 1, generator=g, dtype=F64)


def test_energy_distance_of_1d_gaussians_matches_closed_form():
    # E[V] = 2 E|X−Y| − (1 − 1/n) E|X−X'| − (1 − 1/m) E|Y−Y'| for the V-statistic.
    mu, n = 0.7, 1500
    dxy, dxx = _abs_normal_mean(mu, math.sqrt(2)), _abs_normal_mean(0.0, math.sqrt(2))
    expected = 2 * dxy - 2 * (1 - 1 / n) * dxx
    vals = [
        float(energy_distance(_normal()(n, gen(s)), _normal(mu)(n, gen(100 + s)))) for s in range(8)
    ]
    m = sum(vals) / len(vals)
    se = torch.tensor(vals).std().item() / math.sqrt(len(vals))
    assert abs(m - expected) < 4 * se + 1e-3, (m, expected, se)
    assert expected > 0.1  # the test distinguishes the shift from zero


def test_energy_floor_is_delta_over_n():
    # Exact: E[E²] = δ (1/n + 1/m), δ = E|X − X'| = 2/√π for N(0, 1).
    n, n_ref = 60, 120
    fl = floor("energy_distance", _normal(), n, seeds=60, n_ref=n_ref)
    expected = 2 / math.sqrt(math.pi) * (1 / n + 1 / n_ref)
    assert abs(fl.mean - expected) < 4 * fl.se, (fl.mean, fl.se, expected)
    assert fl.n == n and fl.n_ref == n_ref and len(fl.values) == 60 and fl.seeds == list(range(60))


@pytest.mark.parametrize("metric", sorted(SAMPLE_METRICS))
def test_floor_falls_with_n(metric):
    small = floor(metric, checkerboard, 100, seeds=6)
    large = floor(metric, checkerboard, 1600, seeds=6)
    assert large.mean + 3 * large.se < small.mean - 3 * small.se, (small, large)


@pytest.mark.parametrize("metric", sorted(SAMPLE_METRICS))
def test_identical_at_floor_shifted_above(metric):
    n = 800
    fl = floor(metric, checkerboard, n, seeds=8)
    same, shifted = [], []
    for s in range(4):
        g = gen(1000 + s)
        x, y = checkerboard(n, g), checkerboard(n, g)
        same.append(call_metric(metric, x, y, generator=g))
        shifted.append(call_metric(metric, x, y + torch.tensor([1.0, 0.0]), generator=g))
    spread = max(fl.values) - min(fl.values)
    assert min(fl.values) - spread <= min(same) and max(same) <= max(fl.values) + spread, (fl, same)
    assert min(shifted) > max(2 * max(fl.values), fl.mean + 10 * fl.se), (fl, shifted)


def test_energy_distance_basic_properties():
    x, y = checkerboard(300, gen(0)), checkerboard(200, gen(1))
    assert float(energy_distance(x, x)) == 0.0
    assert torch.allclose(energy_distance(x, y), energy_distance(y, x))
    # flattening: an image-shaped batch equals its flat version
    xi, yi = torch.randn(50, 2, 3, 3, generator=gen(2)), torch.randn(40, 2, 3, 3, generator=gen(3))
    assert torch.allclose(energy_distance(xi, yi), energy_distance(xi.flatten(1), yi.flatten(1)))
    assert energy_distance(x.double(), y.double()).dtype == F64


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 4), st.integers(0, 10**6))
def test_energy_distance_nonnegative(n, m, d, seed):
    # The distance kernel is conditionally negative definite: the V-statistic is ≥ 0 always.
    g = gen(seed)
    x, y = torch.randn(n, d, generator=g, dtype=F64), 3 * torch.randn(m, d, generator=g, dtype=F64)
    assert float(energy_distance(x, y)) >= -1e-12


def test_call_metric_passes_generator():
    x, y = checkerboard(200, gen(0)), checkerboard(200, gen(1))
    a = call_metric("sliced_wasserstein", x, y, generator=gen(5))
    b = call_metric(sliced_wasserstein, x, y, generator=gen(5))
    c = call_metric("sliced_wasserstein", x, y, generator=gen(6))
    assert a == b and a != c
    assert call_metric(lambda u, v: (u.mean() - v.mean()).abs(), x, x) == 0.0


def test_errors_are_clear():
    with pytest.raises(ValueError, match="metric must be one of"):
        get_metric("fid")
    with pytest.raises(ValueError, match="metric must be one of"):
        floor("wasserstein", checkerboard, 10, seeds=2)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        floor("energy_distance", checkerboard, 10, seeds=1)
    with pytest.raises(ValueError, match="distinct"):
        floor("energy_distance", checkerboard, 10, seeds=[1, 1])
    with pytest.raises(ValueError, match="n must be an int >= 2"):
        floor("energy_distance", checkerboard, 1, seeds=2)
    with pytest.raises(ValueError, match=r"shape \(10, \.\.\.\)"):
        floor("energy_distance", lambda n, g: torch.zeros(3, 2), 10, seeds=2)
    with pytest.raises(TypeError, match="sampler must be callable"):
        floor("energy_distance", None, 10, seeds=2)
    with pytest.raises(ValueError, match="same dimension"):
        energy_distance(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(TypeError, match="floating"):
        energy_distance(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="returned nan"):
        call_metric(lambda u, v: torch.tensor(float("nan")), torch.zeros(2, 1), torch.zeros(2, 1))
