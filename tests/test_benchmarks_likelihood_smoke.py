"""benchmarks/likelihood_cost.py runs end to end at its smallest sizes and writes well-formed JSON."""

import json
import math

from helpers import load_benchmark


def test_likelihood_cost_quick(tmp_path):
    mod = load_benchmark("likelihood_cost")
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
    on_disk = json.loads((tmp_path / "likelihood_cost_cpu.json").read_text())
    assert on_disk == json.loads(json.dumps(res))  # what main returns is what it wrote
    assert not list(tmp_path.glob(".likelihood_cost_*"))  # no temp file left behind
    for key in ("device", "device_name", "torch", "threads", "field_cost", "memory", "end_to_end"):
        assert key in on_disk, key
    assert on_disk["device_name"] and on_disk["torch"]
    assert set(on_disk["field_cost"]) == {"mlp", "conv"}
    assert "exact" in on_disk["field_cost"]["mlp"]["ratios"]
    assert "exact_est" in on_disk["field_cost"]["conv"]["ratios"]
    for c in on_disk["field_cost"].values():
        for name, r in c["ratios"].items():
            assert isinstance(r, float) and math.isfinite(r) and r > 0, (name, r)
    mem = on_disk["memory"]["mib"]
    assert all(len(v) == 3 and all(x >= 0 for x in v) for v in mem.values())
    # the naive port keeps each step's graph: its peak grows with the number of steps
    assert mem["naive_attached"][-1] > mem["naive_attached"][0]
    for e in on_disk["end_to_end"].values():
        assert e["nfe"]["ours"] == e["nfe"]["scoresde"]
        assert e["max_abs_dlogp"] < 1e-3
