"""nd.sample / nd.log_likelihood with batch_size=: chunks equal one batch where the method
allows, and differ exactly where the docstring says (issue 17, item 8)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ndmsolve as nd

F64 = torch.float64


def _model():
    torch.manual_seed(0)
    return nd.NDM(nd.MLP(2, hidden=16, depth=2, time_dim=8), data_shape=(2,)).to(F64)


MODEL = _model()
SIZES = dict(n=st.integers(1, 13), batch_size=st.integers(1, 16))


@settings(max_examples=12, deadline=None)
@given(**SIZES, method=st.sampled_from(["heun", "unipc_2m", "ddim", "rk4"]))
def test_deterministic_methods_equal_one_batch(n, batch_size, method):
    one = nd.sample(MODEL, n, method, steps=5, generator=7)
    chunked = nd.sample(MODEL, n, method, steps=5, generator=7, batch_size=batch_size)
    torch.testing.assert_close(chunked.samples, one.samples, rtol=1e-10, atol=1e-12)
    chunks = -(-n // batch_size)
    assert chunked.nfe == chunks * one.nfe  # the total over the chunks
    assert chunked.solution.nfe == chunked.nfe


@settings(max_examples=8, deadline=None)
@given(**SIZES, method=st.sampled_from(["euler_maruyama", "ancestral"]))
def test_noisy_methods_draw_noise_chunk_after_chunk(n, batch_size, method):
    # documented: z1 for all n first, then each chunk's noise from the same generator
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(n, 2, generator=g, dtype=F64)
    parts = [
        nd.sample(MODEL, z1=z1[i : i + batch_size], method=method, steps=4, generator=g).samples
        for i in range(0, n, batch_size)
    ]
    chunked = nd.sample(MODEL, n, method, steps=4, generator=3, batch_size=batch_size)
    assert torch.equal(chunked.samples, torch.cat(parts))
    one = nd.sample(MODEL, n, method, steps=4, generator=3)
    if batch_size < n:  # another noise stream than one batch's
        assert not torch.allclose(chunked.samples, one.samples)
    else:
        assert torch.equal(chunked.samples, one.samples)


def test_adaptive_chunks_differ_within_tolerance():
    # t_min > 0 keeps it fast: the untrained field is stiff near t = 0
    kw = dict(rtol=1e-8, atol=1e-8, t_min=0.2, generator=0)
    one = nd.sample(MODEL, 12, "dopri5", **kw)
    chunked = nd.sample(MODEL, 12, "dopri5", batch_size=5, **kw)
    torch.testing.assert_close(chunked.samples, one.samples, rtol=1e-5, atol=1e-6)
    assert not torch.equal(chunked.samples, one.samples)
    assert [c[0] for c in chunked.solution.stats["chunks"]] != [one.nfe] * 3  # own steps
    assert chunked.nfe == sum(c[0] for c in chunked.solution.stats["chunks"])


def test_path_and_z1_are_concatenated():
    z1 = torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    one = nd.sample(MODEL, z1=z1, method="euler", steps=3, return_path=True)
    chunked = nd.sample(MODEL, z1=z1, method="euler", steps=3, return_path=True, batch_size=3)
    assert chunked.path.shape == (4, 7, 2)
    torch.testing.assert_close(chunked.path, one.path, rtol=1e-10, atol=1e-12)
    assert torch.equal(chunked.path_ts, one.path_ts)


@pytest.mark.parametrize(
    "bad, err", [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_bad_batch_size_is_named(bad, err):
    with pytest.raises(err, match="batch_size must be a positive int"):
        nd.sample(MODEL, 4, "euler", steps=2, batch_size=bad)
    with pytest.raises(err, match="batch_size must be a positive int"):
        nd.log_likelihood(MODEL, torch.zeros(4, 2, dtype=F64), "euler", steps=2, batch_size=bad)


@settings(max_examples=8, deadline=None)
@given(**SIZES)
def test_likelihood_hutchinson_chunks_equal_one_batch(n, batch_size):
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(n), dtype=F64)
    kw = dict(method="rk4", steps=4, trace="hutchinson", probes=2, generator=5)
    one = nd.log_likelihood(MODEL, x, **kw)
    chunked = nd.log_likelihood(MODEL, x, batch_size=batch_size, **kw)
    torch.testing.assert_close(chunked.logp, one.logp, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(chunked.logp_per_probe, one.logp_per_probe, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(chunked.z1, one.z1, rtol=1e-10, atol=1e-12)
    assert chunked.nfe == -(-n // batch_size) * one.nfe


def test_likelihood_adaptive_chunks_within_tolerance():
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    kw = dict(rtol=1e-6, atol=1e-6, t0=0.2)
    one = nd.log_likelihood(MODEL, x, "dopri5", **kw)
    chunked = nd.log_likelihood(MODEL, x, "dopri5", batch_size=4, **kw)
    torch.testing.assert_close(chunked.logp, one.logp, rtol=1e-4, atol=1e-4)
    assert not torch.equal(chunked.logp, one.logp)


def test_fault_in_a_chunk_names_the_points():
    class NaNBelow(torch.nn.Module):
        def forward(self, z, t):
            return torch.where((t < 0.3)[:, None], torch.nan, z)

    model = nd.NDM(NaNBelow(), data_shape=(2,))
    with pytest.raises(
        nd.NonFiniteError, match=r"in step \d+ .*\(points 0\.\.2 of 5, batch_size=3\)"
    ):
        nd.sample(model, 5, "euler", steps=10, batch_size=3)
