"""DiscreteSchedule (ndmsolve.schedules; old path ndmsolve.schedules_discrete): a diffusers/DDPM ᾱ table as a Schedule.

Exact at integer k, λ' against autograd, strictly decreasing, for any valid table
(hypothesis); the two interpolations against their formulas; configuration round trip.
"""

import math

import pytest
import torch
from helpers import F64, one_thread_fixture
from hypothesis import given, settings
from hypothesis import strategies as st

import ndmsolve as nd
from ndmsolve.config import from_config, to_config

_one_thread = one_thread_fixture()


def linear_table(K: int = 1000, dtype=F64) -> torch.Tensor:
    """diffusers' default table: β linear from 1e-4 to 0.02, in float32 as diffusers has it."""
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, K, dtype=torch.float32), 0).to(dtype)


@pytest.mark.parametrize("interp", ["sigma_over_alpha", "log_snr"])
def test_discrete_schedule_exact_at_integer_timesteps(interp):
    a = linear_table()
    sched = nd.DiscreteSchedule(a, interp=interp)
    k = torch.arange(1000, dtype=F64)
    t = sched.time(k)
    alpha, sigma = sched(t)
    assert torch.allclose(alpha**2, a, rtol=1e-13, atol=0)
    assert torch.allclose(sigma**2, 1 - a, rtol=1e-12, atol=0)
    assert torch.equal(sched.timestep(t).round(), k)
    assert (sched.logsnr_max, sched.logsnr_min) == (
        pytest.approx(math.log(a[0] / (1 - a[0]))),
        pytest.approx(math.log(a[-1] / (1 - a[-1]))),
    )
    assert torch.equal(sched.time(torch.tensor([0, 999])), torch.tensor([0.0, 1.0]))


def test_discrete_schedule_interpolations_between_integers():
    a = linear_table()
    s = ((1 - a) / a).sqrt()
    k = torch.tensor([10.25, 500.5, 998.75], dtype=F64)
    j, f = k.floor().long(), k - k.floor()
    lam_sigma = nd.DiscreteSchedule(a).log_snr(k / 999)
    want = -2 * torch.log(s[j] + f * (s[j + 1] - s[j]))  # σ/α linear in k
    assert torch.allclose(lam_sigma, want, rtol=1e-13, atol=1e-13)
    lam = torch.log(a / (1 - a))
    lam_log = nd.DiscreteSchedule(a, interp="log_snr").log_snr(k / 999)
    assert torch.allclose(lam_log, lam[j] + f * (lam[j + 1] - lam[j]), rtol=1e-13, atol=1e-13)
    assert (lam_sigma - lam_log).abs().max() > 1e-6  # they differ between integers


tables = st.lists(st.floats(1e-3, 0.5), min_size=2, max_size=40).map(
    lambda b: torch.cumprod(1 - torch.tensor(b, dtype=F64), 0)
)


@settings(max_examples=40, deadline=None)
@given(tables, st.sampled_from(["sigma_over_alpha", "log_snr"]), st.integers(0, 2**31 - 1))
def test_discrete_schedule_any_table(a, interp, seed):
    sched = nd.DiscreteSchedule(a, interp=interp)
    K = a.numel()
    # exact at integer k, strictly decreasing on a fine grid
    t_int = torch.arange(K, dtype=F64) / (K - 1)
    assert torch.allclose(sched.alpha_sigma2(t_int)[0], a, rtol=1e-12, atol=0)
    t = torch.linspace(0, 1, 20 * K + 1, dtype=F64)
    assert bool((sched.log_snr(t).diff() < 0).all())
    # closed-form λ' = autograd's, off the integers (where the one-sided slopes differ)
    u = torch.rand(64, generator=torch.Generator().manual_seed(seed), dtype=F64)
    k = torch.randint(0, K - 1, (64,), generator=torch.Generator().manual_seed(seed + 1))
    tt = ((k + 0.02 + 0.96 * u) / (K - 1)).requires_grad_(True)
    (grad,) = torch.autograd.grad(sched.log_snr(tt).sum(), tt)
    assert torch.allclose(sched.dlog_snr(tt.detach()), grad, rtol=1e-10, atol=1e-10)
    assert bool((sched.dlog_snr(tt.detach()) < 0).all())


def test_discrete_schedule_config_round_trip_dtype_and_errors():
    sched = nd.DiscreteSchedule(linear_table(50), interp="log_snr")
    clone = from_config(to_config(sched))
    t = torch.rand(16, dtype=F64)
    assert clone.interp == "log_snr" and torch.equal(clone.log_snr(t), sched.log_snr(t))
    assert sched.log_snr(t.float()).dtype == torch.float32
    assert "lam_table" not in sched.state_dict()  # rebuilt from the table, not stored twice
    with pytest.raises(ValueError, match="interp must be one of"):
        nd.DiscreteSchedule(linear_table(5), interp="cubic")
    with pytest.raises(ValueError, match="alphas_cumprod must be strictly decreasing"):
        nd.DiscreteSchedule(torch.tensor([0.9, 0.9, 0.5]))
    with pytest.raises(ValueError, match=r"alphas_cumprod must lie in \(0, 1\)"):
        nd.DiscreteSchedule(torch.tensor([0.9, 0.5, 0.0]))
    with pytest.raises(ValueError, match="at least 2 entries"):
        nd.DiscreteSchedule(torch.tensor([0.5]))
