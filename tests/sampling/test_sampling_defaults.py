"""``nd.sample``'s defaults: the per-method grid, ``sigma_min`` and the dtype of a
parameterless model (closed-form models, so every error is the sampler's)."""

import math

import pytest
import torch
from helpers import F64, gen, one_thread_fixture

import ndmsolve as nd
from ndmsolve.metrics import random_directions, sliced_wasserstein
from ndmsolve.sampling import default_grid_kind

_one_thread = one_thread_fixture()


class DDPMLinearBeta(nd.Schedule):
    """DDPM's linear β as a continuous VP schedule: λ from 9.2 (t = 0) to −10.05 (t = 1),
    far from linear in t (as diffusers' tables are)."""

    logsnr_min, logsnr_max = -10.05, 9.21

    def log_snr(self, t):
        return -torch.log(torch.expm1(1e-4 + 0.1 * t + 9.95 * t**2))


def _mixture():
    ang = torch.arange(5, dtype=F64) * (2 * math.pi / 5)
    means = torch.stack([2.0 * torch.cos(ang), 2.0 * torch.sin(ang)], 1)
    covs = torch.diag_embed(torch.tensor([[0.3, 0.1]], dtype=F64).expand(5, 2) ** 2)
    return nd.GaussianMixture(torch.full((5,), 0.2, dtype=F64), means, covs)


def _model(schedule):
    data = _mixture()
    return nd.NDM(nd.ExactPredictor(data, schedule), schedule=schedule, data_shape=(2,)), data


@pytest.mark.parametrize(("method", "trap"), [("unipc_3m", 3.0), ("dpmpp_2m", 1.3)])
def test_default_grid_within_1p5x_of_best(method, trap):
    """With only ``steps``, the multistep samplers are within 1.5x of the best grid kind
    in sliced W1 to the data (and the uniform-t grid is the trap it used to be)."""
    model, data = _model(DDPMLinearBeta())
    z1 = torch.randn(1000, 2, generator=gen(0), dtype=F64)
    ref = data.sample(20_000, generator=gen(1))
    dirs = random_directions(128, 2, generator=gen(2), dtype=F64)

    def sw1(**kw):
        x = nd.sample(model, z1=z1, method=method, steps=20, **kw).samples
        return float(sliced_wasserstein(x, ref, directions=dirs, p=1))

    kinds = {k: sw1(grid_kind=k) for k in nd.sampling.GRID_KINDS}
    default = sw1()
    assert default <= 1.5 * min(kinds.values()), (default, kinds)
    assert kinds["uniform"] > trap * kinds["logsnr"], kinds


def test_default_grid_kinds():
    for m in ("dpmpp_2m", "dpmpp_3m", "ei_3m", "unipc_2m", "unipc_3m"):
        assert default_grid_kind(m) == "logsnr"
    for m in ("ddim", "ancestral", "euler", "heun", "rk4", "euler_maruyama"):
        assert default_grid_kind(m) == "uniform"
    model, _ = _model(nd.CosineLogSNR(-10.0, 10.0))
    z1 = torch.randn(8, 2, generator=gen(0), dtype=F64)
    out = nd.sample(model, z1=z1, method="unipc_2m", steps=6, return_path=True)
    expect = nd.make_time_grid(6, "logsnr", model.schedule, dtype=F64)
    torch.testing.assert_close(out.path_ts, expect, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="grid_kind must be one of"):
        nd.sample(model, z1=z1, method="ddim", steps=4, grid_kind="exponential")


@pytest.mark.parametrize("sigma_min", [0.03, 0.12, 1.0])
def test_sigma_min_is_the_final_noise_to_signal_ratio(sigma_min):
    for sched in (DDPMLinearBeta(), nd.CosineLogSNR(-10.0, 10.0), nd.LinearLogSNR(-12.0, 12.0)):
        model, _ = _model(sched)
        z1 = torch.randn(4, 2, generator=gen(0), dtype=F64)
        out = nd.sample(model, z1=z1, method="ddim", steps=3, sigma_min=sigma_min, return_path=True)
        t_end = out.path_ts[-1:]
        alpha, sigma = sched(t_end)
        torch.testing.assert_close(sigma / alpha, torch.tensor([sigma_min], dtype=F64))


def test_sigma_min_errors():
    model, _ = _model(nd.LinearLogSNR(-10.0, 10.0))
    z1 = torch.randn(4, 2, generator=gen(0), dtype=F64)
    with pytest.raises(ValueError, match="either t_min or sigma_min"):
        nd.sample(model, z1=z1, method="ddim", steps=3, t_min=0.1, sigma_min=0.1)
    for bad in (0.0, -1.0, 1e-4, 1e3):  # σ/α spans [e^-5, e^5] here
        with pytest.raises(ValueError, match="sigma_min must"):
            nd.sample(model, z1=z1, method="ddim", steps=3, sigma_min=bad)
    with pytest.raises(ValueError, match="a grid ends at grid"):
        nd.sample(model, z1=z1, method="ddim", grid=[1.0, 0.5, 0.0], sigma_min=0.1)
    # adaptive solves take it too: the path ends at t(σ/α = 0.1)
    out = nd.sample(model, z1=z1, method="dopri5", sigma_min=0.1, return_path=True)
    t_want = model.schedule.t_of_log_snr(-2 * math.log(0.1))
    assert float(out.path_ts[-1]) == pytest.approx(float(t_want), abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["heun", "ddim", "unipc_2m"])
def test_parameterless_model_follows_the_default_dtype(dtype, method):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        sched = nd.LinearLogSNR(-10.0, 10.0)
        model = nd.NDM(nd.ExactPredictor(_mixture(), sched), schedule=sched, data_shape=(2,))
        assert next(model.parameters(), None) is None
        out = nd.sample(model, 6, method, steps=4, generator=0)
        assert out.samples.dtype == dtype and out.samples.device.type == "cpu"
        assert model.prior_sample(3, generator=0).dtype == dtype
    finally:
        torch.set_default_dtype(old)
    # a model with parameters keeps its own dtype whatever the default
    torch.set_default_dtype(torch.float64)
    try:
        net = nd.NDM(nd.fields.MLP(2, hidden=8, depth=1).float(), schedule=sched, data_shape=(2,))
        assert nd.sample(net, 3, method, steps=4, generator=0).samples.dtype == torch.float32
    finally:
        torch.set_default_dtype(old)
