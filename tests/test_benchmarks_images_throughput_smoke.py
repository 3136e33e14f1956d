"""benchmarks/images_throughput.py runs end to end at its smallest size and writes
well-formed JSON."""

import json
import math

import pytest
from helpers import load_benchmark


def test_images_throughput_quick(tmp_path):
    mod = load_benchmark("images_throughput")
    res = mod.main(["--quick", "--rounds", "1", "--min-time", "0", "--out-dir", str(tmp_path)])
    on_disk = json.loads((tmp_path / "images_throughput_cpu_quick.json").read_text())
    assert on_disk == json.loads(json.dumps(res))  # what main returns is what it wrote
    assert not list(tmp_path.glob(".images_throughput_*"))  # no temp file left behind
    assert on_disk["clock"] == "cpu" and on_disk["threads"] == 1
    assert set(on_disk["images_per_s"]) == {"train_ndm", "train_ddpm", "sample_ndm", "sample_ddpm"}
    for k, v in on_disk["images_per_s"].items():
        assert math.isfinite(v) and v > 0, (k, v)
        secs = on_disk["seconds_per_call"][k]
        batch = on_disk["sizes"]["batch" if k.startswith("train") else "sample_batch"]
        assert v == pytest.approx(batch / secs)
    # the NDM is the DDPM's predictor plus a transform network
    assert on_disk["params"]["ndm"] > on_disk["params"]["ddpm"]
    # Heun: 2 evaluations per step
    steps = on_disk["sizes"]["sample_steps"]
    assert on_disk["sample_nfe"] == {"ndm": 2 * steps, "ddpm": 2 * steps}
    assert len(on_disk["loadavg_before"]) == 3


def test_benchmark_models_are_the_trained_ones():
    """The benchmark builds its networks from ndmsolve train's own options."""
    from ndmsolve.commands.train import OPTIONS

    mod = load_benchmark("images_throughput")
    names = {o.name for o in OPTIONS}
    for model in ("ndm", "ddpm"):
        cfg = mod.model_config(model, mod.SIZES["full"])
        assert set(cfg) <= names, set(cfg) - names
    import ndmsolve as nd

    m = mod.build(mod.SIZES["quick"])
    assert isinstance(m["ddpm"].transform, nd.IdentityTransform)
    assert isinstance(m["ndm"].transform, nd.ResidualTransform)
    pred = [sum(p.numel() for p in m[k].predictor.parameters()) for k in ("ndm", "ddpm")]
    assert pred[0] == pred[1]


def test_images_throughput_rejects_bad_threads(tmp_path):
    mod = load_benchmark("images_throughput")
    with pytest.raises(SystemExit):
        mod.main(["--quick", "--threads", "0", "--out-dir", str(tmp_path)])
