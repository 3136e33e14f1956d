"""Every bad command-line value is one usage line (exit 2, no traceback) naming the flag as
typed (or the TOML key), given before any work starts; checkpoint loading errors list the
keys and carry no terminal codes; the count options pass through torchrun."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_thread_fixture

import ndmsolve.commands.likelihood
import ndmsolve.sampling
import ndmsolve.studies.nfe_sweep
import ndmsolve.train
from ndmsolve.checkpoint import CheckpointError, load_model, read_checkpoint
from ndmsolve.commands import build_parser, main

_one_thread = one_thread_fixture(torch.float32)

TOY = ["--data", "checkerboard", "--hidden", "8", "--transform-hidden", "8", "--depth", "2"]
TOY += ["--batch-size", "16", "--n-grid", "0", "--no-progress", "--steps", "3"]
IMG = ["--base", "4", "--mults", "1,2", "--transform-base", "4", "--transform-mults", "1"]
IMG += ["--time-dim", "8", "--batch-size", "8", "--n-grid", "0", "--no-progress", "--steps", "2"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A toy checkpoint (2 training steps), a folder of 8x8 PNGs and a folder."""
    root = tmp_path_factory.mktemp("cli_values")
    assert main(["train", *TOY[:-1], "2", "--out", str(root / "toy")]) == 0
    from PIL import Image

    pngs = root / "pngs"
    pngs.mkdir()
    g = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(g.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(
            pngs / f"{i:02d}.png"
        )
    (root / "somedir").mkdir()
    (root / "a_file").write_text("x")
    (root / "run.toml").write_text("logsnr_min = 10.0\n")
    (root / "inf.toml").write_text("lr = inf\n")
    (root / "batch.toml").write_text("batch_size = 100\n")
    return {
        "CKPT": str(root / "toy" / "checkpoint.pt"),
        "PNG": f"png:{pngs}",
        "DIR": str(root / "somedir"),
        "FILE": str(root / "a_file"),
        "ROOT": str(root),
    }


# (argv with {CKPT}/{PNG}/{DIR}/{FILE}/{ROOT} placeholders, what the line must contain)
CASES = [
    (["train", *TOY, "--logsnr-min", "10", "--logsnr-max", "-10"], "--logsnr-min (10) must be below --logsnr-max"),
    (["train", *TOY, "--logsnr-min", "nan"], "--logsnr-min must be a finite number"),
    (["train", *TOY, "--lr", "inf"], "--lr must be a finite number"),
    (["train", *TOY, "--ema-decay", "nan"], "--ema-decay must be a finite number"),
    (["train", *TOY, "--microbatches", "3", "--batch-size", "128"], "--batch-size (128) must be divisible by --microbatches (3)"),
    (["train", *TOY, "--warmup-steps", "10"], "--warmup-steps (10) must not exceed --steps (3)"),
    (["train", *TOY, "--amp", "fp16", "--device", "cpu"], "--amp fp16 needs a CUDA device"),
    (["train", *TOY, "--batch-size", "0"], "--batch-size must be positive"),
    (["train", *TOY, "--grid-steps", "0", "--n-grid", "4"], "--grid-steps must be positive"),
    (["train", *TOY, "--base", "8"], "--base do(es) not apply to toy data"),
    (["train", *TOY, "--data-root", "{DIR}"], "--data-root applies to mnist and cifar10 only"),
    (["train", *TOY, "--data", "nonsense"], "--data 'nonsense': data must be one of"),
    (["train", *TOY, "--data", "png:/nonexistent/x"], "--data 'png:/nonexistent/x'"),
    (["train", *TOY, "--config", "{ROOT}/run.toml"], "logsnr_min in {ROOT}/run.toml (10) must be below --logsnr-max"),
    (["train", *TOY, "--config", "{ROOT}/inf.toml"], "lr in {ROOT}/inf.toml must be a finite number"),
    (["train", "--data", "checkerboard", "--config", "{ROOT}/batch.toml", "--microbatches", "3"], "batch_size in {ROOT}/batch.toml (100) must be divisible by --microbatches"),
    (["train", "--data", "{PNG}", *IMG, "--mults", "1,2,2,2,2"], "--mults (1,2,2,2,2) has 5 levels for 8x8 images"),
    (["train", "--data", "{PNG}", *IMG, "--transform-mults", "1,1,1,1,1"], "--transform-mults (1,1,1,1,1) has 5 levels"),
    (["train", "--data", "{PNG}", *IMG, "--attn-levels", "7"], "--attn-levels [7] out of range"),
    (["train", "--data", "{PNG}", *IMG, "--attn-levels", "1", "--attn-heads", "3"], "--attn-heads (3) must divide"),
    (["train", "--data", "{PNG}", *IMG, "--hidden", "8"], "--hidden do(es) not apply to image data"),
    (["likelihood", "{CKPT}", "--trace", "exact", "--probes", "4"], "--probes applies to --trace hutchinson only"),
    (["likelihood", "{CKPT}", "--method", "euler"], "--method euler is a fixed-step method: give its step count with --steps"),
    (["likelihood", "{CKPT}", "--method", "euler", "--steps", "4", "--rtol", "1e-3"], "--rtol: 'euler' is a fixed-step method"),
    (["likelihood", "{CKPT}", "--steps", "4"], "--steps: 'tsit5' is adaptive"),
    (["likelihood", "{CKPT}", "--method", "ddim"], "--method must be a registered method"),
    (["likelihood", "{CKPT}", "--num-points", "0"], "--num-points must be positive"),
    (["likelihood", "{CKPT}", "--n", "0"], "--n must be positive"),
    (["likelihood", "{CKPT}", "--num-points", "100000"], "--num-points 100000: the test split of 'checkerboard' has only 5000 points"),
    (["likelihood", "{CKPT}", "--n", "4", "--num-points", "4"], "--num-points and --n are the same option"),
    (["likelihood", "{CKPT}", "--rtol", "nan"], "--rtol must be a finite number"),
    (["likelihood", "{CKPT}", "--out", "{DIR}/"], "--out '{DIR}/' is a folder"),
    (["likelihood", "{CKPT}", "--data-root", "{DIR}"], "--data-root applies to mnist and cifar10 only"),
    (["likelihood", "{DIR}"], "checkpoint '{DIR}' is a folder, not a checkpoint file"),
    (["likelihood", "{ROOT}/none.pt"], "no checkpoint at '{ROOT}/none.pt'"),
    (["sample", "{CKPT}", "--out", "{DIR}/"], "--out '{DIR}/' is a folder"),
    (["sample", "{CKPT}", "--out", "{DIR}"], "--out '{DIR}' is a folder"),
    (["sample", "{CKPT}", "--out", "{FILE}/x.png"], "is a file, not a folder"),
    (["sample", "{CKPT}", "--out", "{ROOT}/x.npz"], "--out must name a .png file"),
    (["sample", "{CKPT}", "--method", "heun", "--rtol", "1e-3"], "--rtol: 'heun' is a fixed-step method"),
    (["sample", "{CKPT}", "--method", "dopri5", "--steps", "4"], "--steps: 'dopri5' is adaptive"),
    (["sample", "{CKPT}", "--method", "dopri5", "--grid-kind", "karras", "--rtol", "1e-2"], "--grid-kind: 'dopri5' is adaptive"),
    (["sample", "{CKPT}", "--method", "dopri5"], "--method dopri5 is adaptive: give its tolerance with --rtol"),
    (["sample", "{CKPT}", "--method", "unipc_3m", "--steps", "1"], "--steps must be at least"),
    (["sample", "{CKPT}", "--num-samples", "-1"], "--num-samples must be positive"),
    (["sample", "{CKPT}", "--n", "0"], "--n must be positive"),
    (["sample", "{CKPT}", "--atol", "inf", "--method", "dopri5", "--rtol", "1e-2"], "--atol must be a finite number"),
    (["sample", "{DIR}"], "checkpoint '{DIR}' is a folder"),
    (["sample", "{CKPT}", "--seed", "99999999999999999999"], "--seed must lie in [0, 2**62)"),
    (["train", *TOY, "--seed", "-1"], "--seed must lie in [0, 2**62)"),
    (["demo", "--out", "{FILE}"], "--out '{FILE}' is a file; expected a folder"),
    (["demo", "--steps", "0"], "--steps must be a positive integer"),
    (["sweep", "--seeds", "1"], "--seeds must give at least 2 seeds"),
    (["sweep", "--n", "1"], "--n must be at least 2"),
    (["sweep", "--num-samples", "1"], "--num-samples must be at least 2"),
    (["sweep", "--n-ref", "0"], "--n-ref must be at least 2"),
    (["sweep", "--steps", "0"], "--steps must be positive step counts"),
    (["sweep", "--tols", "nan"], "--tols must be positive finite numbers"),
    (["sweep", "--quality", "inf"], "--quality must be positive finite numbers"),
    (["sweep", "--methods", "nope"], "--methods: unknown method 'nope'"),
    (["sweep", "--model", "a={DIR}", "--data", "checkerboard"], "checkpoint '{DIR}' is a folder"),
]  # fmt: skip


def _forbid_work(monkeypatch):
    """Training, sampling and the likelihood solve raise if reached: the checks come first."""

    def started(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(ndmsolve.train, "train", started)
    monkeypatch.setattr(ndmsolve.sampling, "sample", started)
    monkeypatch.setattr(ndmsolve.commands.likelihood, "evaluate", started)
    monkeypatch.setattr(ndmsolve.studies.nfe_sweep, "sweep", started)


@pytest.mark.parametrize(
    "argv, message", CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES]
)
def test_bad_value_is_one_usage_line(argv, message, files, tmp_path, capsys, monkeypatch):
    _forbid_work(monkeypatch)
    out = tmp_path / "out"
    argv = [a.format(**files) for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(out)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"ndmsolve {argv[0]}: error: "), err
    assert message.format(**files) in lines[0], (message, err)
    assert "\x1b" not in err and "--batch_size" not in err
    assert not (out / "checkpoint.pt").exists() and not any(tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--microbatches", "3", "--batch-size", "12"], "--microbatches (3) must be a multiple of the number of processes (2)"),
        (["--batch-size", "15"], "--batch-size (15) must be divisible by the number of processes (2)"),
    ],
)  # fmt: skip
def test_microbatches_under_torchrun(flags, message, tmp_path, capsys, monkeypatch):
    """WORLD_SIZE as torchrun sets it: checked before the process group starts."""
    _forbid_work(monkeypatch)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", *TOY, *flags, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_a_valid_run_reaches_the_work(files, monkeypatch, capsys):
    """The guard of the test above can fail: a good command line does reach the work."""
    _forbid_work(monkeypatch)
    with pytest.raises(AssertionError, match="work started"):
        main(["likelihood", files["CKPT"], "--method", "euler", "--steps", "2"])


