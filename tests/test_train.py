"""Training loop: learning, EMA maths, determinism, resumption, atomic checkpoints."""

import math
import os

import pytest
import torch
from helpers import one_thread_fixture
from torch import nn

import ndmsolve as nd
from ndmsolve.checkpoint import CheckpointError
from ndmsolve.data import checkerboard, gaussian_mixture_1d
from ndmsolve.fields import MLP
from ndmsolve.train import EMA, TrainConfig, load_checkpoint, lr_factor, save_checkpoint, train

_one_thread = one_thread_fixture(torch.float32)


def stand_in_loss(model, x, generator=None):
    """VDM's continuous diffusion loss −½ λ'(t) e^{λ(t)} ‖x − x̂‖², (B,) (F = identity)."""
    t = torch.rand(x.shape[0], generator=generator, dtype=x.dtype)
    z, _ = model.sample_marginal(x, t, generator=generator)
    lam, dlam = model.schedule.log_snr(t), model.schedule.dlog_snr(t)
    return -0.5 * dlam * lam.exp() * ((x - model.x_hat(z, t)) ** 2).sum(1)


def _model(seed=0, dim=1):
    torch.manual_seed(seed)
    return nd.NDM(MLP(dim, hidden=32, depth=2, time_dim=8), schedule=nd.LinearLogSNR(-8.0, 8.0))


def test_loss_decreases():
    data = gaussian_mixture_1d(2048, torch.Generator().manual_seed(0))
    res = train(
        _model(),
        data,
        steps=300,
        batch_size=128,
        lr=3e-3,
        generator=torch.Generator().manual_seed(1),
        loss=stand_in_loss,
        progress=False,
    )
    assert len(res.losses) == 300 and all(map(lambda v: v == v, res.losses))
    first, last = sum(res.losses[:30]) / 30, sum(res.losses[-30:]) / 30
    assert last < 0.6 * first, (first, last)
    # The EMA model is a separate, frozen copy that differs from the raw weights.
    p_raw = torch.cat([p.flatten() for p in res.model.parameters()])
    p_ema = torch.cat([p.flatten() for p in res.ema_model.parameters()])
    assert not any(p.requires_grad for p in res.ema_model.parameters())
    assert 0 < float((p_raw - p_ema).abs().max()) < 1.0


def test_callable_data_and_continuous_loss():
    pytest.importorskip("ndmsolve.objectives")
    torch.manual_seed(0)
    model = nd.NDM(
        MLP(2, hidden=16, depth=2),
        transform=nd.ResidualTransform(MLP(2, hidden=16, depth=2, zero_init=True)),
    )
    res = train(model, checkerboard, steps=5, batch_size=32, generator=0, progress=False)
    assert len(res.losses) == 5 and all(torch.isfinite(torch.tensor(res.losses)))


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_closed_form(warmup):
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(2.0)
    lin.register_buffer("count", torch.zeros(()))
    d = 0.9
    ema = EMA(lin, d, warmup=warmup)
    values = [1.0, -3.0, 0.5, 4.0, 4.0, 7.0]
    expected = 2.0
    for k, v in enumerate(values):
        with torch.no_grad():
            lin.weight.fill_(v)
            lin.count.fill_(k + 1)
        ema.update(lin)
        dk = min(d, (1 + k) / (10 + k)) if warmup else d
        expected = dk * expected + (1 - dk) * v
    assert abs(ema.shadow.weight.item() - expected) < 1e-6
    if not warmup:  # closed form: d^K w0 + (1-d) Σ_j d^{K-1-j} v_j
        K = len(values)
        closed = d**K * 2.0 + (1 - d) * sum(d ** (K - 1 - j) * v for j, v in enumerate(values))
        assert abs(ema.shadow.weight.item() - closed) < 1e-6
    assert ema.shadow.count.item() == len(values)  # buffers copied, not averaged
    other = nn.Linear(1, 1, bias=False)
    other.register_buffer("count", torch.zeros(()))
    ema.copy_to(other)
    assert other.weight.item() == ema.shadow.weight.item() and other.count.item() == len(values)


def test_seeded_runs_are_identical():
    data = gaussian_mixture_1d(512, torch.Generator().manual_seed(0))
    kw = dict(steps=20, batch_size=64, loss=stand_in_loss, progress=False)
    a = train(_model(), data, generator=torch.Generator().manual_seed(5), **kw)
    b = train(_model(), data, generator=torch.Generator().manual_seed(5), **kw)
    c = train(_model(), data, generator=torch.Generator().manual_seed(6), **kw)
    assert a.losses == b.losses
    assert a.losses != c.losses
    for p, q in zip(a.ema_model.parameters(), b.ema_model.parameters()):
        assert torch.equal(p, q)


