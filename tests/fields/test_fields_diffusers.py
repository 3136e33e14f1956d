"""The diffusers adapter (ndmsolve.fields.diffusers; old path ndmsolve.diffusers); DiscreteSchedule in test_schedules_discrete.py.

* from_diffusers + diffusers_grid: from the same noise, ``nd.sample`` equals diffusers'
  own loop (``for k in timesteps: z = step(unet(z, k).sample, k, z).prev_sample``) in
  float64 for DDIM, DPM-Solver++ 2M/3M (midpoint, heun) and UniPC 1/2/3 (bh1, bh2), every
  prediction type and timestep spacing, at 5, 10 and 25 steps.
* a tiny random UNet2DModel: sampling, checkpoint configuration, fine-tuning with a
  learned transform.

diffusers stores its σ's in float32 and DPMSolverMultistep casts the state to float32 in
every step; the comparisons recompute the σ's in float64 from the upcast ᾱ table (exact
at integer timesteps, as diffusers' interpolation is), so DDIM and UniPC agree to
round-off and DPM-Solver++ to its float32 state (~1e-7).
"""

import math
from types import SimpleNamespace

import pytest
import torch
from helpers import F64, one_thread_fixture

import ndmsolve as nd
from ndmsolve.config import from_config, to_config

_one_thread = one_thread_fixture()


# --------------------------------------------------------------------------- diffusers' loops
diffusers = pytest.importorskip("diffusers")


class ClosedForm(torch.nn.Module):
    """A smooth deterministic 'UNet': out = (½ + 0.3 sin(k/300)) tanh(W z) + 0.2 sin(k/300) z,
    called as diffusers calls a UNet (timestep a scalar or (B,)), output in ``.sample``."""

    def __init__(self, c: int = 2):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = torch.nn.Parameter(torch.randn(c, c, generator=g, dtype=F64) / c**0.5)

    def forward(self, z, k):
        k = torch.as_tensor(k, dtype=z.dtype).reshape(-1).expand(z.shape[0])
        s = torch.sin(k / 300.0)[:, None, None, None]
        mixed = torch.tanh(torch.einsum("bchw,cd->bdhw", z, self.W))
        out = mixed * (0.5 + 0.3 * s) + 0.2 * s * z
        return SimpleNamespace(sample=out)


def upcast(sched):
    """The scheduler's tables in float64 (its ᾱ and DDIM's final ᾱ)."""
    sched.alphas_cumprod = sched.alphas_cumprod.to(F64)
    if hasattr(sched, "final_alpha_cumprod"):
        sched.final_alpha_cumprod = sched.final_alpha_cumprod.to(F64)
    return sched


def diffusers_loop(sched, unet, noise, steps, **step_kw):
    sched.set_timesteps(steps)
    if hasattr(sched, "sigmas"):  # float32 in diffusers: recomputed from the float64 ᾱ
        a = sched.alphas_cumprod
        s = ((1 - a) / a).sqrt()
        last = s[:1] if float(sched.sigmas[-1]) > 0 else torch.zeros(1, dtype=F64)
        sched.sigmas = torch.cat([s[sched.timesteps], last])
    z = noise.clone()
    for k in sched.timesteps:
        z = sched.step(unet(z, k).sample, k, z, **step_kw).prev_sample
    return z


def relative_difference(cls, steps, step_kw=None, noise_scale=1.0, **config):
    sched = upcast(getattr(diffusers, cls)(**config))
    unet = ClosedForm()
    noise = noise_scale * torch.randn(
        5, 2, 3, 3, generator=torch.Generator().manual_seed(1), dtype=F64
    )
    want = diffusers_loop(sched, unet, noise.to(F64), steps, **(step_kw or {}))
    kw = nd.diffusers_grid(sched, steps)
    with torch.no_grad():
        got = nd.sample(nd.from_diffusers(unet, sched), method=kw.method, z1=noise.to(F64), **kw)
        got = got.samples
    return float((got - want).norm() / want.norm()), kw


