"""``ExactPredictor(shared_time=True)``: a batch at one time goes through
``GaussianMixture.posterior_mean_shared`` (covariances factorised once), which must give
the general path's E[x | z_t] to rounding, for the identity and an affine transform; mixed
times take the general path unchanged."""

import pytest
import torch
from helpers import one_thread_fixture
from hypothesis import given, settings
from hypothesis import strategies as st

import ndmsolve as nd
from ndmsolve.analytic import AffineTimeTransform, ExactPredictor, GaussianMixture, UniformBoxes

_one_thread = one_thread_fixture()
F64 = torch.float64


def _mixture(K: int, d: int, g: torch.Generator) -> GaussianMixture:
    means = 2 * torch.randn(K, d, generator=g, dtype=F64)
    a = torch.randn(K, d, d, generator=g, dtype=F64)
    covs = a @ a.transpose(1, 2) / d + 0.05 * torch.eye(d, dtype=F64)
    return GaussianMixture(torch.rand(K, generator=g, dtype=F64) + 0.1, means, covs)


def _affine(d: int) -> AffineTimeTransform:
    z = torch.zeros(d, dtype=F64)
    return AffineTimeTransform(z - 0.6, z.clone(), z + 0.5, z.clone())


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    K=st.integers(1, 5),
    d=st.integers(1, 3),
    t=st.floats(0.0, 1.0),
    affine=st.booleans(),
)
def test_shared_path_equals_the_general_one(seed, K, d, t, affine):
    g = torch.Generator().manual_seed(seed)
    data, sched = _mixture(K, d, g), nd.LinearLogSNR(-10.0, 10.0)
    tr = _affine(d) if affine else None
    z = 3 * torch.randn(40, d, generator=g, dtype=F64)
    tt = torch.full((40,), t, dtype=F64)
    fast = ExactPredictor(data, sched, tr, shared_time=True)
    want = ExactPredictor(data, sched, tr)(z, tt)
    got = fast(z, tt)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    # the fast path is the one taken (ExactPredictor works on data.to(z's dtype))
    assert torch.equal(got, data.to(dtype=F64).posterior_mean_shared(z, tt, sched, tr))


def test_mixed_times_take_the_general_path_bitwise():
    g = torch.Generator().manual_seed(0)
    data, sched = _mixture(3, 2, g), nd.CosineLogSNR()
    z = torch.randn(30, 2, generator=g, dtype=F64)
    t = torch.rand(30, generator=g, dtype=F64)
    fast = ExactPredictor(data, sched, _affine(2), shared_time=True)
    want = data.to(dtype=F64).posterior_mean(z, t, sched, _affine(2))
    assert torch.equal(fast(z, t), want)


def test_float32_batch_matches_float64_closely():
    g = torch.Generator().manual_seed(2)
    data, sched = _mixture(4, 2, g), nd.LinearLogSNR(-10.0, 10.0)
    z = torch.randn(100, 2, generator=g, dtype=F64)
    t = torch.full((100,), 0.3, dtype=F64)
    pred = ExactPredictor(data, sched, shared_time=True)
    assert torch.allclose(pred(z.float(), t.float()).double(), pred(z, t), atol=1e-4)


def test_shared_time_needs_a_gaussian_mixture():
    with pytest.raises(TypeError, match="shared_time=True needs GaussianMixture data"):
        ExactPredictor(UniformBoxes.checkerboard(), nd.LinearLogSNR(), shared_time=True)
