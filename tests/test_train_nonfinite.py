"""Nothing non-finite reaches the weights, the EMA or a checkpoint: a NaN-gradient step
is skipped bit for bit, K in a row stop the run with the step named, bad data are named
by index (tensor) or step (callable), the divergence guard stops a blow-up."""

import math

import pytest
import torch
from helpers import one_thread_fixture

import ndmsolve as nd
from ndmsolve.checkpoint import read_checkpoint
from ndmsolve.fields import MLP
from ndmsolve.train import TrainingStopped, train

_one_thread = one_thread_fixture(torch.float32)


def _model():
    torch.manual_seed(0)
    return nd.NDM(MLP(1, hidden=16, depth=2, time_dim=8), schedule=nd.LinearLogSNR(-8.0, 8.0))


class _NaNGrad(torch.autograd.Function):
    """Identity forward (the loss stays finite); NaN backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * math.nan


def _loss(bad: set, first_step: int = 0, scale: dict | None = None):
    """VDM's continuous loss; steps in ``bad`` get a NaN gradient, steps in ``scale`` a
    loss multiplied by that factor. One micro-batch: the call count is the step."""
    calls = [first_step]

    def loss(model, x, generator=None):
        step = calls[0]
        calls[0] += 1
        t = torch.rand(x.shape[0], generator=generator, dtype=x.dtype)
        z, _ = model.sample_marginal(x, t, generator=generator)
        x_hat = model.x_hat(z, t)
        if step in bad:
            x_hat = _NaNGrad.apply(x_hat)
        lam, dlam = model.schedule.log_snr(t), model.schedule.dlog_snr(t)
        out = -0.5 * dlam * lam.exp() * ((x - x_hat) ** 2).sum(1)
        return out * (scale or {}).get(step, 1.0)

    return loss


DATA = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
KW = dict(batch_size=16, generator=5, progress=False)


def _equal_states(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _equal_states(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _equal_states(u, v)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("grad_clip", [1.0, None])
def test_nan_gradient_step_is_skipped_bit_for_bit(tmp_path, capsys, grad_clip):
    # Step 2 of 3 has a finite loss and a NaN gradient: the run equals a 2-step run.
    three = train(
        _model(),
        DATA,
        steps=3,
        loss=_loss({2}),
        grad_clip=grad_clip,
        checkpoint=tmp_path / "three.pt",
        **KW,
    )
    assert "step 2 skipped: non-finite gradient norm nan" in capsys.readouterr().err
    two = train(
        _model(),
        DATA,
        steps=2,
        loss=_loss(set()),
        grad_clip=grad_clip,
        checkpoint=tmp_path / "two.pt",
        **KW,
    )
    assert math.isfinite(three.losses[2]) and three.losses[:2] == two.losses
    a, b = read_checkpoint(tmp_path / "three.pt"), read_checkpoint(tmp_path / "two.pt")
    for key in ("model", "ema", "optimizer"):
        _equal_states(a[key], b[key])
    assert all(torch.isfinite(v).all() for v in a["model"].values())
    assert a["step_guard"] == {"bad_steps": 1}
    # Without the skip the NaN would have reached the weights: the check can fail.
    for p, q in zip(three.model.parameters(), two.model.parameters()):
        assert torch.equal(p, q)


def test_bad_steps_in_a_row_stop_with_the_step(tmp_path):
    ck = tmp_path / "ck.pt"
    with pytest.raises(TrainingStopped, match="stopped at step 3: 2 steps in a row") as e:
        train(
            _model(),
            DATA,
            steps=8,
            loss=_loss({2, 3}),
            max_bad_steps=2,
            checkpoint=ck,
            checkpoint_every=1,
            **KW,
        )
    assert e.value.step == 3
    state = read_checkpoint(ck)  # the last good save: step 3 (after the skipped step 2)
    assert state["step"] == 3 and all(torch.isfinite(v).all() for v in state["model"].values())
    # Bad steps apart are each skipped; the run completes.
    res = train(_model(), DATA, steps=6, loss=_loss({1, 3, 5}), max_bad_steps=2, **KW)
    assert len(res.losses) == 6


def test_resume_keeps_the_count_of_bad_steps(tmp_path):
    # Steps 2, 3, 4 bad, stop at the third: a run resumed after step 3 stops at step 4 too.
    with pytest.raises(TrainingStopped, match="stopped at step 4"):
        train(_model(), DATA, steps=8, loss=_loss({2, 3, 4}), **KW)
    ck = tmp_path / "ck.pt"
    train(_model(), DATA, steps=4, loss=_loss({2, 3}), checkpoint=ck, **KW)
    with pytest.raises(TrainingStopped, match="stopped at step 4: 3 steps in a row"):
        train(
            _model(),
            DATA,
            steps=8,
            loss=_loss({2, 3, 4}, first_step=4),
            checkpoint=ck,
            resume=True,
            **KW,
        )


def test_non_finite_weights_are_never_saved(tmp_path):
    ck = tmp_path / "ck.pt"
    train(_model(), DATA, steps=1, loss=_loss(set()), checkpoint=ck, **KW)
    before = ck.read_bytes()
    model = _model()
    model.check = False  # else the predictor's own output check stops it first
    with torch.no_grad():
        next(model.parameters())[0] = math.nan
    with pytest.raises(
        TrainingStopped, match="refusing to save non-finite model weights at step 1"
    ):
        train(model, DATA, steps=1, loss=_loss(set()), checkpoint=ck, overwrite=True, **KW)
    assert ck.read_bytes() == before


def test_non_finite_data_is_named():
    data = DATA.clone()
    data[37, 0] = math.inf
    data[41, 0] = math.nan
    with pytest.raises(
        ValueError, match=r"data has a non-finite value at index \(37, 0\) \(point 37 of 64\): inf"
    ):
        train(_model(), data, steps=1, loss=_loss(set()), **KW)
    images = torch.zeros(5, 1, 2, 2)
    images[3, 0, 1, 0] = math.nan
    with pytest.raises(ValueError, match=r"index \(3, 0, 1, 0\) \(point 3 of 5\): nan"):
        train(_model(), images, steps=1, loss=_loss(set()), **KW)

    def source(n, generator=None):
        source.calls += 1
        x = torch.randn(n, 1, generator=generator)
        return x * math.nan if source.calls == 3 else x

    source.calls = 0
    with pytest.raises(ValueError, match="data: the batch drawn at step 2 has a non-finite value"):
        train(_model(), source, steps=5, loss=_loss(set()), **KW)


def test_divergence_guard():
    # Step 25's loss is 1e4 times the usual (finite, finite gradient): off by default.
    blow_up = {25: 1e4}
    res = train(_model(), DATA, steps=30, loss=_loss(set(), scale=blow_up), **KW)
    assert len(res.losses) == 30
    with pytest.raises(TrainingStopped, match="stopped at step 25: loss .* exceeds the reference"):
        train(
            _model(), DATA, steps=30, loss=_loss(set(), scale=blow_up), max_loss_ratio=100.0, **KW
        )
    # An ordinary run passes the same guard.
    assert (
        len(train(_model(), DATA, steps=30, loss=_loss(set()), max_loss_ratio=100.0, **KW).losses)
        == 30
    )


def test_bad_policy_arguments():
    for kw, word in (
        ({"max_bad_steps": 0}, "max_bad_steps"),
        ({"max_bad_steps": 1.5}, "max_bad_steps"),
        ({"max_loss_ratio": -1.0}, "max_loss_ratio"),
        ({"max_loss_ratio": math.inf}, "max_loss_ratio"),
    ):
        with pytest.raises(ValueError, match=word):
            train(_model(), DATA, steps=1, loss=_loss(set()), **KW, **kw)


def test_cli_diverging_lr_ends_with_one_line(tmp_path, capsys):
    from ndmsolve.cli import main

    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            "checkerboard",
            "--steps",
            "50",
            "--lr",
            "1e1",
            "--grad-clip",
            "0",
            "--hidden",
            "32",
            "--transform-hidden",
            "16",
            "--n-grid",
            "0",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "ndmsolve train: error: training stopped at step" in err and "Traceback" not in err
    assert not (out / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--max-bad-steps", "0"),
        ("--max-loss-ratio", "-1"),
        ("--max-loss-ratio", "inf"),
        ("--dist-timeout", "0"),
    ],
)
def test_cli_policy_values_checked(flag, value, capsys):
    from ndmsolve.cli import main

    assert main(["train", "--data", "checkerboard", flag, value]) == 2
    # The flag's name, as typed or with underscores (as the option checks spell it today).
    err = capsys.readouterr().err
    assert flag.lstrip("-") in err.replace("_", "-")