# (scheduler class, its configuration, tolerance): DPMSolverMultistep keeps its state in float32
CASES = {
    "ddim": ("DDIMScheduler", dict(clip_sample=False), 1e-12),
    "ddim_alpha0": ("DDIMScheduler", dict(clip_sample=False, set_alpha_to_one=False), 1e-12),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", dict(), 1e-6),
    "dpmpp_2m_heun": ("DPMSolverMultistepScheduler", dict(solver_type="heun"), 1e-6),
    "dpmpp_3m": ("DPMSolverMultistepScheduler", dict(solver_order=3), 1e-6),
    "dpmpp_3m_heun_sigma_min": (
        "DPMSolverMultistepScheduler",
        dict(solver_order=3, solver_type="heun", final_sigmas_type="sigma_min"),
        1e-6,
    ),
    "dpmpp_2m_euler_at_final": (
        "DPMSolverMultistepScheduler",
        dict(final_sigmas_type="sigma_min", euler_at_final=True, lower_order_final=False),
        1e-6,
    ),
    "dpmpp_1": ("DPMSolverMultistepScheduler", dict(solver_order=1), 1e-6),
    "unipc_bh2": ("UniPCMultistepScheduler", dict(), 1e-12),
    "unipc_bh2_3": ("UniPCMultistepScheduler", dict(solver_order=3), 1e-12),
    "unipc_bh1_3_sigma_min": (
        "UniPCMultistepScheduler",
        dict(solver_order=3, solver_type="bh1", final_sigmas_type="sigma_min"),
        1e-12,
    ),
    "unipc_bh1_2_sigma_min": (
        "UniPCMultistepScheduler",
        dict(solver_type="bh1", final_sigmas_type="sigma_min"),
        1e-12,
    ),
    "unipc_1": ("UniPCMultistepScheduler", dict(solver_order=1), 1e-12),
    "unipc_no_lof": (
        "UniPCMultistepScheduler",
        dict(solver_order=3, lower_order_final=False, final_sigmas_type="sigma_min"),
        1e-12,
    ),
}
SPACINGS = {
    "DDIMScheduler": [dict(), dict(steps_offset=1), dict(timestep_spacing="trailing")],
    "other": [
        dict(),
        dict(timestep_spacing="leading"),
        dict(timestep_spacing="leading", steps_offset=1),
        dict(timestep_spacing="trailing"),
    ],
}


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("case", list(CASES))
def test_sample_equals_diffusers_loop(case, prediction_type):
    cls, config, tol = CASES[case]
    spacings = SPACINGS.get(cls, SPACINGS["other"])
    # the other spacings for epsilon only, at 5 and 25 steps (the test's time)
    runs = [(spacings[0], n) for n in (5, 10, 25)]
    if prediction_type == "epsilon":
        runs += [(sp, n) for sp in spacings[1:] for n in (5, 25)]
    for spacing, steps in runs:
        err, kw = relative_difference(
            cls, steps, prediction_type=prediction_type, **config, **spacing
        )
        assert err <= tol, (case, prediction_type, spacing, steps, err, kw)


def test_diffusers_grid_lower_order_policies():
    dpm, unipc = diffusers.DPMSolverMultistepScheduler, diffusers.UniPCMultistepScheduler
    kw = nd.diffusers_grid(dpm(solver_order=3), 10)
    assert (kw.method, kw["lower_order_final"], kw["denoise"]) == ("dpmpp_3m", "diffusers", True)
    assert kw["grid"].shape == (10,)  # 9 steps, then the final x̂
    assert nd.diffusers_grid(dpm(solver_order=3), 15)["lower_order_final"] is False
    kw = nd.diffusers_grid(dpm(final_sigmas_type="sigma_min"), 10)
    assert kw["lower_order_final"] is True and kw["grid"][-1] == 0 and kw["denoise"] is False
    assert nd.diffusers_grid(unipc(), 25)["lower_order_final"] == "diffusers"
    kw = nd.diffusers_grid(unipc(final_sigmas_type="sigma_min", solver_type="bh1"), 25)
    assert (kw["lower_order_final"], kw["solver_type"]) == ("always", "bh1")
    # the policy matters: ndmsolve's default count is far from diffusers' loop
    sched = upcast(dpm(solver_order=3))
    unet, noise = (
        ClosedForm(),
        torch.randn(5, 2, 3, 3, generator=torch.Generator().manual_seed(1), dtype=F64),
    )
    want = diffusers_loop(sched, unet, noise, 10)
    kw = dict(nd.diffusers_grid(sched, 10), lower_order_final=True)
    got = nd.sample(nd.from_diffusers(unet, sched), 5, "dpmpp_3m", z1=noise, **kw).samples
    assert float((got - want).norm() / want.norm()) > 1e-3


def test_ddim_clipping_matches_the_clipped_model_output_form():
    # clip_sample (DDIM's default): x̂ clamped to ±range; ndmsolve's ddim re-derives the
    # direction from the clipped x̂, as diffusers does with use_clipped_model_output=True
    for config in (
        dict(),
        dict(clip_sample_range=0.5),
        dict(thresholding=True, sample_max_value=2.0),
    ):
        err, _ = relative_difference(
            "DDIMScheduler",
            10,
            step_kw=dict(use_clipped_model_output=True),
            noise_scale=3.0,
            **config,
        )
        assert err < 1e-12, (config, err)
    # and clipping is active in this test (without it the result differs)
    sched = upcast(diffusers.DDIMScheduler())
    unet, noise = (
        ClosedForm(),
        3 * torch.randn(5, 2, 3, 3, generator=torch.Generator().manual_seed(1), dtype=F64),
    )
    kw = nd.diffusers_grid(sched, 10)
    on = nd.sample(nd.from_diffusers(unet, sched), 5, "ddim", z1=noise, **kw).samples
    off = nd.sample(nd.from_diffusers(unet, sched, clip_sample=False), 5, "ddim", z1=noise, **kw)
    off = off.samples
    assert (on - off).abs().max() > 1e-3


def test_thresholding_in_multistep_schedulers():
    for cls in ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler"):
        err, _ = relative_difference(
            cls,
            10,
            noise_scale=3.0,
            thresholding=True,
            sample_max_value=1.5,
            prediction_type="sample",
        )
        assert err < 1e-6, (cls, err)


