"""``ndmsolve sweep``: a small closed-form sweep end to end, and its usage errors."""

import contextlib
import json

import pytest
import torch

from ndmsolve.commands import main
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
        (["--model", "a=ndm.pt"], "no checkpoint at 'ndm.pt'"),
        (["--methods", "ddim:grid_kind=logsnr"], "give 'ddim:grid_kind=logsnr' as --recipe"),
        (["--recipe", "ddim:grid=logsnr"], "unknown option 'grid'"),
        (["--recipe", "ddim:sigma_min=0.1"], "add denoise=true"),
        (["--recipe", "ddim:denoise"], "expected key=value"),
        (["--recipes", "missing.toml"], "does not exist"),
        (["--other-data"], "--data applies to --model"),
        (["--model", "a=ndm.pt", "--data", "checker"], "--data must be one of"),
        (["--data", "checkerboard"], "--data applies to --model"),
        (["--steps", "2,x"], "expected comma-separated step counts"),
    ],
)
def test_sweep_usage_errors(argv, message, tmp_path, capsys):
    assert main(["sweep", *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def _checkpoint(path, data):
    import ndmsolve as nd
    from ndmsolve.checkpoint import save_checkpoint
    from ndmsolve.fields import MLP

    torch.manual_seed(0)
    model = nd.NDM(
        MLP(2, hidden=8, depth=1), schedule=nd.LinearLogSNR(-10.0, 10.0), data_shape=(2,)
    )
    extra = {} if data is None else {"data": data}
    save_checkpoint(path, model=model, ema={"shadow": model.state_dict()}, **extra)
    return str(path)


def test_sweep_checks_the_checkpoint_data(tmp_path, capsys):
    ck = _checkpoint(tmp_path / "m.pt", "checkerboard")
    bare = _checkpoint(tmp_path / "b.pt", None)
    base = ["sweep", "--methods", "ddim", "--steps", "2", "--seeds", "2", "--floor-seeds", "2"]
    base += ["--n", "32", "--metrics", "energy_distance", "--out", str(tmp_path / "o")]
    assert main([*base, "--model", f"m={ck}", "--data", "two_moons"]) == 2
    err = capsys.readouterr().err
    assert "--data 'two_moons' is not the data the models were trained on" in err
    assert "--other-data" in err
    assert main([*base, "--model", f"m={bare}"]) == 2
    assert "--data is needed with --model" in capsys.readouterr().err
    # the recorded data by default; another set only with --other-data
    assert main([*base, "--model", f"m={ck}"]) == 0
    assert main([*base, "--model", f"m={ck}", "--data", "two_moons", "--other-data"]) == 0
    assert main([*base, "--model", f"m={bare}", "--data", "two_moons", "--other-data"]) == 0


def test_sweep_runs_recipes(tmp_path, capsys):
    toml = tmp_path / "r.toml"
    toml.write_text(
        '[[recipe]]\nmethod = "unipc_2m"\ngrid_kind = "logsnr"\nsigma_min = 0.12\n'
        'denoise = true\nname = "u2@0.12"\nsteps = [4]\n'
    )
    out = tmp_path / "sw"
    argv = ["sweep", "--recipe", "dpmpp_2m:grid_kind=uniform,lower_order_final=false"]
    argv += ["--recipes", str(toml), "--methods", "ddim", "--steps", "3", "--seeds", "2"]
    argv += ["--floor-seeds", "3", "--n", "48", "--metrics", "energy_distance"]
    assert main([*argv, "--out", str(out)]) == 0
    data = json.loads((out / "sweep.json").read_text())
    rows = {(r["model"], r["method"]): r for r in data["rows"]}
    spec = "dpmpp_2m:grid_kind=uniform,lower_order_final=false"
    assert set(rows) == {(m, k) for m in ("NDM", "DDPM") for k in ("ddim", spec, "u2@0.12")}
    u2 = rows[("DDPM", "u2@0.12")]
    assert u2["steps"] == 4 and u2["nfe"] == 5  # 4 steps, then x_hat
    assert u2["options"] == {
        "method": "unipc_2m",
        "grid_kind": "logsnr",
        "sigma_min": 0.12,
        "denoise": True,
    }
    assert rows[("NDM", spec)]["steps"] == 3 and rows[("NDM", spec)]["nfe"] == 3
    assert data["floors"]["NDM"]["energy_distance"]["seeds"].__len__() == 3
    assert data["config"]["floor_seeds"] == [0, 1, 2]


def test_quality_help_says_the_multiples_used(capsys):
    from ndmsolve.studies.nfe_sweep import DEFAULT_FLOOR_MULTIPLES

    with contextlib.suppress(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default " + ", ".join(f"{k:g}" for k in DEFAULT_FLOOR_MULTIPLES) + " times" in text
