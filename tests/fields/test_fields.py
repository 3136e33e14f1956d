"""The plug-in networks: shapes, dtypes, time dependence, zero-init identity, JVP in t."""

import pytest
import torch
from helpers import one_thread_fixture
from hypothesis import given, settings
from hypothesis import strategies as st

import ndmsolve as nd
from ndmsolve.fields import MLP, EpsilonPredictor, UNet

_one_thread = one_thread_fixture(torch.float32)


@settings(max_examples=15, deadline=None)
@given(
    b=st.integers(1, 9),
    dim=st.integers(1, 6),
    out=st.one_of(st.none(), st.integers(1, 5)),
    depth=st.integers(1, 3),
)
def test_mlp_shapes(b, dim, out, depth):
    torch.manual_seed(0)
    net = MLP(dim, hidden=8, depth=depth, time_dim=4, out_dim=out)
    x = torch.randn(b, dim)
    y = net(x, torch.rand(b))
    assert y.shape == (b, out or dim)
    assert net(x).shape == (b, out or dim)  # t=None: no time input


@settings(max_examples=6, deadline=None)
@given(b=st.integers(1, 3), c=st.integers(1, 3), levels=st.integers(1, 3), k=st.integers(1, 2))
def test_unet_shapes(b, c, levels, k):
    torch.manual_seed(0)
    mults = (1, 2, 2)[:levels]
    net = UNet(channels=c, base=4, mults=mults, time_dim=8)
    side = k * 2 ** (levels - 1)
    x = torch.randn(b, c, side, side + 2 ** (levels - 1))
    assert net(x, torch.rand(b)).shape == x.shape
    assert net(x).shape == x.shape
    net2 = UNet(channels=c, base=4, mults=mults, time_dim=8, out_channels=c + 1)
    assert net2(x, torch.rand(b)).shape == (b, c + 1) + x.shape[2:]


