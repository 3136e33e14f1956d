"""The ``ndmsolve`` command: the quick demo end to end, and the module entry point."""

import json
import math
import re
import subprocess
import sys

import pytest
import torch

from ndmsolve.commands import main


@pytest.fixture(autouse=True)
def _float32_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(old)


NELBO = re.compile(r"^(NDM|DDPM)\s+negative ELBO: (\S+) ± (\S+) nats \((\S+) nats/dim\)$", re.M)


def test_quick_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    found = {name: tuple(map(float, rest)) for name, *rest in NELBO.findall(text)}
    assert set(found) == {"NDM", "DDPM"}, text
    for name, (nelbo, se, per_dim) in found.items():
        assert math.isfinite(nelbo) and math.isfinite(se) and se > 0, (name, nelbo, se)
        assert abs(per_dim - nelbo / 2) < 1e-3  # 2D data
    # The paired difference agrees with the two printed values.
    m = re.search(r"^NDM − DDPM: (\S+) ± (\S+) nats", text, re.M)
    assert m, text
    assert (
        abs(float(m.group(1)) - (found["NDM"][0] - found["DDPM"][0])) < 2e-4
        and float(m.group(2)) > 0
    )
    summary = json.loads((out / "results.json").read_text())
    assert abs(summary["NDM"]["nelbo"] - found["NDM"][0]) < 1e-3
    assert (out / "ndm.pt").is_file() and (out / "ddpm.pt").is_file()
    # The checkpoints rebuild the evaluated models with no user code: the held-out negative
    # ELBO recomputed from load_model equals the one the demo computed in memory.
    from ndmsolve import load_model
    from ndmsolve.commands.demo import QUICK
    from ndmsolve.data import checkerboard
    from ndmsolve.objectives import held_out_nelbo

    g = torch.Generator().manual_seed(0)
    checkerboard(50_000, g)
    test_x = checkerboard(QUICK["n_eval"], g)
    for name in ("NDM", "DDPM"):
        model = load_model(out / f"{name.lower()}.pt")
        again = held_out_nelbo(
            model, test_x, QUICK["eval_draws"], torch.Generator().manual_seed(2)
        ).mean()
        assert abs(float(again) - summary[name]["nelbo"]) < 1e-5, name
    if "Sampling is unavailable" not in text:
        png = out / "samples.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(png) in text


def test_usage_errors(capsys):
    assert main([]) == 2
    assert main(["demo", "--steps", "0"]) == 2
    assert "--steps must be a positive integer" in capsys.readouterr().err
    assert main(["nonsense"]) == 2
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["demo", "--help"]) == 0
    assert "--quick" in capsys.readouterr().out


def test_python_m_help():
    r = subprocess.run(
        [sys.executable, "-m", "ndmsolve", "--help"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert "demo" in r.stdout and "usage: ndmsolve" in r.stdout


def test_old_entry_points_run_the_package():
    """``ndmsolve.cli`` (notebooks, old imports) and the console script reach
    ``ndmsolve.commands.main``."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    from pathlib import Path

    import ndmsolve.cli
    import ndmsolve.commands.demo

    assert ndmsolve.cli.main is main
    assert ndmsolve.cli.QUICK is ndmsolve.commands.demo.QUICK
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    assert scripts["ndmsolve"] == "ndmsolve.commands:main"


def test_demo_models_start_as_one_diffusion():
    """The demo's NDM and DDPM start from the same predictor weights, and the NDM's learned
    transform starts at the identity, so both begin as the same classical diffusion."""
    from ndmsolve.commands.demo import demo_models

    ndm, ddpm = demo_models(16, x_features=4)
    a, b = ndm.predictor.state_dict(), ddpm.predictor.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x, t = torch.randn(5, 2), torch.rand(5)
    assert torch.equal(ndm.transform(x, t), x) and torch.equal(ddpm.transform(x, t), x)
    assert sum(p.numel() for p in ndm.parameters()) > sum(p.numel() for p in ddpm.parameters())
