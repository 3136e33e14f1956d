"""benchmarks/prior_fraction_cost.py runs end to end at its smallest sizes and writes
well-formed JSON: the subset prior adds gradient variance, never removes it."""

import json
import math

import pytest
from helpers import load_benchmark


def test_prior_fraction_cost_quick(tmp_path):
    mod = load_benchmark("prior_fraction_cost")
    argv = ["--quick", "--seeds", "2", "--cpu-seconds", "0.05", "--out-dir", str(tmp_path)]
    res = mod.main(argv)
    on_disk = json.loads((tmp_path / "prior_fraction_cost_cpu.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    for case, v in on_disk["variance"].items():
        assert v["grad_var_added"] > 0 and math.isfinite(v["grad_trvar_exact"]), case
    e = on_disk["elbo_equal_cpu"]
    assert len(e["exact"]["values"]) == len(e["subset"]["values"]) == 2
    assert all(n >= 1 for n in e["exact"]["steps"] + e["subset"]["steps"])


def test_prior_fraction_cost_rejects_bad_options(tmp_path, capsys):
    mod = load_benchmark("prior_fraction_cost")
    for bad in (["--fraction", "1.5"], ["--seeds", "1"]):
        with pytest.raises(SystemExit):
            mod.main(["--quick", *bad, "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "--fraction: prior_fraction must be a number in (0, 1]" in err and "--seeds" in err
