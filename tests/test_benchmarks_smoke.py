"""The benchmarks run end to end at their smallest sizes and write well-formed JSON."""

import json
import math

from helpers import load_benchmark


def test_drift_cost_quick(tmp_path):
    mod = load_benchmark("drift_cost")
    res = mod.main(
        [
            "--quick",
            "--threads",
            "1",
            "--rounds",
            "1",
            "--min-time",
            "0",
            "--out-dir",
            str(tmp_path),
        ]
    )
    path = tmp_path / "drift_cost_cpu.json"
    on_disk = json.loads(path.read_text())
    assert on_disk == json.loads(json.dumps(res))  # what main returns is what it wrote
    assert not list(tmp_path.glob(".drift_cost_*"))  # no temp file left behind
    for key in ("device", "device_name", "torch", "threads", "cases"):
        assert key in on_disk, key
    assert on_disk["device_name"] and on_disk["torch"]
    assert set(on_disk["cases"]) == {"mlp", "conv"}
    for case, c in on_disk["cases"].items():
        assert set(c["ratios"]) == {"func", "autograd", "fd", "time_basis_analytic"}, case
        for name, r in c["ratios"].items():
            assert isinstance(r, float) and math.isfinite(r) and r > 0, (case, name, r)
        for name, a in c["attempts"].items():
            assert "error" in a or (math.isfinite(a["ratio"]) and a["ratio"] > 0), (case, name, a)
        assert c["ms"]["base_residual"] > 0
