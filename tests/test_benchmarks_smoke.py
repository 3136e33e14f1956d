"""The benchmarks run end to end at their smallest sizes and write well-formed JSON."""
import importlib.util
import json
import math
import pathlib

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_drift_cost_quick(tmp_path):
    mod = _load("drift_cost")
    res = mod.main(["--quick", "--threads", "1", "--rounds", "1", "--min-time", "0", "--out-dir", str(tmp_path)])
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
