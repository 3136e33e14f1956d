"""Image fields: the U-Net's options (attention, dropout, depth, widths), its use as an
x̂- or ε-predictor and as the transform F, and a user's own network in the same roles."""

import pytest
import torch
import torch.nn.functional as nnf
from helpers import gen, one_thread_fixture
from torch import nn

import ndmsolve as nd
from ndmsolve.fields import EpsilonPredictor, UNet
from ndmsolve.fields.unet import Attention

_one_thread = one_thread_fixture(torch.float32)


@pytest.mark.parametrize(
    "c,hw,mults,blocks,attn,mid",
    [
        (1, (8, 8), (1, 2), 1, (1,), False),
        (3, (16, 16), (1, 2, 2), 2, (1, 2), True),
        (2, (12, 16), (1, 1, 2), 1, (0,), True),
        (1, (4, 4), (2,), 3, (), False),
    ],
)
def test_unet_shapes_with_attention_and_depth(c, hw, mults, blocks, attn, mid):
    torch.manual_seed(0)
    net = UNet(
        c,
        base=8,
        mults=mults,
        time_dim=8,
        num_res_blocks=blocks,
        attn_levels=attn,
        mid_attn=mid,
        attn_heads=2,
        dropout=0.1,
    )
    x = torch.randn(2, c, *hw)
    assert net(x, torch.rand(2)).shape == x.shape
    n_attn = sum(isinstance(m, Attention) for m in net.modules())
    assert n_attn == 2 * blocks * len(attn) + int(mid)  # down and up blocks of each level


def test_unet_bad_options():
    for kwargs, msg in [
        (dict(attn_levels=(2,)), "attn_levels"),
        (dict(dropout=1.0), "dropout"),
        (dict(num_res_blocks=0), "num_res_blocks"),
        (dict(mults=()), "mults"),
        (dict(base=6, attn_levels=(0,), attn_heads=4), "attn_heads"),
    ]:
        with pytest.raises(ValueError, match=msg):
            UNet(1, **{"base": 8, "mults": (1, 2), **kwargs})


def test_attention_matches_reference():
    torch.manual_seed(0)
    att = Attention(8, heads=2)
    nn.init.normal_(att.proj.weight)  # leave the identity start
    x = torch.randn(3, 8, 4, 5)
    B, C, H, W = x.shape
    q, k, v = att.qkv(att.norm(x)).reshape(B, 3, 2, 4, H * W).unbind(1)
    ref = nnf.scaled_dot_product_attention(
        q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
    )
    ref = x + att.proj(ref.transpose(-1, -2).reshape(B, C, H, W))
    assert torch.allclose(att(x), ref, atol=1e-5)
    assert (att(x) - x).abs().max() > 1e-2


def test_dropout_train_vs_eval():
    torch.manual_seed(0)
    net = UNet(1, base=8, mults=(1, 2), time_dim=8, dropout=0.5)
    for p in net.conv_out.parameters():
        nn.init.normal_(p)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    net.train()
    assert not torch.equal(net(x, t), net(x, t))
    net.eval()
    assert torch.equal(net(x, t), net(x, t))


def test_unet_transform_exact_at_zero_jvp_and_gradients():
    torch.manual_seed(0)
    sched = nd.LinearLogSNR(-8.0, 8.0)
    unet = lambda **kw: UNet(
        1, base=8, mults=(1, 2), time_dim=8, attn_levels=(1,), mid_attn=True, **kw
    )  # noqa: E731
    F = nd.ResidualTransform(unet())  # not zero-initialised: F(x, t) != x for t > 0
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(F(x, torch.zeros(4)), x)
    assert (F(x, torch.full((4,), 0.5)) - x).abs().max() > 1e-3
    # ∂_t F by a JVP through attention agrees with finite differences (float64).
    model = nd.NDM(
        EpsilonPredictor(unet(), sched), transform=F, schedule=sched, data_shape=(1, 8, 8)
    )
    m64, x64 = model.double(), x.double()
    t = torch.linspace(0.2, 0.8, 4, dtype=torch.float64)
    _, dF = m64.F_and_dF(x64, t, method="func")
    _, dFd = m64.F_and_dF(x64, t, method="fd")
    scale = float(dF.detach().abs().max())
    assert scale > 1e-2 and float((dF - dFd).abs().max()) < 1e-6 * scale
    model = model.float()
    loss = nd.continuous_loss(model, x, generator=gen(0)).total.mean()
    loss.backward()
    for name, net in (("predictor", model.predictor), ("transform", model.transform)):
        g = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
        assert g.abs().max() > 0, name


@pytest.mark.parametrize("param", ["data", "eps"])
def test_unet_predictor_parametrisations(param):
    torch.manual_seed(0)
    sched = nd.LinearLogSNR(-6.0, 6.0)
    net = UNet(1, base=8, mults=(1, 2), time_dim=8)
    pred = net if param == "data" else EpsilonPredictor(net, sched)
    model = nd.NDM(pred, schedule=sched, data_shape=(1, 8, 8))
    z, t = torch.randn(3, 1, 8, 8, generator=gen(0)), torch.rand(3, generator=gen(1))
    alpha, sigma = sched(t)
    expect = (
        net(z, t)
        if param == "data"
        else (z - sigma[:, None, None, None] * net(z, t)) / alpha[:, None, None, None]
    )
    assert torch.allclose(model.x_hat(z, t), expect)
    s = nd.sample(model, 3, method="euler", steps=3, generator=gen(2))
    assert s.samples.shape == (3, 1, 8, 8) and torch.isfinite(s.samples).all()


class TinyConv(nn.Module):
    """A user's network with the (input, t) signature: no ndmsolve parts inside."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c + 1, c, 3, padding=1)

    def forward(self, x, t):
        tt = t[:, None, None, None].expand(-1, 1, *x.shape[2:])
        return self.conv(torch.cat([x, torch.sin(3 * tt) * x[:, :1]], 1))


def test_user_module_plugs_in_everywhere():
    torch.manual_seed(0)
    sched = nd.LinearLogSNR(-6.0, 6.0)
    model = nd.NDM(
        EpsilonPredictor(TinyConv(2), sched),
        transform=nd.ResidualTransform(TinyConv(2)),
        schedule=sched,
        data_shape=(2, 4, 4),
    )
    x = torch.randn(5, 2, 4, 4, generator=gen(0))
    assert torch.equal(model.F(x, torch.zeros(5)), x)
    loss = nd.continuous_loss(model, x, generator=gen(1)).total.mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in model.parameters())
    out = nd.sample(model, 4, method="heun", steps=4, generator=gen(2))
    assert out.samples.shape == (4, 2, 4, 4) and out.nfe > 0
    res = nd.log_likelihood(
        model, x[:2], method="rk4", steps=4, trace="hutchinson", generator=gen(3)
    )
    assert res.logp.shape == (2,) and torch.isfinite(res.logp).all()
