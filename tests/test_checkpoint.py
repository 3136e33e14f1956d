"""The checkpoint format: self-describing files, load_model round trips, clear errors on
unusable files, atomic writes."""

import os

import pytest
import torch
from helpers import gen, one_thread_fixture
from torch import nn

import ndmsolve as nd
from ndmsolve.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from ndmsolve.config import ConfigError, from_config, to_config
from ndmsolve.data import checkerboard
from ndmsolve.fields import MLP, EpsilonPredictor, UNet
from ndmsolve.train import train

_one_thread = one_thread_fixture(torch.float32)


def _ndm(dtype=torch.float32, learned=True):
    torch.manual_seed(0)
    sched = nd.LinearLogSNR(-10.0, 10.0)
    pred = EpsilonPredictor(MLP(2, hidden=16, depth=2, time_dim=8), sched)
    tr = nd.ResidualTransform(MLP(2, hidden=8, depth=1, time_dim=8)) if learned else None
    return nd.NDM(pred, transform=tr, schedule=sched, data_shape=(2,)).to(dtype)


def _trained(tmp_path, dtype=torch.float32):
    data = checkerboard(512, gen(0), dtype=dtype)
    ck = tmp_path / "run" / "ck.pt"
    res = train(
        _ndm(dtype), data, steps=12, batch_size=32, generator=gen(1), progress=False, checkpoint=ck
    )
    return res, ck


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_load_model_samples_equal_in_memory(tmp_path, dtype):
    res, ck = _trained(tmp_path, dtype)
    for ema, ref in ((True, res.ema_model), (False, res.model)):
        loaded = load_model(ck, ema=ema)
        assert isinstance(loaded, nd.NDM) and loaded.data_shape == (2,)
        assert next(loaded.parameters()).dtype == dtype
        assert loaded.predictor.schedule is loaded.schedule  # sharing survives
        a = nd.sample(ref, 16, method="heun", steps=6, generator=gen(5), dtype=dtype).samples
        b = nd.sample(loaded, 16, method="heun", steps=6, generator=gen(5), dtype=dtype).samples
        assert torch.equal(a, b), ema
    # The EMA and raw weights differ after training, so the two loads are distinct.
    pe = torch.cat([p.flatten() for p in load_model(ck).parameters()])
    pr = torch.cat([p.flatten() for p in load_model(ck, ema=False).parameters()])
    assert not torch.equal(pe, pr)


def test_checkpoint_carries_training_state(tmp_path):
    _, ck = _trained(tmp_path)
    state = load_checkpoint(ck)
    assert state["format_version"] == FORMAT_VERSION and state["library_version"] == nd.__version__
    assert state["step"] == 12 and len(state["losses"]) == 12
    for key in ("model", "ema", "optimizer", "generator", "rng", "config"):
        assert state[key] is not None, key


def test_unet_ndm_config_round_trip():
    torch.manual_seed(0)
    sched = nd.CosineLogSNR()
    pred = EpsilonPredictor(
        UNet(1, base=8, mults=(1, 2), attn_levels=(1,), mid_attn=True, dropout=0.1), sched
    )
    model = nd.NDM(
        pred,
        nd.ResidualTransform(UNet(1, base=8, mults=(1,), zero_init=True)),
        sched,
        data_shape=(1, 8, 8),
    )
    clone = from_config(to_config(model))
    clone.load_state_dict(model.state_dict())
    model.eval(), clone.eval()
    z, t = torch.randn(3, 1, 8, 8, generator=gen(0)), torch.rand(3, generator=gen(1))
    assert torch.equal(model.x_hat(z, t), clone.x_hat(z, t))
    assert torch.equal(model.F(z, t), clone.F(z, t))


@nd.configurable
class UserNet(nn.Module):
    def __init__(self, dim: int, scale: float = 0.5):
        super().__init__()
        self.lin = nn.Linear(dim + 1, dim)
        self.scale = scale

    def forward(self, x, t):
        return self.scale * self.lin(torch.cat([x, t[:, None]], 1))


class PlainNet(nn.Module):  # not configurable
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x, t):
        return self.lin(torch.cat([x, t[:, None]], 1))


