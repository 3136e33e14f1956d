"""continuous_loss(prior_fraction=f): the prior's F(x, 1) part on a random B/m-weighted
subset of rows. Against the exact loss (f = 1): its structure for any batch, unbiasedness of
the batch mean and of its gradient (Monte Carlo, within standard errors), and a biased
variant (the subset without the B/m weight) that the same tests reject."""

import math

import pytest
import torch
from helpers import gen, one_thread_fixture
from hypothesis import given, settings
from hypothesis import strategies as st

import ndmsolve as nd
from ndmsolve.fields import MLP, EpsilonPredictor
from ndmsolve.objectives import continuous_loss, prior_loss, prior_rows

D64 = torch.float64
_one_thread = one_thread_fixture()


def _model(kind: str = "general", seed: int = 0) -> nd.NDM:
    """A small float64 NDM whose α_1 is not tiny (λ_1 = −2), so the prior's F part matters."""
    torch.manual_seed(seed)
    sched = nd.LinearLogSNR(-2.0, 6.0)
    pred = EpsilonPredictor(MLP(2, hidden=8, depth=1, out_dim=2), sched)
    tr = {
        "general": lambda: nd.ResidualTransform(MLP(2, hidden=8, depth=1, out_dim=2)),
        "time_basis": lambda: nd.TimeBasisTransform(MLP(2, hidden=8, depth=1, out_dim=8), 4),
        "identity": lambda: None,
    }[kind]()
    return nd.NDM(pred, tr, sched).to(D64)


def _x(B: int, seed: int = 1) -> torch.Tensor:
    return nd.data.checkerboard(B, gen(seed)).to(D64)


def _const(model: nd.NDM, x: torch.Tensor) -> torch.Tensor:
    """The prior's F-free part ½ d (σ_1² − 1 − log σ_1²) per row: prior_loss less α_1² ‖F‖²/2."""
    alpha2 = torch.sigmoid(model.schedule.log_snr(torch.ones(1, dtype=D64)))
    F1 = model.F(x, torch.ones(x.shape[0], dtype=D64))
    return prior_loss(model, x) - 0.5 * alpha2 * F1.pow(2).sum(1)


def _unweighted(model, x, prior, f):
    """The biased variant: the subset's F part without the B/m weight."""
    B = x.shape[0]
    c = _const(model, x)
    return c + (prior - c) * prior_rows(f, B) / B


def _z(draws: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """(mean of draws − exact) / standard error, elementwise over draws' trailing dims."""
    se = draws.std(0) / math.sqrt(draws.shape[0])
    return (draws.mean(0) - exact) / se


def test_fraction_one_is_the_exact_loss_bitwise():
    model, x = _model(), _x(12)
    a = continuous_loss(model, x, generator=gen(3))
    b = continuous_loss(model, x, generator=gen(3), prior_fraction=1.0)
    c = continuous_loss(model, x, generator=gen(3), prior_fraction=0.99)  # round(0.99·12) = 12
    for u, v, w in zip(a, b, c):
        assert torch.equal(u, v) and torch.equal(u, w)


@pytest.mark.parametrize("decoder", ["gaussian", "discretized"])
def test_other_terms_unchanged(decoder):
    """The rows are drawn last: t, ε and ε_0 (so diffusion and reconstruction) match f = 1."""
    model, x = _model(), _x(16).clamp(-1, 1)
    exact = continuous_loss(model, x, generator=gen(4), decoder=decoder)
    sub = continuous_loss(model, x, generator=gen(4), decoder=decoder, prior_fraction=0.25)
    assert torch.equal(exact.diffusion, sub.diffusion)
    assert torch.equal(exact.reconstruction, sub.reconstruction)
    assert not torch.equal(exact.prior, sub.prior)


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 20), f=st.floats(0.01, 1.0), seed=st.integers(0, 2**16))
def test_structure_for_any_batch(B, f, seed):
    """m = max(1, round(f·B)) rows carry const + (B/m)·α_1²‖F(x_i, 1)‖²/2, the rest const."""
    model, x = _model("general"), _x(B, seed)
    m = prior_rows(f, B)
    assert 1 <= m <= B and (m == 1 or abs(m - f * B) <= 0.5)
    exact, c = prior_loss(model, x), _const(model, x)
    with torch.no_grad():
        prior = continuous_loss(model, x, generator=gen(seed), prior_fraction=f).prior
    rows = (prior - c).abs() > 1e-12 * c.abs()
    if m < B:
        assert int(rows.sum()) == m
        torch.testing.assert_close(prior[rows], c[rows] + (exact - c)[rows] * B / m)
        torch.testing.assert_close(prior[~rows], c[~rows])
    else:
        torch.testing.assert_close(prior, exact)


@pytest.mark.parametrize("kind", ["general", "time_basis", "identity"])
def test_batch_mean_unbiased_and_unweighted_is_caught(kind):
    model, x, f, n = _model(kind), _x(16), 0.25, 600
    exact = prior_loss(model, x).mean().detach()
    with torch.no_grad():
        priors = [
            continuous_loss(model, x, generator=gen(100 + k), prior_fraction=f).prior
            for k in range(n)
        ]
    means = torch.stack([p.mean() for p in priors])
    assert abs(float(_z(means, exact))) < 4.0
    with torch.no_grad():
        biased = torch.stack([_unweighted(model, x, p, f).mean() for p in priors])
    assert abs(float(_z(biased, exact))) > 10.0


def _grads(model, x, t, eps, f, seed, biased=False):
    out = continuous_loss(model, x, t=t, eps=eps, generator=gen(seed), prior_fraction=f)
    total = out.total
    if biased:
        total = out.diffusion + out.reconstruction + _unweighted(model, x, out.prior, f)
    params = list(model.transform.parameters())
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(total.mean(), params)])


def test_expected_gradient_is_the_exact_gradient():
    """At fixed t and ε only the rows are random: the mean gradient of the whole loss over
    row draws equals the exact loss's gradient within standard errors; unweighted it does not."""
    model, x, f, n = _model("general"), _x(16), 0.25, 300
    t = torch.rand(16, generator=gen(5), dtype=D64)
    eps = torch.randn(x.shape, generator=gen(6), dtype=D64)
    exact = _grads(model, x, t, eps, 1.0, 0)
    draws = torch.stack([_grads(model, x, t, eps, f, 200 + k) for k in range(n)])
    moving = draws.std(0) > 1e-12 * (exact.abs() + 1e-30)
    assert int(moving.sum()) > 10  # the prior reaches most transform parameters
    z = _z(draws[:, moving], exact[moving])
    assert float(z.abs().max()) < 5.0  # ~100 parameters: max |z| of N(0, 1) rarely > 4
    torch.testing.assert_close(draws[:, ~moving].mean(0), exact[~moving])
    biased = torch.stack([_grads(model, x, t, eps, f, 200 + k, True) for k in range(n // 3)])
    assert float(_z(biased[:, moving], exact[moving]).abs().max()) > 10.0


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.5, True, "0.5", float("nan")])
def test_bad_prior_fraction_named(bad):
    model, x = _model(), _x(4)
    with pytest.raises(ValueError, match="prior_fraction must be a number in \\(0, 1\\]"):
        continuous_loss(model, x, generator=gen(0), prior_fraction=bad)