def test_resume_matches_uninterrupted(tmp_path):
    data = gaussian_mixture_1d(512, torch.Generator().manual_seed(0))
    kw = dict(batch_size=32, loss=stand_in_loss, progress=False)
    full = train(_model(), data, steps=16, generator=torch.Generator().manual_seed(2), **kw)
    ck = tmp_path / "run" / "ck.pt"
    train(_model(), data, steps=9, generator=torch.Generator().manual_seed(2), checkpoint=ck, **kw)
    # A fresh model and generator: everything needed comes from the checkpoint.
    resumed = train(
        _model(seed=123),
        data,
        steps=16,
        generator=torch.Generator().manual_seed(77),
        checkpoint=ck,
        resume=True,
        **kw,
    )
    assert resumed.losses == full.losses
    for p, q in zip(full.ema_model.parameters(), resumed.ema_model.parameters()):
        assert torch.equal(p, q)
    assert load_checkpoint(ck)["step"] == 16


def test_lr_factor_closed_form():
    assert [lr_factor(k, 10, "constant", warmup=4) for k in range(6)] == [
        0.25,
        0.5,
        0.75,
        1.0,
        1.0,
        1.0,
    ]
    # cosine after a warm-up of 2 over 12 steps: 1 at step 2, ½ half way, 0 at the last step
    f = [lr_factor(k, 12, "cosine", warmup=2) for k in range(12)]
    assert f[:2] == [0.5, 1.0] and f[2] == 1.0 and f[-1] == pytest.approx(0.0, abs=1e-15)
    assert lr_factor(2 + 9 // 2, 12, "cosine", 2) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 4 / 9))
    )
    assert all(a >= b for a, b in zip(f[2:], f[3:]))  # non-increasing after the warm-up
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor(0, 10, "linear")


def test_lr_schedule_sets_the_step_size():
    # Cosine over 2 steps: the second step has lr 0, so the weights are those after one step.
    data = gaussian_mixture_1d(512, torch.Generator().manual_seed(0))
    kw = dict(batch_size=32, loss=stand_in_loss, progress=False, lr=1e-2)
    two = train(
        _model(),
        data,
        steps=2,
        lr_schedule="cosine",
        generator=torch.Generator().manual_seed(3),
        **kw,
    )
    one = train(_model(), data, steps=1, generator=torch.Generator().manual_seed(3), **kw)
    init = _model()
    for p, q in zip(two.model.parameters(), one.model.parameters(), strict=True):
        assert torch.equal(p, q)
    moved = zip(one.model.parameters(), init.parameters(), strict=True)
    assert any(not torch.equal(p, p0) for p, p0 in moved)
    # A warm-up of 4 steps: the first Adam step is about lr/4 per weight (|Δ| <= lr/4).
    warm = train(
        _model(), data, steps=1, warmup_steps=4, generator=torch.Generator().manual_seed(3), **kw
    )
    pairs = zip(warm.model.parameters(), init.parameters(), strict=True)
    step = max(float((p - p0).abs().max()) for p, p0 in pairs)
    assert 0.5 * 1e-2 / 4 < step <= 1e-2 / 4 * (1 + 1e-5)


def test_resume_follows_the_lr_schedule(tmp_path):
    # A 12-step cosine run that crashes after its step-5 checkpoint, resumed: the same run.
    data = gaussian_mixture_1d(512, torch.Generator().manual_seed(0))
    kw = dict(batch_size=32, progress=False, lr_schedule="cosine", warmup_steps=3, steps=12)
    full = train(
        _model(), data, loss=stand_in_loss, generator=torch.Generator().manual_seed(2), **kw
    )
    calls = []

    def crashing(model, x, generator=None):
        calls.append(1)
        if len(calls) > 7:
            raise RuntimeError("crash")
        return stand_in_loss(model, x, generator)

    ck = tmp_path / "ck.pt"
    with pytest.raises(RuntimeError, match="crash"):
        train(
            _model(),
            data,
            loss=crashing,
            generator=torch.Generator().manual_seed(2),
            checkpoint=ck,
            checkpoint_every=5,
            **kw,
        )
    resumed = train(
        _model(),
        data,
        loss=stand_in_loss,
        generator=torch.Generator().manual_seed(2),
        checkpoint=ck,
        resume=True,
        **kw,
    )
    assert resumed.losses == full.losses


def test_checkpoint_round_trip(tmp_path):
    net = MLP(2, hidden=8)
    g = torch.Generator().manual_seed(3)
    path = save_checkpoint(tmp_path / "a.pt", model=net, step=7, note="hi", generator=g)
    expected_next = torch.rand(3, generator=g)
    other = MLP(2, hidden=8)
    g2 = torch.Generator().manual_seed(0)
    state = load_checkpoint(path, model=other, generator=g2)
    assert state["step"] == 7 and state["note"] == "hi"
    for p, q in zip(net.parameters(), other.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(torch.rand(3, generator=g2), expected_next)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="optimizer"):
        load_checkpoint(path, optimizer=torch.optim.Adam(other.parameters()))


