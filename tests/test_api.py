"""The public API as a user meets it: dtype and device follow the model, one seed
convention, errors in the user's terms, user-defined parts everywhere, the namespace, the
conveniences of ``solve``, and output habits (file modes, progress)."""

from __future__ import annotations

import math
import os
import stat
import sys

import pytest
import torch
from helpers import one_thread_fixture
from torch import nn

import ndmsolve as nd
from ndmsolve.fields import MLP
from ndmsolve.io import atomic_write
from ndmsolve.solvers import BrownianPath
from ndmsolve.solvers.base import CountedField

_one_thread = one_thread_fixture(torch.float32)
F64 = torch.float64


def _mlp_model(dtype=torch.float32, data_shape=(2,), transform=True, schedule=None):
    torch.manual_seed(0)
    tr = nd.ResidualTransform(MLP(2, hidden=16, depth=2)) if transform else None
    model = nd.NDM(
        MLP(2, hidden=16, depth=2), transform=tr, schedule=schedule, data_shape=data_shape
    )
    return model.to(dtype)


# ----------------------------------------------------------------------------- 1. dtype, device
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_sample_and_likelihood_follow_the_model_dtype(dtype):
    model = _mlp_model(dtype)
    out = nd.sample(model, 4, method="heun", steps=3, generator=0)
    assert out.samples.dtype == dtype
    assert nd.sample(model, 4, method="ddim", steps=3, generator=0).samples.dtype == dtype
    res = nd.log_likelihood(model, out.samples, method="rk4", steps=3)
    assert res.logp.dtype == dtype and torch.isfinite(res.logp).all()
    x8 = torch.randint(
        0, 256, (3, 2), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    assert nd.bits_per_dim(model, x8, method="rk4", steps=2, generator=0).bpd.dtype == dtype
    assert nd.elbo_bits_per_dim(model, x8, generator=0).bpd.dtype == dtype
    assert nd.continuous_loss(model, out.samples, generator=0).total.dtype == dtype
    assert model.prior_sample(3, generator=0).dtype == dtype


def test_mismatched_dtype_is_one_error_naming_both():
    model = _mlp_model(F64)
    x32 = torch.randn(4, 2)
    pattern = r"has dtype torch.float32 but the model's parameters are torch.float64"
    with pytest.raises(TypeError, match="z0 " + pattern):
        nd.log_likelihood(model, x32, method="rk4", steps=2)
    with pytest.raises(TypeError, match="z1 " + pattern):
        nd.sample(model, z1=x32, method="euler", steps=2)
    with pytest.raises(
        TypeError, match=r"dtype=torch.float32.*differ from the model's parameters \(torch.float64"
    ):
        nd.sample(model, 4, method="euler", steps=2, dtype=torch.float32)
    for fn in (nd.continuous_loss, nd.prior_loss, nd.reconstruction_loss):
        with pytest.raises(TypeError, match="x " + pattern):
            fn(model, x32)
    with pytest.raises(TypeError, match="x " + pattern):
        nd.discrete_loss(model, x32, 10)
    with pytest.raises(TypeError, match="data " + pattern):
        nd.train.train(model, x32, steps=1, batch_size=2, generator=0, progress=False)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_follows_the_model_on_cuda():
    model = _mlp_model().cuda()
    out = nd.sample(
        model, 4, method="euler_maruyama", steps=3, generator=0
    )  # int seed: a CUDA generator
    assert out.samples.device.type == "cuda"
    g = torch.Generator("cuda").manual_seed(0)
    assert torch.equal(
        out.samples, nd.sample(model, 4, method="euler_maruyama", steps=3, generator=g).samples
    )
    res = nd.log_likelihood(
        model, out.samples, method="rk4", steps=2, trace="hutchinson", generator=0
    )
    assert res.logp.device.type == "cuda"
    with pytest.raises(ValueError, match=r"z0 is on cpu but the model's parameters are on cuda"):
        nd.log_likelihood(model, out.samples.cpu(), method="rk4", steps=2)


# ----------------------------------------------------------------------------- 2. seeds
def _eq(a, b):
    return torch.equal(a, b)


@pytest.mark.parametrize(
    "method", ["heun", "euler_maruyama", "ancestral", "dopri5", "torchsde:euler"]
)
def test_sample_int_seed_equals_seeded_generator(method):
    model = _mlp_model()
    kw = {"rtol": 1e-2, "atol": 1e-2} if method == "dopri5" else {"steps": 3}
    a = nd.sample(model, 5, method=method, generator=7, **kw).samples
    b = nd.sample(model, 5, method=method, generator=torch.Generator().manual_seed(7), **kw).samples
    c = nd.sample(model, 5, method=method, generator=8, **kw).samples
    assert _eq(a, b) and not torch.allclose(a, c)


def test_int_seed_everywhere():
    model = _mlp_model()
    x = nd.data.checkerboard(6, 3)
    assert _eq(x, nd.data.checkerboard(6, torch.Generator().manual_seed(3)))

    def both(fn):
        a, b = fn(11), fn(torch.Generator().manual_seed(11))
        return a, b

    a, b = both(
        lambda g: (
            nd.log_likelihood(
                model, x, method="rk4", steps=2, trace="hutchinson", probes=3, generator=g
            ).logp
        )
    )
    assert _eq(a, b)
    a, b = both(lambda g: nd.continuous_loss(model, x, generator=g).total)
    assert _eq(a, b)
    a, b = both(lambda g: nd.discrete_loss(model, x, 10, generator=g).total)
    assert _eq(a, b)
    a, b = both(lambda g: nd.sample_times(5, generator=g))
    assert _eq(a, b)
    x8 = torch.randint(
        0, 256, (3, 2), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    a, b = both(
        lambda g: (
            nd.bits_per_dim(model, x8, method="rk4", steps=2, trace="hutchinson", generator=g).bpd
        )
    )
    assert _eq(a, b)
    a, b = both(lambda g: nd.metrics.sliced_wasserstein(x, x.flip(0) + 1, generator=g))
    assert _eq(a, b)
    a, b = both(
        lambda g: (
            nd.solve(
                lambda t, y: -y,
                x,
                0.0,
                1.0,
                method="euler_maruyama",
                steps=4,
                g=lambda t, y: torch.ones_like(y),
                generator=g,
            ).y
        )
    )
    assert _eq(a, b)
    a, b = both(lambda g: BrownianPath(0.0, 1.0, (2,), generator=g).increment(0.0, 1.0))
    assert _eq(a, b)
    a, b = both(
        lambda g: (
            nd.train.train(
                _mlp_model(), x, steps=3, batch_size=4, generator=g, progress=False
            ).losses
        )
    )
    assert a == b
    with pytest.raises(TypeError, match="generator must be a torch.Generator or an int seed"):
        nd.sample(model, 2, steps=2, generator="0")


# ----------------------------------------------------------------------------- 3. errors in the user's terms
def test_misspelt_keyword_names_the_function_the_user_called():
    model = _mlp_model()
    x = torch.randn(4, 2)
    cases = [
        (lambda: nd.sample(model, 4, method="euler", stpes=3), "sample", "stpes", "steps"),
        (lambda: nd.log_likelihood(model, x, tarce="exact"), "log_likelihood", "tarce", "trace"),
        (
            lambda: nd.bits_per_dim(model, x.to(torch.uint8), rtoll=1e-3),
            "bits_per_dim",
            "rtoll",
            "rtol",
        ),
        (
            lambda: nd.continuous_loss(model, x, genrator=0),
            "continuous_loss",
            "genrator",
            "generator",
        ),
        (lambda: nd.solve(lambda t, y: -y, x, 0.0, 1.0, "rk4", stpes=3), "solve", "stpes", "steps"),
        (
            lambda: nd.train.train(model, x, steps=1, batch_sise=2, generator=0),
            "train",
            "batch_sise",
            "batch_size",
        ),
    ]
    for call, fn, word, close in cases:
        with pytest.raises(TypeError) as info:
            call()
        msg = str(info.value)
        assert msg.startswith(f"{fn}() got an unexpected keyword argument {word!r}"), msg
        assert f"did you mean {close!r}" in msg, msg
    # a word with no near match: no suggestion, still the user's function
    with pytest.raises(TypeError, match=r"^sample\(\) got an unexpected keyword argument 'zzz'$"):
        nd.sample(model, 4, zzz=1)


def test_wrong_shape_messages_show_the_users_shapes():
    model = _mlp_model()
    for call in (
        lambda x: nd.continuous_loss(model, x),
        lambda x: nd.discrete_loss(model, x, 5),
        lambda x: nd.log_likelihood(model, x, method="rk4", steps=2),
    ):
        with pytest.raises(ValueError, match=r"\(B, 2\).*got \(8, 3\)"):
            call(torch.randn(8, 3))
    # without data_shape the network's own check speaks of per-sample shapes, not the
    # internal stacked batch (continuous_loss calls the transform on [x; x; x])
    bare = _mlp_model(data_shape=None)
    with pytest.raises(ValueError) as info:
        nd.continuous_loss(bare, torch.randn(8, 3))
    assert "24" not in str(info.value) and "(3,)" in str(info.value)


class _Bad(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.w = nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, x, t):
        return self.fn(x, t)


def test_wrong_network_output_is_named_at_the_first_call():
    x = torch.randn(4, 2, dtype=F64)
    calls = []

    def counted(fn):
        def inner(x, t):
            calls.append(1)
            return fn(x, t)

        return inner

    bad_dtype = nd.NDM(_Bad(counted(lambda z, t: z.float())), data_shape=(2,))
    with pytest.raises(
        TypeError, match=r"predictor \(_Bad\) must return dtype torch.float64.*got torch.float32"
    ):
        nd.sample(bad_dtype, 4, method="heun", steps=3, generator=0)
    assert len(calls) == 1
    bad_shape = nd.NDM(
        MLP(2, hidden=8).double(), transform=_Bad(lambda z, t: z[:, :1]), data_shape=(2,)
    )
    with pytest.raises(
        ValueError, match=r"transform \(_Bad\) must return shape \(4, 2\).*got \(4, 1\)"
    ):
        nd.log_likelihood(bad_shape, x, method="euler", steps=2)
    # a plain solve field: named at its first result, not a broadcast error later
    f = CountedField(lambda t, y: y[:, :1])
    with pytest.raises(ValueError, match=r"f\(t, y\) must return y's shape \(4, 2\), got \(4, 1\)"):
        nd.solve(f, x, 0.0, 1.0, method="dopri5")
    assert f.nfe == 1
    with pytest.raises(
        TypeError, match=r"f\(t, y\) must return y's dtype torch.float64, got torch.float32"
    ):
        nd.solve(lambda t, y: y.float(), x, 0.0, 1.0, method="rk4", steps=2)


# ----------------------------------------------------------------------------- user-defined parts
class UserSchedule(nd.Schedule):
    """Only log_snr, as Schedule's docstring invites: λ(t) = 10 − 20 t³ − 4 t (decreasing)."""

    logsnr_min, logsnr_max = -14.0, 10.0

    def log_snr(self, t):
        return 10.0 - 20.0 * t**3 - 4.0 * t


class UserTransform(nn.Module):
    """A transform with no forward_and_dt: ∂_t F comes from a JVP in t."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x, t):
        assert t.is_contiguous() and t.stride() == (1,), "user code must get an ordinary t"
        return x + t[:, None] * torch.tanh(self.lin(torch.cat([x, t[:, None]], 1)))


def _user_model():
    torch.manual_seed(1)
    return nd.NDM(
        MLP(2, hidden=8, depth=2),
        transform=UserTransform(),
        schedule=UserSchedule(),
        data_shape=(2,),
    )


def test_user_schedule_dlog_snr_on_expanded_time():
    t = torch.tensor(0.3).expand(5)  # what a solver's 0-dim t used to become
    d = UserSchedule().dlog_snr(t)
    assert torch.allclose(d, torch.full((5,), -60.0 * 0.09 - 4.0))


def _every_sampling_method():
    m = nd.sampling_methods()
    return [
        x
        for kind in (
            "ode_fixed",
            "ode_adaptive",
            "sde_fixed",
            "sde_adaptive",
            "discrete",
            "backends",
        )
        for x in m[kind]
    ]


@pytest.mark.parametrize("method", _every_sampling_method())
def test_user_schedule_and_transform_sample_with_every_method(method):
    model = _user_model()
    from ndmsolve.solvers.backends import torchdiffeq_methods

    m = nd.sampling_methods()
    fixed_tde = [f"torchdiffeq:{k}" for k, fixed in torchdiffeq_methods().items() if fixed]
    if method in m["ode_adaptive"] or (
        method.startswith("torchdiffeq:") and method not in fixed_tde
    ):
        kw = {"rtol": 1e-2, "atol": 1e-2}
    elif method in m["sde_adaptive"]:
        kw = {"rtol": 0.2, "atol": 0.2}
    else:
        kw = {"steps": 3}
    out = nd.sample(model, 6, method=method, generator=0, **kw)
    assert out.samples.shape == (6, 2) and torch.isfinite(out.samples).all() and out.nfe > 0


@pytest.mark.parametrize(
    "method", ["euler", "heun", "rk4", "bosh3", "dopri5", "tsit5", "torchdiffeq:rk4"]
)
@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_user_schedule_and_transform_likelihood(method, trace):
    model = _user_model()
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    kw = {"rtol": 1e-3, "atol": 1e-3} if method in ("bosh3", "dopri5", "tsit5") else {"steps": 3}
    res = nd.log_likelihood(model, x, method=method, trace=trace, generator=0, **kw)
    assert torch.isfinite(res.logp).all()


@pytest.mark.parametrize("loss", ["continuous", "discrete"])
def test_user_schedule_and_transform_train(loss):
    model = _user_model()
    fn = (
        "continuous"
        if loss == "continuous"
        else (lambda m, x, generator: nd.discrete_loss(m, x, 20, generator=generator))
    )
    before = [p.detach().clone() for p in model.parameters()]
    res = nd.train.train(
        model,
        nd.data.checkerboard(64, 0),
        steps=3,
        batch_size=16,
        generator=0,
        loss=fn,
        progress=False,
    )
    assert all(math.isfinite(v) for v in res.losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ----------------------------------------------------------------------------- 5. namespace
def test_namespace():
    import ndmsolve.metrics
    import ndmsolve.viz

    assert nd.metrics is ndmsolve.metrics and nd.viz is ndmsolve.viz
    assert nd.fields.MLP is MLP and callable(nd.data.checkerboard) and nd.solvers.solve is nd.solve
    methods = nd.sampling_methods()
    assert "heun" in methods["ode_fixed"] and "ddim" in methods["discrete"]


# ----------------------------------------------------------------------------- 6. solve conveniences
@pytest.mark.parametrize("method", ["rk4", "dopri5", "euler_maruyama", "torchdiffeq:dopri5"])
def test_zero_length_interval_returns_y0(method):
    y0 = torch.randn(3, 2)
    kw = {"g": lambda t, y: torch.ones_like(y)} if method == "euler_maruyama" else {}
    sol = nd.solve(lambda t, y: -y, y0, 0.5, 0.5, method=method, **kw)
    assert sol.nfe == 0 and torch.equal(sol.y, y0)
    sol = nd.solve(lambda t, y: -y, y0, 0.5, 0.5, method=method, save_at=torch.tensor([0.5]), **kw)
    assert sol.ys.shape == (1, 3, 2) and torch.equal(sol.ys[0], y0)
    with pytest.raises(ValueError, match="unknown method"):
        nd.solve(lambda t, y: -y, y0, 0.5, 0.5, method="rk5")


@pytest.mark.parametrize("rtol,atol", [(0.0, 1e-7), (1e-7, 0.0)])
def test_pure_absolute_or_relative_tolerance(rtol, atol):
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    loose = nd.solve(
        lambda t, y: -y,
        y0,
        0.0,
        1.0,
        method="dopri5",
        rtol=max(rtol, atol) * 1e3,
        atol=max(rtol, atol) * 1e3 if atol else 0.0,
    )
    sol = nd.solve(lambda t, y: -y, y0, 0.0, 1.0, method="dopri5", rtol=rtol, atol=atol)
    err = (sol.y - y0 * math.exp(-1.0)).abs().max().item()
    assert err < 1e-5 and sol.nfe > loose.nfe


def test_torchsde_srk_uses_the_users_noise_type():
    y0 = torch.randn(8, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    steps = 10

    def run(noise, method="torchsde:srk", bm=None):
        f = CountedField(lambda t, y: -y + torch.sin(t))
        sol = nd.solve(
            f,
            y0,
            0.0,
            1.0,
            method=method,
            steps=steps,
            g=lambda t, y: 0.3 + 0.0 * y,
            noise=noise,
            bm=bm,
            generator=0,
        )
        return sol, f.nfe

    sol_add, nfe_add = run("additive")
    assert nfe_add == 2 * steps and sol_add.nfe == 2 * steps  # SRA1: 2 drift calls a step
    _, nfe_diag = run("diagonal")
    assert nfe_diag > 2 * steps  # SRID2
    # SRA1 through torchsde equals our own sra1 on one Brownian path
    bm = BrownianPath(
        0.0, 1.0, y0.shape, F64, generator=torch.Generator().manual_seed(3), levy_area=True
    )
    ours, _ = run("additive", "sra1", bm)
    theirs, _ = run("additive", "torchsde:srk", bm)
    assert torch.allclose(ours.y, theirs.y, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="additive"):
        nd.solve(
            lambda t, y: -y,
            y0,
            0.0,
            1.0,
            method="torchsde:srk",
            steps=2,
            g=lambda t, y: y,
            noise="additive",
        )


# ----------------------------------------------------------------------------- 7. output habits
@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_uses_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        p = atomic_write(tmp_path / "f.bin", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == mode and p.read_bytes() == b"x"
    assert [q.name for q in tmp_path.iterdir()] == ["f.bin"]  # no temporary file left


def test_demo_files_are_0644_and_no_bars_off_a_terminal(tmp_path, capfd):
    from ndmsolve.cli import main

    old = os.umask(0o022)
    try:
        assert main(["demo", "--quick", "--steps", "3", "--out", str(tmp_path)]) == 0
    finally:
        os.umask(old)
    for name in ("ndm.pt", "ddpm.pt", "results.json", "samples.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    out, err = capfd.readouterr()
    assert "\r" not in err and "\r" not in out  # stderr is not a terminal here
    assert out.count("trained ") == 2  # one summary line per training phase


def test_train_progress_auto_prints_one_line_off_a_terminal(capfd):
    assert not sys.stderr.isatty()
    nd.train.train(_mlp_model(), nd.data.checkerboard(32, 0), steps=4, batch_size=8, generator=0)
    _, err = capfd.readouterr()
    assert "\r" not in err and err.count("\n") == 1 and err.startswith("train: 4 steps in")
    nd.train.train(
        _mlp_model(),
        nd.data.checkerboard(32, 0),
        steps=4,
        batch_size=8,
        generator=0,
        progress=False,
    )
    assert capfd.readouterr().err == ""


def test_int_seed_in_the_closed_form_models_and_studies():
    from ndmsolve.studies.ot import kinetic_penalty

    mix = nd.GaussianMixture(torch.tensor([1.0]), torch.zeros(1, 2), 0.1 * torch.eye(2)[None])
    assert torch.equal(
        mix.sample(5, generator=3), mix.sample(5, generator=torch.Generator().manual_seed(3))
    )
    model, x = _mlp_model(), torch.randn(4, 2)
    a = kinetic_penalty(model, x, generator=5)
    assert torch.equal(a, kinetic_penalty(model, x, generator=torch.Generator().manual_seed(5)))