def test_unet_rejects_bad_sizes():
    net = UNet(channels=1, base=4, mults=(1, 2), time_dim=8)
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.randn(1, 1, 5, 4), torch.rand(1))
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(1, 3, 4, 4), torch.rand(1))
    with pytest.raises(ValueError, match="hidden"):
        MLP(2, hidden=0)
    with pytest.raises(ValueError, match="time_dim"):
        MLP(2, time_dim=3)


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_float64_and_time_dependence(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        net, x = MLP(3, hidden=16, time_dim=8), torch.randn(4, 3)
    else:
        net, x = UNet(channels=2, base=4, mults=(1, 2), time_dim=8), torch.randn(4, 2, 4, 4)
    net = net.double()
    x = x.double()
    t0, t1 = torch.full((4,), 0.2, dtype=torch.float64), torch.full((4,), 0.7, dtype=torch.float64)
    y0, y1 = net(x, t0), net(x, t1)
    assert y0.dtype == torch.float64
    assert (y0 - y1).abs().max() > 1e-4  # time reaches the output
    assert torch.equal(net(x, t0), y0)  # deterministic


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_zero_init_residual_is_identity(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        net, x = MLP(2, hidden=16, zero_init=True), torch.randn(5, 2)
    else:
        net, x = (
            UNet(channels=1, base=4, mults=(1, 2), time_dim=8, zero_init=True),
            torch.randn(5, 1, 4, 4),
        )
    F = nd.ResidualTransform(net)
    t = torch.rand(5)
    assert torch.equal(F(x, t), x)
    model = nd.NDM(MLP(2) if kind == "mlp" else net, transform=F)
    Fx, dF = model.F_and_dF(x, t, method="func")
    assert torch.equal(Fx, x) and dF.abs().max() == 0
    # Without zero_init the transform is not the identity: the test above can fail.
    torch.manual_seed(0)
    other = (
        MLP(2, hidden=16) if kind == "mlp" else UNet(channels=1, base=4, mults=(1, 2), time_dim=8)
    )
    assert (nd.ResidualTransform(other)(x, t) - x).abs().max() > 1e-3


def _five_point(model, x, t, h=1e-4):
    # 4th-order central differences: error O(h^4), far below the tolerance in float64.
    F = model.transform
    return (-F(x, t + 2 * h) + 8 * F(x, t + h) - 8 * F(x, t - h) + F(x, t - 2 * h)) / (12 * h)


@pytest.mark.parametrize("kind", ["mlp", "unet", "timebasis"])
def test_jvp_in_t_matches_finite_differences(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        F, x = nd.ResidualTransform(MLP(3, hidden=16, time_dim=8)), torch.randn(6, 3)
    elif kind == "unet":
        F, x = (
            nd.ResidualTransform(UNet(channels=2, base=4, mults=(1, 2), time_dim=8)),
            torch.randn(3, 2, 4, 4),
        )
    else:  # h(x) without time, the derivative comes from the basis
        F, x = nd.TimeBasisTransform(MLP(3, hidden=16, out_dim=3 * 4), n_basis=4), torch.randn(6, 3)
    F = F.double()
    x = x.double()
    model = nd.NDM(nn_identity(), transform=F)
    t = torch.linspace(0.1, 0.9, x.shape[0], dtype=torch.float64)
    Ff, dFf = model.F_and_dF(x, t, method="func")
    Fd, dFd = model.F_and_dF(x, t, method="fd")
    scale = dFf.abs().max()
    assert scale > 1e-2  # a non-trivial derivative
    assert torch.allclose(Ff, Fd)
    assert (dFf - dFd).abs().max() < 1e-6 * max(1.0, float(scale))
    assert (dFf - _five_point(model, x, t)).abs().max() < 1e-8 * max(1.0, float(scale))
    # analytic ∂_t F (the time basis; the MLP's written-out forward mode; the U-Net's JVP
    # inside ResidualTransform) agrees with the JVP of the whole transform
    Fa, dFa = model.F_and_dF(x, t, method="analytic")
    torch.testing.assert_close(Fa, Ff, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(dFa, dFf, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 5),
    dim=st.integers(1, 4),
    depth=st.integers(1, 3),
    out=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    xf=st.sampled_from([0, 3]),
)
def test_mlp_forward_and_dt_is_the_jvp(b, dim, depth, out, seed, xf):
    torch.manual_seed(seed)
    net = MLP(dim, hidden=8, depth=depth, time_dim=6, out_dim=out, x_features=xf).double()
    x = torch.randn(b, dim, dtype=torch.float64)
    t = torch.rand(b, dtype=torch.float64)
    y, dy = net.forward_and_dt(x, t)
    y_ref, dy_ref = torch.func.jvp(lambda s: net(x, s), (t,), (torch.ones_like(t),))
    torch.testing.assert_close(y, y_ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(dy, dy_ref, rtol=1e-12, atol=1e-12)
    # ... and carries the same parameter gradients (the loss trains through ∂_t F)
    g = torch.autograd.grad((dy**2).sum() + y.sum(), list(net.parameters()), allow_unused=True)
    g_ref = torch.autograd.grad(
        (dy_ref**2).sum() + y_ref.sum(), list(net.parameters()), allow_unused=True
    )
    for a, r in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-11, atol=1e-12)


def test_mlp_input_fourier_features():
    torch.manual_seed(0)
    net = MLP(2, hidden=8, depth=1, x_features=4, x_scale=0.5).double()
    assert net.x_freqs.shape == (2, 4) and net.layers[0].in_features == 2 + 8
    x = torch.randn(3, 2, dtype=torch.float64)
    a = x @ net.x_freqs
    torch.testing.assert_close(net._features(x), torch.cat([x, a.sin(), a.cos()], 1))
    torch.manual_seed(1)  # the frequencies come from a fixed seed, not the global RNG
    assert torch.equal(
        MLP(2, hidden=8, depth=1, x_features=4, x_scale=0.5).x_freqs, net.x_freqs.float()
    )
    with pytest.raises(ValueError, match="x_features"):
        MLP(2, x_features=-1)
    with pytest.raises(ValueError, match="x_scale"):
        MLP(2, x_features=2, x_scale=0.0)


def nn_identity():
    class Id(torch.nn.Module):
        def forward(self, z, t):
            return z

    return Id()


def test_epsilon_predictor_recovers_x():
    sched = nd.LinearLogSNR(-10.0, 10.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(7, 3, generator=g, dtype=torch.float64)

    class Oracle(torch.nn.Module):  # returns the true noise
        def forward(self, z, t):
            return eps

    pred = EpsilonPredictor(Oracle(), sched)
    t = torch.linspace(0.0, 1.0, 7, dtype=torch.float64)
    model = nd.NDM(pred, schedule=sched)
    alpha, sigma = sched(t)
    z = alpha[:, None] * x + sigma[:, None] * eps
    assert torch.allclose(model.x_hat(z, t), x, atol=1e-8)
    # A wrong ε gives a wrong x̂ (the test can fail).
    wrong = EpsilonPredictor(MLP(3).double(), sched)
    assert not torch.allclose(wrong(z, t), x, atol=1e-3)


@pytest.mark.parametrize(
    "kw",
    [
        dict(mults=(1, 2)),
        dict(mults=(1, 2), num_res_blocks=2, attn_levels=(1,), mid_attn=True, attn_heads=2),
    ],
)
def test_unet_forward_and_dt_is_the_jvp(kw):
    torch.manual_seed(0)
    net = UNet(2, base=4, time_dim=8, **kw).double()
    with torch.no_grad():  # non-zero everywhere (attention projections start at zero)
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    t = torch.rand(2, dtype=torch.float64)
    y, dy = net.forward_and_dt(x, t)
    y_ref, dy_ref = torch.func.jvp(lambda s: net(x, s), (t,), (torch.ones_like(t),))
    assert dy_ref.abs().max() > 1e-2
    torch.testing.assert_close(y, y_ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(dy, dy_ref, rtol=1e-12, atol=1e-12)
    params = list(net.parameters())
    g = torch.autograd.grad((dy**2).sum() + y.sum(), params, allow_unused=True)
    g_ref = torch.autograd.grad((dy_ref**2).sum() + y_ref.sum(), params, allow_unused=True)
    for a, r in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-11)


def test_unet_forward_and_dt_dropout_uses_forwards_mask():
    net = UNet(1, base=4, mults=(1, 2), time_dim=8, dropout=0.5).double().train()
    x, t = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.rand(3, dtype=torch.float64)
    torch.manual_seed(7)
    y, _ = net.forward_and_dt(x, t)
    torch.manual_seed(7)
    torch.testing.assert_close(y, net(x, t), rtol=1e-13, atol=1e-13)
