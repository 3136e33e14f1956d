"""Smoke test of benchmarks/fewstep.py: its --quick mode on the closed-form mixture (small
n, two budgets, two seeds) in-process; checks the JSON and figure it writes and the
correctness signals in it, not timings."""

import json
import math

import pytest
import torch
from helpers import load_benchmark


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    mod = load_benchmark("fewstep")
    out = tmp_path_factory.mktemp("fewstep") / "res.json"
    threads = torch.get_num_threads()
    try:
        mod.main(["--quick", "--models", "mixture,mixture-affine", "--n", "200", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return mod, out, json.loads(out.read_text())


def test_json_and_png(run):
    _, out, data = run
    assert out.with_suffix(".png").stat().st_size > 1000
    assert not list(out.parent.glob(".fewstep.*"))  # atomic writes left no temp file
    assert data["meta"]["device_name"] and data["meta"]["torch"]
    assert data["config"]["nfe"] == [5, 10]
    for name in ("mixture", "mixture-affine"):
        fl = data["floors"][name]
        assert 0 < fl["mean"] < 1 and fl["se"] >= 0
        for nfe in ("5", "10"):
            best = data["best"][name][nfe]["ndmsolve"]
            assert math.isfinite(best["sw1"]) and best["sw1"] > 0
    for r in data["rows"]:
        assert r["nfe"] in (5, 10)  # every budget is met exactly (counted)
        assert len(r["sw1_seeds"]) == 2 and r["wall_s"] > 0
        if r["library"] == "k-diffusion":
            assert r["model"] == "mixture"  # only the classical diffusion


def test_same_method_same_numbers_as_k_diffusion(run):
    # F = identity: our dpmpp_2m / ddim on the Karras grid, ending with x̂ at t = 0, are
    # k-diffusion's dpmpp_2m / euler on its Karras σ grid ending at σ = 0.
    _, _, data = run
    if data["meta"]["k_diffusion"] is None:
        pytest.skip(f"k-diffusion unavailable: {data['meta']['k_diffusion_status']}")
    rows = {
        (r["library"], r["method"], r["grid"], r["final"], r["nfe"]): r
        for r in data["rows"]
        if r["model"] == "mixture"
    }
    for ours, theirs in (("dpmpp_2m", "dpmpp_2m"), ("ddim", "euler"), ("dpmpp_3m", "dpmpp_3m")):
        for nfe in (5, 10):
            a = rows[("ndmsolve", ours, "karras", "x_hat", nfe)]["sw1_seeds"]
            b = rows[("k-diffusion", theirs, "karras", "x_hat", nfe)]["sw1_seeds"]
            # k-diffusion builds its σ grid in float32 (torch.linspace): agreement to ~1e-7
            assert a == pytest.approx(b, rel=1e-5), (ours, nfe)


def test_shared_time_predictor_is_exact(run):
    mod, _, _ = run
    models, _ = mod.mixture_models()
    model = models["mixture-affine"]
    z = 3 * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for tv in (0.0, 0.4, 1.0):
        t = torch.full((64,), tv, dtype=torch.float64)
        want = model.predictor.exact(z, t)
        assert torch.allclose(model.predictor(z, t), want, atol=1e-12, rtol=0)