class Foo:
    """Not a tensor: ``torch.load(weights_only=True)`` refuses it."""


def test_unpickled_objects_message_has_no_terminal_codes(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"format": "ndmsolve-checkpoint", "x": {"a": Foo()}}, path)
    with pytest.raises(CheckpointError, match="holds objects other than tensors") as info:
        read_checkpoint(path)
    text = str(info.value)
    assert "\x1b" not in text and "\n" not in text and "do those steps only if" in text


def test_wrong_weights_list_the_keys(files, tmp_path, capsys):
    """A DDPM configuration with an NDM's weights: the message names the surplus keys."""
    from ndmsolve.commands import train as train_cmd
    from ndmsolve.commands.models import build_model
    from ndmsolve.config import to_config

    state = torch.load(files["CKPT"], weights_only=True)
    cfg = {o.name: o.default for o in train_cmd.OPTIONS} | state["train_config"]
    state["config"] = to_config(build_model(cfg | {"model": "ddpm"}, (2,), False, 0))
    path = tmp_path / "mixed.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    text = str(info.value)
    n = sum(k.startswith("transform.") for k in state["ema"]["shadow"])
    assert f"unexpected {n} key(s) ['transform." in text and "more" in text, text
    assert "missing" not in text and "\n" not in text
    assert main(["sample", str(path), "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"unexpected {n} key(s)" in err
    # Same keys, other widths: the size mismatches are listed.
    state["config"] = to_config(build_model(cfg | {"hidden": 12}, (2,), False, 0))
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"size mismatch for predictor\.\S+: copying") as info:
        load_model(path)
    assert "\n" not in str(info.value) and "Error(s) in loading" not in str(info.value)


def _subparsers() -> dict:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_no_flag_is_abbreviated(files, capsys):
    """allow_abbrev=False: a prefix of a flag is an error, not the flag."""
    assert main(["sample", files["CKPT"], "--num-samp", "3"]) == 2
    assert "unrecognized arguments: --num-samp" in capsys.readouterr().err
    for name, parser in _subparsers().items():
        assert parser.allow_abbrev is False, name


def test_torchrun_passes_every_flag_through():
    """torchrun's parser takes an abbreviation of its own options anywhere on the command
    line; every flag of ours but the old ``--n`` must reach the script unchanged."""
    run = pytest.importorskip("torch.distributed.run")
    parser = run.get_args_parser()
    for name, sub in _subparsers().items():
        for action in sub._actions:
            for flag in action.option_strings:
                if flag in ("-h", "--help", "--n"):
                    continue
                argv = [name, "CKPT", flag, "1"]
                try:
                    got = parser.parse_args(["-m", "ndmsolve", *argv])
                except SystemExit:
                    pytest.fail(f"torchrun swallows ndmsolve {name} {flag}")
                assert got.training_script_args == argv, (name, flag)


def test_likelihood_num_points_under_torchrun(files, tmp_path):
    out = tmp_path / "l.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")]
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"]
    cmd += ["-m", "ndmsolve", "likelihood", files["CKPT"], "--num-points", "40"]
    cmd += ["--batch-size", "40", "--rtol", "1e-2", "--atol", "1e-2", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    assert json.loads(out.read_text())["n"] == 40
