"""Error norms of the adaptive solvers: each matches its formula, "sample_max" catches one bad
sample that "rms" lets through, and step control still syncs once per attempted step."""

import math

import pytest
import torch
from helpers import one_thread_fixture
from hypothesis import given, settings
from hypothesis import strategies as st

from ndmsolve.solvers import solve, tableaus
from ndmsolve.solvers.adaptive import error_ratio
from ndmsolve.solvers.base import time_tensor
from ndmsolve.solvers.norms import NORMS, max_norm, resolve_norm, rms_norm, sample_max_norm
from ndmsolve.solvers.rk import rk_step

F64 = torch.float64
_one_thread = one_thread_fixture()


def test_norms_match_their_formulas_by_hand():
    x = torch.tensor([[3.0, 4.0], [1.0, -1.0], [0.0, 0.0]], dtype=F64)
    # rms: sqrt((9 + 16 + 1 + 1) / 6); sample_max: max(sqrt(25/2), 1, 0); max: 4
    assert rms_norm(x).item() == pytest.approx(math.sqrt(27 / 6), rel=1e-15)
    assert sample_max_norm(x).item() == pytest.approx(math.sqrt(12.5), rel=1e-15)
    assert max_norm(x).item() == 4.0
    # trailing dims are flattened into the sample: (2, 2, 2) -> rows of 4
    y = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 0.0]]], dtype=F64)
    assert sample_max_norm(y).item() == pytest.approx(1.0)  # row 1: sqrt(4/4) = 1, row 0: 1
    y[1, 1, 1] = 2.0
    assert sample_max_norm(y).item() == pytest.approx(math.sqrt(2.0))
    # a 1-D state: each entry is a sample; a 0-dim state is one sample
    v = torch.tensor([0.5, -2.0, 1.0], dtype=F64)
    assert sample_max_norm(v).item() == 2.0 and max_norm(v).item() == 2.0
    assert sample_max_norm(torch.tensor(-3.0, dtype=F64)).item() == 3.0
    assert rms_norm(torch.tensor(-3.0, dtype=F64)).item() == 3.0


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=0, max_size=3), seed=st.integers(0, 2**16))
def test_norms_are_ordered_and_exact_for_equal_rows(shape, seed):
    x = torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(seed))
    r, s, m = rms_norm(x).item(), sample_max_norm(x).item(), max_norm(x).item()
    assert r <= s * (1 + 1e-12) and s <= m * (1 + 1e-12)
    if x.ndim >= 1:  # every sample equal: sample_max = rms
        same = x[:1].expand_as(x)
        assert sample_max_norm(same).item() == pytest.approx(rms_norm(same).item(), rel=1e-12)


def test_error_ratio_scales_by_atol_plus_rtol_times_state():
    err = torch.tensor([[1e-3, 0.0], [0.0, 4e-3]], dtype=F64)
    y0 = torch.tensor([[1.0, 0.0], [0.0, -3.0]], dtype=F64)
    y1 = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=F64)
    rtol, atol = 1e-2, 1e-3
    x = torch.tensor([[1e-3 / (1e-3 + 2e-2), 0.0], [0.0, 4e-3 / (1e-3 + 3e-2)]], dtype=F64)
    for name, fn in NORMS.items():
        assert error_ratio(err, y0, y1, rtol, atol, fn).item() == pytest.approx(fn(x).item())
        assert resolve_norm(name) is fn


def _stiff_one():
    """y' = -λ_b y with λ = 1 for 99 samples and λ = 12 for one."""
    lam = torch.ones(100, 1, dtype=F64)
    lam[37] = 12.0
    y0 = torch.ones(100, 2, dtype=F64)
    return (lambda t, y: -lam * y), y0, lam


def test_sample_max_rejects_a_step_rms_accepts():
    f, y0, lam = _stiff_one()
    h = 0.1
    tab = tableaus.dopri5
    ts = [time_tensor(c * h, y0) for c in tab.c]
    y1, _, err = rk_step(f, tab, ts, h, y0)
    # tolerance where the bad sample's own error ratio is 3: RMS over 100 samples ~ 0.3
    unit = sample_max_norm(err / (1 + torch.maximum(y0.abs(), y1.abs()))).item()
    tol = unit / 3
    assert error_ratio(err, y0, y1, tol, tol, rms_norm).item() < 1.0
    assert error_ratio(err, y0, y1, tol, tol, sample_max_norm).item() > 1.0
    kw = dict(rtol=tol, atol=tol, h0=h)
    rms = solve(f, y0, 0.0, h, "dopri5", norm="rms", **kw)
    smax = solve(f, y0, 0.0, h, "dopri5", norm="sample_max", **kw)
    assert rms.n_accepted == 1 and rms.n_rejected == 0
    assert smax.n_rejected >= 1
    exact = y0 * torch.exp(-lam * h)
    bad_rms = (rms.y - exact)[37].abs().max().item()
    bad_smax = (smax.y - exact)[37].abs().max().item()
    assert bad_smax < bad_rms / 3