def test_user_modules(tmp_path):
    model = nd.NDM(UserNet(2, scale=0.25), data_shape=(2,))
    save_checkpoint(tmp_path / "u.pt", model=model, ema={"shadow": model.state_dict()})
    loaded = load_model(tmp_path / "u.pt")
    assert isinstance(loaded.predictor, UserNet) and loaded.predictor.scale == 0.25
    z, t = torch.randn(4, 2, generator=gen(0)), torch.rand(4, generator=gen(1))
    assert torch.equal(loaded.x_hat(z, t), model.x_hat(z, t))
    # Not configurable: the weights are saved, and load_model says what to do instead.
    plain = nd.NDM(PlainNet(), data_shape=(2,))
    with pytest.raises(ConfigError, match="PlainNet is not configurable"):
        to_config(plain)
    save_checkpoint(tmp_path / "p.pt", model=plain)
    with pytest.raises(
        CheckpointError, match=r"p\.pt.*no model configuration.*PlainNet.*load_checkpoint"
    ):
        load_model(tmp_path / "p.pt")
    other = nd.NDM(PlainNet(), data_shape=(2,))
    load_checkpoint(tmp_path / "p.pt", model=other)
    assert torch.equal(other.x_hat(z, t), plain.x_hat(z, t))


def test_unusable_files_raise_checkpoint_error(tmp_path):
    _, ck = _trained(tmp_path)
    raw = ck.read_bytes()
    cases = {}
    (tmp_path / "empty.pt").write_bytes(b"")
    cases["empty.pt"] = "is empty"
    for frac in (0.5, 0.9):
        name = f"cut{int(frac * 100)}.pt"
        (tmp_path / name).write_bytes(raw[: int(len(raw) * frac)])
        cases[name] = "truncated or corrupt"
    (tmp_path / "text.pt").write_text("hello, not a checkpoint\n")
    cases["text.pt"] = "not a torch.save zip file"
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    cases["foreign.pt"] = "not an ndmsolve checkpoint"
    torch.save(nn.Linear(2, 2), tmp_path / "pickled.pt")  # a pickled module: code, refused
    cases["pickled.pt"] = "objects other than tensors"
    state = torch.load(ck, weights_only=True)
    state["format_version"] = FORMAT_VERSION + 1
    torch.save(state, tmp_path / "newer.pt")
    cases["newer.pt"] = "format version .*upgrade ndmsolve"
    flipped = bytearray(raw)
    mid = len(raw) // 2
    flipped[mid : mid + 64] = bytes(64)
    (tmp_path / "flipped.pt").write_bytes(bytes(flipped))
    cases["flipped.pt"] = "truncated or corrupt"
    for name, msg in cases.items():
        for fn in (load_model, load_checkpoint):
            with pytest.raises(CheckpointError, match=msg) as info:
                fn(tmp_path / name)
            assert name in str(info.value), (name, str(info.value))
            assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="entry 'optimizer' does not fit"):
        load_checkpoint(ck, optimizer=torch.optim.Adam(nn.Linear(3, 3).parameters()))


def test_crash_between_temp_write_and_rename_keeps_old_checkpoint(tmp_path, monkeypatch):
    res, ck = _trained(tmp_path)
    before = ck.read_bytes()

    def crash(src, dst):  # the process dies after the temporary file is complete
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(ck, model=res.model, step=99)
    monkeypatch.undo()
    assert ck.read_bytes() == before
    assert load_checkpoint(ck)["step"] == 12
    assert os.listdir(ck.parent) == ["ck.pt"]
    # A temporary file left by a hard kill (no cleanup ran) does not hide the checkpoint.
    (ck.parent / ".ck.pt.abc123.tmp").write_bytes(before[:100])
    a = nd.sample(load_model(ck), 8, method="euler", steps=3, generator=gen(0)).samples
    b = nd.sample(res.ema_model, 8, method="euler", steps=3, generator=gen(0)).samples
    assert torch.equal(a, b)


def test_load_model_trainable_fine_tunes(tmp_path):
    _, ck = _trained(tmp_path)
    frozen = load_model(ck)
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    data = checkerboard(256, gen(2))
    with pytest.raises(ValueError, match=r"nd\.load_model\(path, trainable=True\)"):
        train(frozen, data, steps=2, batch_size=32, generator=gen(3), progress=False)
    model = load_model(ck, trainable=True)
    assert model.training and all(p.requires_grad for p in model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    res = train(model, data, steps=3, batch_size=32, generator=gen(3), progress=False)
    after = list(res.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    with pytest.raises(TypeError, match="trainable must be True or False"):
        load_model(ck, trainable="yes")
