"""benchmarks/train_step_cost.py runs end to end at its smallest sizes and writes
well-formed JSON."""

import json
import math

import pytest
from helpers import load_benchmark


@pytest.mark.parametrize("loss", ["continuous", "discrete"])
def test_train_step_cost_quick(tmp_path, loss):
    mod = load_benchmark("train_step_cost")
    res = mod.main(
        [
            "--quick",
            "--threads",
            "1",
            "--rounds",
            "1",
            "--min-time",
            "0",
            "--loss",
            loss,
            "--out-dir",
            str(tmp_path),
        ]
    )
    on_disk = json.loads((tmp_path / f"train_step_cost_{loss}_cpu.json").read_text())
    assert on_disk == json.loads(json.dumps(res))  # what main returns is what it wrote
    assert not list(tmp_path.glob(".train_step_cost_*"))  # no temp file left behind
    for key in ("device", "device_name", "torch", "threads", "loss", "clock", "cases"):
        assert key in on_disk, key
    assert on_disk["device_name"] and on_disk["loss"] == loss and on_disk["clock"] == "cpu"
    assert set(on_disk["cases"]) == {"mlp", "unet8", "unet32"}
    for case, c in on_disk["cases"].items():
        extra = {mod.JVP_VARIANT} if case == "mlp" else set()
        extra |= set(mod.PRIOR_VARIANTS) if loss == "continuous" else set()
        assert set(c["ratios"]) == set(mod.VARIANTS) - {"ddpm"} | extra, case
        for name, r in c["ratios"].items():
            assert isinstance(r, float) and math.isfinite(r) and r > 0, (case, name, r)
        # half width means a smaller transform than the equal-width one
        assert c["params"]["general_half"] < c["params"]["general_equal"]
        assert c["params"]["time_basis_half"] < c["params"]["time_basis_equal"]
        assert c["params"]["ddpm"] == 0
        units = c["pass_units"]
        assert set(mod.PASSES) <= set(units) and units["predictor"] == 1.0
        assert all(math.isfinite(v) and v > 0 for v in units.values()), units


def test_train_step_cost_rejects_unknown_case(tmp_path):
    mod = load_benchmark("train_step_cost")
    with pytest.raises(SystemExit):
        mod.main(["--quick", "--cases", "mlp,resnet", "--out-dir", str(tmp_path)])
