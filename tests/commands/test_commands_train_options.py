"""train's accelerator options on CPU: bf16 autocast of the predictor and torch.compile."""

import pytest
import torch
from helpers import one_thread_fixture

import ndmsolve as nd
from ndmsolve.fields import EpsilonPredictor, UNet
from ndmsolve.train import train

_one_thread = one_thread_fixture(torch.float32)


def _model():
    torch.manual_seed(0)
    s = nd.LinearLogSNR(-8.0, 8.0)
    return nd.NDM(
        EpsilonPredictor(UNet(1, base=4, mults=(1, 2), time_dim=8), s),
        nd.ResidualTransform(UNet(1, base=4, mults=(1,), time_dim=8)),
        s,
        data_shape=(1, 8, 8),
    )


def _data():
    return torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_bf16_autocast_of_the_predictor():
    ref = train(_model(), _data(), steps=3, batch_size=8, generator=0, progress=False)
    model = _model()
    seen = []
    model.predictor.net.conv_in.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    res = train(model, _data(), steps=3, batch_size=8, generator=0, amp="bf16", progress=False)
    assert seen and all(d == torch.bfloat16 for d in seen)  # the predictor ran in bf16
    a, b = torch.tensor(ref.losses), torch.tensor(res.losses)
    assert torch.isfinite(b).all() and not torch.equal(a, b)
    assert torch.allclose(a, b, rtol=0.05)  # bf16 rounding only
    assert not model.predictor._forward_hooks and not model.predictor._forward_pre_hooks  # removed
    assert next(res.ema_model.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="amp must be"):
        train(_model(), _data(), steps=1, batch_size=8, generator=0, amp="int8", progress=False)


@pytest.mark.slow
def test_compile_matches_eager():
    ref = train(_model(), _data(), steps=2, batch_size=8, generator=0, progress=False)
    model = _model()
    res = train(model, _data(), steps=2, batch_size=8, generator=0, compile=True, progress=False)
    assert torch.allclose(torch.tensor(res.losses), torch.tensor(ref.losses), rtol=1e-4)
    assert "forward" not in model.predictor.__dict__  # the plain module is handed back