def test_unsupported_options_are_named():
    D = diffusers
    cases = [
        (D.DDIMScheduler(timestep_spacing="linspace"), 10, "timestep_spacing='linspace'"),
        (D.DPMSolverMultistepScheduler(use_karras_sigmas=True), 10, "use_karras_sigmas=True"),
        (D.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++"), 10, "algorithm_type"),
        (D.UniPCMultistepScheduler(predict_x0=False), 10, "predict_x0=False"),
        (D.UniPCMultistepScheduler(disable_corrector=[1]), 10, "disable_corrector"),
        (D.UniPCMultistepScheduler(lower_order_final=False), 10, "lower_order_final=False"),
    ]
    for sched, steps, name in cases:
        with pytest.raises(ValueError, match=name):
            nd.diffusers_grid(sched, steps)
    with pytest.raises(TypeError, match="scheduler must be a DDIMScheduler"):
        nd.diffusers_grid(D.EulerDiscreteScheduler(), 10)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        nd.diffusers_grid(D.DDIMScheduler(), 0)
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        nd.from_diffusers(
            ClosedForm(), D.DPMSolverMultistepScheduler(prediction_type="flow_prediction")
        )
    with pytest.raises(TypeError, match="clip_sample must be True, False or None"):
        nd.from_diffusers(ClosedForm(), D.DDIMScheduler(), clip_sample="yes")


def test_the_design_call_form_and_a_forgotten_method():
    # DESIGN.md: nd.sample(model, n, "dpmpp_2m", **nd.diffusers_grid(scheduler, steps))
    sched = upcast(diffusers.DPMSolverMultistepScheduler())
    unet = ClosedForm()
    noise = torch.randn(5, 2, 3, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    want = diffusers_loop(sched, unet, noise, 10)
    model = nd.from_diffusers(unet, sched)
    got = nd.sample(model, 5, "dpmpp_2m", z1=noise, **nd.diffusers_grid(sched, 10)).samples
    assert float((got - want).norm() / want.norm()) < 1e-6
    # without a method the grid's own options refuse the default heun solve
    for s in (sched, upcast(diffusers.DDIMScheduler(clip_sample=False))):
        with pytest.raises((ValueError, TypeError)):
            nd.sample(model, z1=noise, **nd.diffusers_grid(s, 10))


def test_diffusers_grid_leaves_the_scheduler_alone():
    sched = diffusers.DPMSolverMultistepScheduler()
    sched.set_timesteps(7)
    before = sched.timesteps.clone()
    nd.diffusers_grid(sched, 20)
    assert torch.equal(sched.timesteps, before)


# --------------------------------------------------------------------------- a tiny UNet
def tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )


def test_predictor_calls_the_unet_at_diffusers_timesteps():
    seen = []
    unet = tiny_unet().float()
    unet.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
    model = nd.from_diffusers(unet, diffusers.DDPMScheduler())
    t = torch.tensor([798.99994 / 999, 0.5, 0.3], dtype=torch.float32)
    assert float(t[0] * 999) != 799.0  # float32 round-off of 799/999 (as in linspace grids)
    model.x_hat(torch.zeros(3, 1, 8, 8), t)
    assert seen[0].tolist() == [799.0, 499.5, pytest.approx(299.7, abs=1e-4)]
    assert model.data_shape == (1, 8, 8) and model.schedule is model.predictor.schedule


def test_tiny_unet_samples_and_checkpoint_configuration_rebuilds_it():
    unet = tiny_unet().double()
    sched = upcast(diffusers.DDIMScheduler(prediction_type="v_prediction"))
    model = nd.from_diffusers(unet, sched)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=F64)
    with torch.no_grad():
        want = diffusers_loop(sched, unet, noise, 5, use_clipped_model_output=True)
        got = nd.sample(model, 2, "ddim", z1=noise, **nd.diffusers_grid(sched, 5))
    assert got.nfe == 5
    assert float((got.samples - want).norm() / want.norm()) < 1e-12
    clone = from_config(to_config(model)).double()
    clone.load_state_dict(model.state_dict())
    t = torch.full((2,), 0.4, dtype=F64)
    assert torch.equal(clone.x_hat(noise, t), model.x_hat(noise, t))
    assert clone.predictor.prediction_type == "v_prediction" and clone.predictor.clip_sample


def test_fine_tune_a_pretrained_unet_into_an_ndm():
    # the documented recipe: the pretrained predictor with a learned transform
    pred = nd.from_diffusers(tiny_unet(), diffusers.DDPMScheduler()).predictor.float()
    net = nd.UNet(1, base=4, mults=(1,), time_dim=8)
    ndm = nd.NDM(pred, nd.ResidualTransform(net), pred.schedule, data_shape=(1, 8, 8))
    before = [p.detach().clone() for p in net.parameters()]
    unet_before = [p.detach().clone() for p in pred.unet.parameters()]
    data = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    res = nd.train.train(ndm, data, steps=3, batch_size=4, lr=1e-3, generator=0, progress=False)
    assert all(math.isfinite(v) for v in res.losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(unet_before, pred.unet.parameters()))
