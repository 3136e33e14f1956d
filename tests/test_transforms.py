"""Transforms and the JVP time derivative ∂_t F: every dF method against closed forms."""

import pytest
import torch
from helpers import gen, one_thread_fixture, random_affine
from helpers import small_mlp as _mlp
from torch import nn

import ndmsolve as nd

D = torch.float64
DF_EXACT = ["analytic", "func", "autograd"]


_one_thread = one_thread_fixture()


def _affine(d=3, seed=0):
    return random_affine(d, seed, scale=0.4)


def _xt(b=6, d=3, seed=1):
    g = gen(seed)
    return torch.randn(b, d, generator=g, dtype=D), torch.rand(b, generator=g, dtype=D) * 0.9 + 0.05


class _Pred(nn.Module):
    """A predictor that is never called in these tests."""

    def forward(self, z, t):  # pragma: no cover - guard
        raise AssertionError("predictor should not be called")


# ----------------------------------------------------------------- affine transform
@pytest.mark.parametrize("method", DF_EXACT + ["fd"])
def test_affine_F_and_dF_closed_form(method):
    tr, (a1, a2, b1, b2) = _affine()
    x, t = _xt()
    tt = t[:, None]
    F_want = (1 + a1 * tt + a2 * tt**2) * x + b1 * tt + b2 * tt**2
    dF_want = (a1 + 2 * a2 * tt) * x + b1 + 2 * b2 * tt
    model = nd.NDM(_Pred(), tr, "cosine", dF=method)
    F, dF = model.F_and_dF(x, t)
    tol = 1e-8 if method == "fd" else 1e-12
    torch.testing.assert_close(F, F_want, rtol=0, atol=1e-13)
    torch.testing.assert_close(dF, dF_want, rtol=0, atol=tol)

    # The forward drift f = (d/dt log α) z + α ∂_t F, with d/dt log α = ½σ²λ'.
    z = torch.randn(x.shape, generator=gen(7), dtype=D)
    lam_dot = model.schedule.dlog_snr(t)
    alpha2 = torch.sigmoid(model.schedule.log_snr(t))
    f_want = (0.5 * (1 - alpha2) * lam_dot)[:, None] * z + alpha2.sqrt()[:, None] * dF_want
    torch.testing.assert_close(model.forward_drift(z, t, x), f_want, rtol=1e-12, atol=tol)


def test_fd_at_the_ends_of_the_time_interval():
    # One-sided differences inside [0, 1]: still right for a quadratic-in-t transform.
    tr, (a1, a2, b1, b2) = _affine()
    x = torch.randn(2, 3, generator=gen(2), dtype=D)
    t = torch.tensor([0.0, 1.0], dtype=D)
    dF_want = (a1 + 2 * a2 * t[:, None]) * x + b1 + 2 * b2 * t[:, None]
    _, dF = nd.NDM(_Pred(), tr, dF="fd").F_and_dF(x, t)
    # First order there: error ~ |a2 x + b2| h with h = eps^(1/3) ~ 6e-6.
    torch.testing.assert_close(dF, dF_want, rtol=0, atol=1e-4)
    assert torch.isfinite(dF).all()


# ----------------------------------------------------------------- residual transform
def _residual_dF_by_autograd(net, x, t):
    """∂_t [x + t net(x, t)] = net + t ∂_t net, ∂_t net by reverse mode, one output at a time."""
    t = t.clone().requires_grad_(True)
    out = net(x, t)
    cols = [
        torch.autograd.grad(out[:, i].sum(), t, retain_graph=True)[0] for i in range(out.shape[1])
    ]
    dnet = torch.stack(cols, 1)  # rows are independent, so grad of the sum is per-row
    return (x + t[:, None] * out).detach(), (out + t[:, None] * dnet).detach()


@pytest.mark.parametrize("method", DF_EXACT + ["fd", "auto"])
def test_residual_transform_dF(method):
    net = _mlp(3)
    tr = nd.ResidualTransform(net)
    x, t = _xt()
    F_want, dF_want = _residual_dF_by_autograd(net, x, t)
    model = nd.NDM(_Pred(), tr, dF=method)
    F, dF = model.F_and_dF(x, t)
    torch.testing.assert_close(F, F_want, rtol=1e-13, atol=1e-13)
    tol = 1e-7 if method == "fd" else 1e-12
    torch.testing.assert_close(dF, dF_want, rtol=tol, atol=tol)
    z = torch.randn(x.shape, generator=gen(3), dtype=D)
    alpha, _ = model.schedule(t)
    f_want = model.schedule.dlog_alpha(t)[:, None] * z + alpha[:, None] * dF_want
    torch.testing.assert_close(model.forward_drift(z, t, x), f_want, rtol=tol, atol=tol)