def test_sample_max_bounds_every_sample_over_a_solve():
    """Rotations y' = ω_b J y, ω = 1 for 99 samples and 12 for one: the global error of the
    fast one grows with time, so its tolerance matters over the whole solve."""
    w = torch.ones(100, dtype=F64)
    w[37] = 12.0
    y0 = torch.stack([torch.ones(100, dtype=F64), torch.zeros(100, dtype=F64)], 1)

    def f(t, y):
        return w[:, None] * torch.stack([-y[:, 1], y[:, 0]], 1)

    tol = 1e-6
    exact = torch.stack([torch.cos(2 * w), torch.sin(2 * w)], 1)
    worst = {}
    for norm in ("rms", "sample_max", "max"):
        sol = solve(f, y0, 0.0, 2.0, "tsit5", rtol=tol, atol=tol, norm=norm)
        worst[norm] = (sol.y - exact).abs().max().item()
    assert worst["sample_max"] < worst["rms"] / 3
    assert worst["max"] <= worst["sample_max"] * 1.5
    assert worst["sample_max"] < 10 * tol


def test_callable_norm_is_used_and_validated():
    f, y0, _ = _stiff_one()
    calls = []

    def half_rms(x):
        calls.append(tuple(x.shape))
        return 0.5 * x.square().mean().sqrt()

    loose = solve(f, y0, 0.0, 1.0, "dopri5", rtol=1e-6, atol=1e-6, norm=half_rms)
    ref = solve(f, y0, 0.0, 1.0, "dopri5", rtol=1e-6, atol=1e-6, norm="rms")
    assert calls and all(s == tuple(y0.shape) for s in calls)
    assert loose.nfe < ref.nfe  # a smaller norm is a looser tolerance
    with pytest.raises(ValueError, match="norm must return a 0-dim tensor"):
        solve(f, y0, 0.0, 1.0, "dopri5", norm=lambda x: x.abs())
    with pytest.raises(ValueError, match="norm must be one of"):
        solve(f, y0, 0.0, 1.0, "dopri5", norm="l2")
    with pytest.raises(ValueError, match="norm applies to adaptive methods"):
        solve(f, y0, 0.0, 1.0, "rk4", steps=4, norm="max")


def test_norm_reaches_torchdiffeq_and_the_adaptive_sde():
    f, y0, _ = _stiff_one()
    a = solve(f, y0, 0.0, 1.0, "torchdiffeq:dopri5", rtol=1e-6, atol=1e-6, norm="rms")
    b = solve(f, y0, 0.0, 1.0, "torchdiffeq:dopri5", rtol=1e-6, atol=1e-6, norm="sample_max")
    assert b.nfe > a.nfe
    g = lambda t, y: torch.full_like(y, 0.05)  # noqa: E731
    kw = dict(g=g, noise="additive", rtol=1e-2, atol=1e-2)
    s_rms = solve(
        f,
        y0,
        0.0,
        1.0,
        "adaptive_heun_sde",
        generator=torch.Generator().manual_seed(0),
        norm="rms",
        **kw,
    )
    s_max = solve(
        f,
        y0,
        0.0,
        1.0,
        "adaptive_heun_sde",
        generator=torch.Generator().manual_seed(0),
        norm="max",
        **kw,
    )
    assert s_max.nfe > s_rms.nfe


@pytest.mark.parametrize("norm", ["rms", "sample_max", "max"])
def test_one_host_sync_per_attempted_step(norm, monkeypatch):
    """Every way a tensor reaches the host is counted; beyond a fixed set-up cost (initial
    state check, initial step) the solve reads one value per attempted step."""
    count = [0]
    for name in ("tolist", "item", "__bool__", "__float__", "__int__"):
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, **k):
            count[0] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    f, y0, _ = _stiff_one()
    sol = solve(f, y0, 0.0, 3.0, "dopri5", rtol=1e-7, atol=1e-7, norm=norm)
    monkeypatch.undo()
    attempts = sol.n_accepted + sol.n_rejected
    assert attempts > 10
    assert count[0] - attempts <= 6, (count[0], attempts)
