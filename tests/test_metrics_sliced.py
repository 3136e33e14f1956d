"""``SlicedWasserstein`` (fixed reference set and directions, numpy sorts) against the
reference ``sliced_wasserstein`` at the same directions, and against the closed form for
two Gaussians (p = 2, large samples)."""

import math

import pytest
import torch
from helpers import one_thread_fixture
from hypothesis import given, settings
from hypothesis import strategies as st

from ndmsolve.metrics import SlicedWasserstein, random_directions, sliced_wasserstein

_one_thread = one_thread_fixture()
F64 = torch.float64


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 60),
    m=st.integers(1, 60),
    d=st.integers(1, 4),
    p=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
    dtype=st.sampled_from([torch.float32, F64]),
)
def test_equals_the_reference_at_the_same_directions(seed, n, m, d, p, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = 2 * torch.randn(m, d, generator=g, dtype=dtype) + 0.5
    dirs = random_directions(17, d, generator=g, dtype=F64)
    want = float(sliced_wasserstein(x.double(), y.double(), directions=dirs, p=p))
    assert SlicedWasserstein(y, dirs, p=p)(x) == pytest.approx(want, rel=1e-12, abs=1e-14)


def test_reused_for_many_sets_and_flattens_trailing_dims():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(50, 2, 3, generator=g, dtype=F64)
    dirs = random_directions(32, 6, generator=g, dtype=F64)
    sw = SlicedWasserstein(y, dirs, p=1.0)
    for k in range(3):
        x = torch.randn(50, 2, 3, generator=g, dtype=F64) + k
        want = float(sliced_wasserstein(x, y, directions=dirs, p=1.0))
        assert sw(x) == pytest.approx(want, rel=1e-12)
    assert sw(y) == 0.0


def test_two_gaussians_closed_form():
    # 1-D projections N(θ·μ_i, θᵀS_iθ): W_2² = (θ·Δμ)² + (s_1 − s_2)², averaged over θ
    g = torch.Generator().manual_seed(1)
    n = 20000
    x = torch.randn(n, 2, generator=g, dtype=F64)
    y = torch.randn(n, 2, generator=g, dtype=F64) * torch.tensor([2.0, 0.5], dtype=F64)
    y = y + torch.tensor([1.0, -1.0], dtype=F64)
    dirs = random_directions(64, 2, generator=g, dtype=F64)
    s2 = (dirs**2 * torch.tensor([4.0, 0.25], dtype=F64)).sum(1).sqrt()
    w2 = (dirs @ torch.tensor([1.0, -1.0], dtype=F64)) ** 2 + (1 - s2) ** 2
    want = math.sqrt(float(w2.mean()))
    assert SlicedWasserstein(y, dirs)(x) == pytest.approx(want, rel=0.02)


def test_bad_input_names_the_argument():
    y = torch.randn(10, 2)
    with pytest.raises(ValueError, match="directions must be a tensor of shape \\(P, 2\\)"):
        SlicedWasserstein(y, torch.randn(5, 3))
    with pytest.raises(ValueError, match="p must be >= 1"):
        SlicedWasserstein(y, torch.randn(5, 2), p=0.5)
    with pytest.raises(ValueError, match="x must have dimension 2"):
        SlicedWasserstein(y, torch.randn(5, 2))(torch.randn(10, 3))
    with pytest.raises(TypeError, match="y must be a floating torch.Tensor"):
        SlicedWasserstein(torch.ones(3, 2, dtype=torch.long), torch.randn(5, 2))