def test_dF_methods_agree_and_are_differentiable_in_parameters():
    # The loss needs ∂_t F to carry gradients to the transform's parameters.
    net = _mlp(2, seed=5)
    tr = nd.ResidualTransform(net)
    x, t = _xt(4, 2)
    grads = {}
    for method in ("func", "autograd", "analytic"):
        model = nd.NDM(_Pred(), tr, dF=method)
        net.zero_grad()
        _, dF = model.F_and_dF(x, t)
        (dF**2).sum().backward()
        grads[method] = [p.grad.clone() for p in net.parameters()]
        assert all(float(g.abs().max()) > 0 for g in grads[method][:-1])
    for a, b, c in zip(grads["func"], grads["autograd"], grads["analytic"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------- time-basis transform
@pytest.mark.parametrize("basis", ["sine", "polynomial"])
def test_time_basis_analytic_dF_equals_jvp(basis):
    d, K = 3, 4
    tr = nd.TimeBasisTransform(_mlp(d, out_dim=K * d), n_basis=K, basis=basis)
    x, t = _xt(5, d)
    F, dF = tr.forward_and_dt(x, t)
    F_j, dF_j = torch.func.jvp(lambda tt: tr(x, tt), (t,), (torch.ones_like(t),))
    torch.testing.assert_close(F, F_j, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(dF, dF_j, rtol=1e-12, atol=1e-12)
    # ... and via the NDM with every method.
    for method in ("auto", "analytic", "func", "autograd"):
        _, dFm = nd.NDM(_Pred(), tr, dF=method).F_and_dF(x, t)
        torch.testing.assert_close(dFm, dF_j, rtol=1e-12, atol=1e-12)


def test_time_basis_reshapes_any_data_shape():
    # net returns K * prod(shape) numbers per sample, as a flat vector.
    K, shape = 2, (2, 3)

    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, K * 6).to(D)

        def forward(self, x):
            return self.lin(x.flatten(1))

    tr = nd.TimeBasisTransform(Flat(), K, "polynomial")
    x = torch.randn(4, *shape, dtype=D)
    t = torch.rand(4, dtype=D)
    F, dF = tr.forward_and_dt(x, t)
    assert F.shape == dF.shape == x.shape
    h = tr.net(x).reshape(4, K, *shape)
    torch.testing.assert_close(F, x + t[:, None, None] * h[:, 0] + t[:, None, None] ** 2 * h[:, 1])
    torch.testing.assert_close(dF, h[:, 0] + 2 * t[:, None, None] * h[:, 1])


@pytest.mark.parametrize("make", ["residual", "basis_sine", "basis_poly", "affine", "identity"])
def test_F_at_time_zero_is_exactly_x(make):
    d = 3
    tr = {
        "residual": lambda: nd.ResidualTransform(_mlp(d)),
        "basis_sine": lambda: nd.TimeBasisTransform(_mlp(d, out_dim=3 * d), 3, "sine"),
        "basis_poly": lambda: nd.TimeBasisTransform(_mlp(d, out_dim=3 * d), 3, "polynomial"),
        "affine": lambda: _affine(d)[0],
        "identity": nd.IdentityTransform,
    }[make]()
    x = torch.randn(7, d, dtype=D) * 10
    t0 = torch.zeros(7, dtype=D)
    assert torch.equal(tr(x, t0), x)
    # ... and F really depends on t, so the equality above is not vacuous.
    if make != "identity":
        assert not torch.allclose(tr(x, t0 + 0.5), x)


def test_time_basis_bad_arguments():
    with pytest.raises(ValueError, match="n_basis"):
        nd.TimeBasisTransform(nn.Identity(), 0)
    with pytest.raises(ValueError, match="basis"):
        nd.TimeBasisTransform(nn.Identity(), 2, basis="fourier")
    tr = nd.TimeBasisTransform(nn.Identity(), 2)  # returns d numbers, not 2 d
    with pytest.raises(ValueError, match="net must return"):
        tr(torch.randn(3, 4), torch.rand(3))


def test_affine_transform_shape_check():
    with pytest.raises(ValueError, match="a1, a2, b1, b2"):
        nd.AffineTimeTransform(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2))
