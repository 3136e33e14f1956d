"""benchmarks/nonfinite_cost.py runs end to end at its smallest sizes and writes
well-formed JSON; the check it turns off is on again afterwards."""

import json
import math

from helpers import load_benchmark

import ndmsolve.train as nd_train


def test_nonfinite_cost_quick(tmp_path):
    mod = load_benchmark("nonfinite_cost")
    res = mod.main(["--quick", "--rounds", "1", "--min-time", "0", "--out-dir", str(tmp_path)])
    on_disk = json.loads((tmp_path / "nonfinite_cost_cpu.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    assert not list(tmp_path.glob(".nonfinite_cost_*"))
    assert set(on_disk["cases"]) == {"mlp", "unet8"}
    for case, c in on_disk["cases"].items():
        assert set(c["ms_per_step"]) == set(mod.VARIANTS), case
        for key in ("ratio_clip", "ratio_noclip", "check_alone_ms"):
            assert math.isfinite(c[key]) and c[key] > 0, (case, key)
    assert nd_train._StepGuard.check is True