def test_failed_save_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, step=1, w=torch.arange(5.0))
    before = path.read_bytes()

    real_save = torch.save

    def broken_save(obj, f, *a, **k):
        f.write(b"partial garbage")  # half-written, then the "disk" fails
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, step=2, w=torch.zeros(5))
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["ck.pt"]  # no temporary file left behind


def test_bad_arguments():
    m = _model()
    x = torch.randn(10, 1)
    with pytest.raises(ValueError, match="steps"):
        train(m, x, steps=-1, batch_size=4, generator=0, loss=stand_in_loss)
    with pytest.raises(ValueError, match="loss must be"):
        train(m, x, steps=1, batch_size=4, generator=0, loss="nope")
    with pytest.raises(TypeError, match="generator"):
        train(m, x, steps=1, batch_size=4, generator=None, loss=stand_in_loss)
    with pytest.raises(TypeError, match="data has dtype torch.float64"):
        train(m, x.double(), steps=1, batch_size=4, generator=0, loss=stand_in_loss)
    with pytest.raises(TypeError, match="data"):
        train(m, [1, 2], steps=1, batch_size=4, generator=0, loss=stand_in_loss)
    with pytest.raises(ValueError, match="lr_schedule"):
        train(m, x, steps=1, batch_size=4, generator=0, loss=stand_in_loss, lr_schedule="step")
    with pytest.raises(ValueError, match="warmup_steps"):
        train(m, x, steps=1, batch_size=4, generator=0, loss=stand_in_loss, warmup_steps=-1)
    # A NaN loss at every step: skipped, then stopped at the third in a row (step 2).
    with pytest.raises(FloatingPointError, match="stopped at step 2: 3 steps in a row"):
        train(
            m,
            x,
            steps=5,
            batch_size=4,
            generator=0,
            progress=False,
            loss=lambda model, x, generator=None: stand_in_loss(model, x, generator) * math.nan,
        )


def _learned_transform_model(seed=0):
    torch.manual_seed(seed)
    return nd.NDM(
        MLP(2, hidden=16, depth=2),
        transform=nd.ResidualTransform(MLP(2, hidden=16, depth=2)),
    )


def test_config_equals_keywords_bit_for_bit(tmp_path):
    """``train(model, data, config=TrainConfig(...))`` is the keyword call: same weights,
    EMA, losses and checkpoint state."""
    opts = dict(steps=6, batch_size=16, generator=5, ema_decay=0.9, progress=False)
    opts.update(lr_schedule="cosine", warmup_steps=2, checkpoint_every=4)
    a = train(_learned_transform_model(), checkerboard, checkpoint=tmp_path / "a.pt", **opts)
    cfg = TrainConfig(checkpoint=tmp_path / "b.pt", **opts)
    b = train(_learned_transform_model(), checkerboard, config=cfg)
    assert a.losses == b.losses
    for sa, sb in ((a.model, b.model), (a.ema_model, b.ema_model)):
        da, db = sa.state_dict(), sb.state_dict()
        assert da.keys() == db.keys() and all(torch.equal(da[k], db[k]) for k in da)
    ca, cb = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    assert ca["step"] == cb["step"] == 6
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)


def test_config_checks_name_the_option():
    base = dict(steps=1, batch_size=4, generator=0)
    cases = [
        (dict(steps=-1), ValueError, "steps must be a non-negative int"),
        (dict(batch_size=0), ValueError, "batch_size must be a positive int"),
        (dict(log_every=True), ValueError, "log_every must be a positive int"),
        (dict(lr=0.0), ValueError, "lr must be positive"),
        (dict(grad_clip=-1.0), ValueError, "grad_clip must be positive or None"),
        (dict(checkpoint_every=0), ValueError, "checkpoint_every must be a positive int"),
        (dict(resume=True), ValueError, "resume=True needs checkpoint"),
        (dict(max_bad_steps=0), ValueError, "max_bad_steps must be a positive int"),
        (dict(max_loss_ratio=math.inf), ValueError, "max_loss_ratio must be positive and finite"),
        (dict(amp="fp8"), ValueError, "amp must be None or one of"),
        (dict(microbatches=0), ValueError, "microbatches must be a positive int"),
        (dict(generator=None), TypeError, "generator is required"),
        (dict(loss=stand_in_loss, time_proposal=object()), ValueError, "time_proposal needs"),
        (dict(data_order="shuffled"), ValueError, "data_order must be one of"),
        (dict(progress="yes"), ValueError, "progress must be True, False or 'auto'"),
    ]
    for bad, err, msg in cases:
        with pytest.raises(err, match=msg):
            TrainConfig(**{**base, **bad})
    cfg = TrainConfig(**base)
    with pytest.raises(AttributeError):  # frozen: a checked config stays checked
        cfg.steps = -1
    with pytest.raises(TypeError, match=r"config= and the options \['lr'\]"):
        train(_model(), torch.randn(8, 1), config=cfg, lr=1e-3)
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        train(_model(), torch.randn(8, 1), config=base)
