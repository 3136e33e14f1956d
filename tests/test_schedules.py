"""Schedules against autograd and their defining identities (float64 throughout)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ndmsolve as nd
from ndmsolve.schedules import make_schedule

D = torch.float64


def _learned(seed: int, scale: float = 1.0, lo=-9.0, hi=7.0) -> nd.LearnedLogSNR:
    """A LearnedLogSNR whose parameters are pushed well away from the near-linear init."""
    sch = nd.LearnedLogSNR(lo, hi, hidden=6)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sch.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return sch


def _schedules():
    return [
        ("linear", nd.LinearLogSNR(-10.0, 8.0)),
        ("cosine", nd.CosineLogSNR(-15.0, 15.0)),
        ("cosine_narrow", nd.CosineLogSNR(-3.0, 2.0)),
        ("learned_init", nd.LearnedLogSNR(-12.0, 12.0)),
        ("learned_rand0", _learned(0)),
        ("learned_rand1", _learned(1, scale=2.0)),
    ]


SCHEDS = _schedules()
IDS = [n for n, _ in SCHEDS]


def _t(n=41, lo=0.0, hi=1.0):
    return torch.linspace(lo, hi, n, dtype=D)


def _grad_t(fn, t):
    """d/dt of an elementwise function of t, by reverse-mode autograd (independent of jvp)."""
    t = t.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(t).sum(), t)
    return g


@pytest.mark.parametrize("sch", [s for _, s in SCHEDS], ids=IDS)
def test_dlog_snr_matches_autograd(sch):
    t = _t()
    want = _grad_t(sch.log_snr, t)
    got = sch.dlog_snr(t)
    assert got.dtype == D and got.shape == t.shape
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("sch", [s for _, s in SCHEDS], ids=IDS)
def test_dlog_alpha_and_g2_match_autograd(sch):
    t = _t(lo=0.01, hi=0.99)
    # log α and log(σ²/α²) straight from the public (α, σ) pair.
    want_dla = _grad_t(lambda tt: torch.log(sch(tt)[0]), t)
    want_g2 = sch(t)[1] ** 2 * _grad_t(lambda tt: torch.log(sch(tt)[1] ** 2 / sch(tt)[0] ** 2), t)
    torch.testing.assert_close(sch.dlog_alpha(t), want_dla, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sch.g2(t), want_g2, rtol=1e-9, atol=1e-12)
    assert bool((sch.g2(t) > 0).all())


@pytest.mark.parametrize("sch", [s for _, s in SCHEDS], ids=IDS)
def test_variance_preserving_and_alpha_sigma2(sch):
    t = _t()
    alpha, sigma = sch(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t), rtol=0, atol=1e-14)
    a2, s2 = sch.alpha_sigma2(t)
    torch.testing.assert_close(a2, alpha**2, rtol=1e-13, atol=1e-300)
    torch.testing.assert_close(s2, sigma**2, rtol=1e-13, atol=1e-300)
    # SNR identity: α²/σ² = e^λ.
    torch.testing.assert_close(torch.log(a2 / s2), sch.log_snr(t), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("sch", [s for _, s in SCHEDS], ids=IDS)
def test_strictly_decreasing_and_end_points(sch):
    t = _t(2001)
    lam = sch.log_snr(t)
    assert bool((lam[1:] < lam[:-1]).all()), "log-SNR must be strictly decreasing"
    assert bool((sch.dlog_snr(t) < 0).all())
    ends = sch.log_snr(torch.tensor([0.0, 1.0], dtype=D))
    torch.testing.assert_close(
        ends, torch.tensor([sch.logsnr_max, sch.logsnr_min], dtype=D), rtol=0, atol=1e-10
    )


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.1, 3.0),
    lo=st.floats(-20.0, 0.0),
    width=st.floats(0.5, 30.0),
)
def test_learned_schedule_random_parameters(seed, scale, lo, width):
    sch = _learned(seed, scale, lo, lo + width)
    t = _t(257)
    lam = sch.log_snr(t)
    assert bool((lam[1:] < lam[:-1]).all())
    torch.testing.assert_close(
        lam[[0, -1]], torch.tensor([lo + width, lo], dtype=D), rtol=0, atol=1e-9
    )
    torch.testing.assert_close(sch.dlog_snr(t), _grad_t(sch.log_snr, t), rtol=1e-9, atol=1e-9)


def test_gradients_reach_learned_parameters():
    sch = _learned(3)
    t = _t(33, 0.05, 0.95)
    alpha, sigma = sch(t)
    loss = (alpha * sigma).sum() + sch.g2(t).sum() + sch.dlog_alpha(t).sum()
    loss.backward()
    for name, p in sch.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().max()) > 0, f"no gradient reaches {name}"


def test_end_points_do_not_depend_on_parameters():
    # Fixed end points: the gradient of λ(0), λ(1) w.r.t. every parameter is 0.
    sch = _learned(4)
    lam = sch.log_snr(torch.tensor([0.0, 1.0], dtype=D))
    grads = torch.autograd.grad(lam.sum(), list(sch.parameters()), allow_unused=True)
    for g in grads:
        assert g is None or float(g.abs().max()) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sch", [s for _, s in SCHEDS], ids=IDS)
def test_dtype_and_shape_follow_t(sch, dtype):
    t = torch.rand(5, 3, dtype=dtype)
    for out in (*sch(t), sch.log_snr(t), sch.dlog_snr(t), sch.g2(t), sch.dlog_alpha(t)):
        assert out.dtype == dtype and out.shape == t.shape


def test_cosine_is_the_nichol_dhariwal_schedule_in_the_interior():
    # Without clipping (wide range), α² = cos²(πt/2) up to the tiny end offsets.
    sch = nd.CosineLogSNR(-30.0, 30.0)
    t = _t(21, 0.05, 0.95)
    alpha, _ = sch(t)
    torch.testing.assert_close(alpha, torch.cos(0.5 * math.pi * t), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [nd.LinearLogSNR, nd.CosineLogSNR, nd.LearnedLogSNR])
@pytest.mark.parametrize("lo,hi", [(5.0, 5.0), (6.0, -2.0)])
def test_bad_range_names_argument(cls, lo, hi):
    with pytest.raises(ValueError, match="logsnr_min"):
        cls(logsnr_min=lo, logsnr_max=hi)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_range(bad):
    with pytest.raises(ValueError, match="logsnr_m"):
        nd.LinearLogSNR(logsnr_min=bad)


def test_unknown_schedule_name():
    with pytest.raises(ValueError, match="schedule"):
        make_schedule("nope")
    with pytest.raises(TypeError, match="schedule"):
        make_schedule(3.0)
    assert isinstance(make_schedule("cosine"), nd.CosineLogSNR)
    assert isinstance(make_schedule(None), nd.LinearLogSNR)


def test_schedule_rejects_bad_t():
    sch = nd.LinearLogSNR()
    with pytest.raises(ValueError, match="t must lie"):
        sch(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="t must lie"):
        sch(torch.tensor([float("nan")]))
    with pytest.raises(TypeError, match="t must be a floating"):
        sch(torch.tensor([0, 1]))


# --------------------------------------------------------------------------- t_of_log_snr
class _VPLinearBeta(nd.Schedule):
    """DDPM's linear β as a continuous VP schedule: log(1 + e^{−λ}) = β0 t + ½(β1 − β0) t²
    (no closed-form override: ``t_of_log_snr`` bisects)."""

    def __init__(self, b0=0.1, b1=20.0, c0=0.0):
        super().__init__()
        self.b0, self.b1, self.c0 = b0, b1, c0
        self.logsnr_min, self.logsnr_max = float(self.log_snr(torch.tensor(1.0))), 0.0

    def log_snr(self, t):
        tt = torch.as_tensor(t, dtype=torch.float64) if not torch.is_tensor(t) else t
        u = self.c0 + self.b0 * tt + 0.5 * (self.b1 - self.b0) * tt**2
        return -torch.log(torch.expm1(u).clamp_min(1e-300))


INVERT = [s for _, s in SCHEDS] + [_VPLinearBeta()]


@pytest.mark.parametrize("sched", INVERT, ids=IDS + ["vp_linear_beta"])
@settings(max_examples=40, deadline=None)
@given(u=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8))
def test_t_of_log_snr_round_trips(sched, u):
    """λ(t_of_log_snr(λ)) = λ and t_of_log_snr(λ(t)) = t (where λ' is not tiny), float64."""
    t = torch.tensor(u, dtype=D).clamp(1e-6, 1.0)  # VP-β: λ(0) = +inf, keep off it
    with torch.no_grad():
        lam = sched.log_snr(t)
        back = sched.t_of_log_snr(lam)
        assert back.dtype == D and back.shape == t.shape
        torch.testing.assert_close(sched.log_snr(back), lam, rtol=1e-10, atol=1e-10)
        slope = sched.dlog_snr(t).abs()
        ok = slope > 1e-3  # t is determined to ~1e-16 |λ|/|λ'| by λ's rounding
        torch.testing.assert_close(back[ok], t[ok], rtol=0, atol=1e-10)


@pytest.mark.parametrize("sched", [nd.LinearLogSNR(-10.0, 8.0), nd.CosineLogSNR(-15.0, 15.0)])
def test_t_of_log_snr_closed_forms_match_bisection(sched):
    lam = torch.linspace(sched.logsnr_min, sched.logsnr_max, 33, dtype=D)
    torch.testing.assert_close(
        sched.t_of_log_snr(lam), nd.Schedule.t_of_log_snr(sched, lam), rtol=0, atol=1e-12
    )


def test_t_of_log_snr_errors_and_dtypes():
    sched = nd.CosineLogSNR(-10.0, 10.0)
    for s in (sched, nd.LearnedLogSNR(-10.0, 10.0)):
        with pytest.raises(ValueError, match="lam must lie in"):
            s.t_of_log_snr(10.5)
        with pytest.raises(ValueError, match="lam must lie in"):
            s.t_of_log_snr(torch.tensor([0.0, -11.0]))
    assert sched.t_of_log_snr(0.0).dtype == D and float(sched.t_of_log_snr(10.0)) == 0.0
    assert sched.t_of_log_snr(torch.tensor([0.0], dtype=torch.float32)).dtype == torch.float32


def test_t_of_log_snr_is_exact_at_the_ends():
    for sched in (_VPLinearBeta(c0=1e-4), nd.LearnedLogSNR(-10.0, 10.0)):
        ends = sched.log_snr(torch.tensor([1.0, 0.0], dtype=D)).detach()
        assert sched.t_of_log_snr(ends).tolist() == [1.0, 0.0]
