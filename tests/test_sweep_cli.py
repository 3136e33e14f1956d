"""``ndmsolve sweep``: a small closed-form sweep end to end, and its usage errors."""

import json

import pytest
import torch

from ndmsolve.cli import main
from ndmsolve.studies.nfe_sweep import COLUMNS


@pytest.fixture(autouse=True)
def _float32_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(old)


def test_sweep_command_writes_table_and_figure(tmp_path, capsys):
    out = tmp_path / "sw"
    argv = [
        "sweep",
        "--methods",
        "heun,dopri5,ddim",
        "--steps",
        "1,8",
        "--tols",
        "1e-1,1e-3",
        "--seeds",
        "2",
        "--n",
        "64",
        "--metrics",
        "energy_distance",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    data = json.loads((out / "sweep.json").read_text())
    assert data["columns"] == list(COLUMNS) + ["energy_distance", "energy_distance_se"]
    assert {(r["model"], r["method"]) for r in data["rows"]} == {
        (m, k) for m in ("NDM", "DDPM") for k in ("heun", "dopri5", "ddim")
    }
    assert [r["steps"] for r in data["rows"] if r["method"] == "heun"] == [1, 8, 1, 8]
    assert [r["tol"] for r in data["rows"] if r["method"] == "dopri5"] == [0.1, 1e-3] * 2
    assert (out / "sweep.png").stat().st_size > 0
    assert "best NDM: energy_distance <=" in text and "floor DDPM: energy_distance" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "heunn"], "unknown method 'heunn'"),
        (["--metrics", "fid"], "unknown metric 'fid'"),
        (["--seeds", "1"], "at least 2 seeds"),
        (["--model", "ndm.pt"], "--model must be NAME=CHECKPOINT"),
        (["--model", "a=ndm.pt"], "--data is needed with --model"),
        (["--model", "a=ndm.pt", "--data", "checker"], "--data must be one of"),
        (["--data", "checkerboard"], "--data applies to --model"),
        (["--steps", "2,x"], "expected comma-separated step counts"),
    ],
)
def test_sweep_usage_errors(argv, message, tmp_path, capsys):
    assert main(["sweep", *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
