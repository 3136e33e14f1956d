"""Smoke test of benchmarks/solver_overhead.py: runs its --quick mode in-process (tiny
sizes, ~10 s on a busy 2-core CPU) and checks the JSON it writes. It checks structure
and correctness signals (same result as the raw loop, honest NFE), not timings."""

import json
import math

import pytest
import torch

pytest.importorskip("torchdiffeq")
pytest.importorskip("torchsde")

from helpers import load_benchmark


def test_solver_overhead_quick(tmp_path, capsys):
    mod = load_benchmark("solver_overhead")
    out = tmp_path / "res.json"
    threads = torch.get_num_threads()
    try:
        mod.main(["--quick", "--fields", "mlp-small", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "[1] Euler" in printed and "[3] dopri5" in printed

    data = json.loads(out.read_text())
    assert not list(tmp_path.glob(".solver_overhead.*"))  # atomic write left no temp file
    meta = data["meta"]
    for key in ("device", "torch", "torchdiffeq", "torchsde"):
        assert meta[key]
    assert data["cuda_graph"]["status"].startswith("n/a")  # --device cpu

    steps = data["config"]["steps"]
    e = data["euler"]["mlp-small"]
    assert e["ours_nfe"] == steps and e["torchdiffeq_nfe"] == steps
    assert e["max_abs_diff_ours_vs_raw"] < 1e-5  # the same arithmetic as the raw loop
    for k in ("ours_s", "raw_s", "torchdiffeq_s", "ours_over_raw", "torchdiffeq_over_raw"):
        assert math.isfinite(e[k]) and e[k] > 0
    assert isinstance(e["target_met"], bool)
    # Load-independent overhead check: dispatched ATen ops of our Euler solve vs the raw
    # loop (ours fuses y + h*k into one add and adds one finiteness sum per step, plus a
    # bounded setup); a regression that adds per-step work shows up here, not in noisy timings.
    assert e["aten_ops_ours"] - e["aten_ops_raw"] <= steps + 64

    em = data["euler_maruyama"]["mlp-small"]
    assert em["torchsde_nfe"] == steps + 1  # + torchsde's shape check of f(t0, y0)
    if "ours_s" in em:  # euler_maruyama exists in ndmsolve.solvers
        assert em["ours_nfe"] == steps and isinstance(em["target_met"], bool)
        assert em["aten_ops_ours"] - em["aten_ops_raw"] <= steps + 64

    for name in ("mlp-t", "ndm-pfode"):
        for row in data["dopri5"][name]["tolerances"].values():
            assert row["ours_nfe"] > 0 and row["torchdiffeq_nfe"] > 0
            # Both solvers must actually be accurate to around the tolerance.
            assert row["ours_rms_err"] < 100 * row["rtol"]
            assert row["torchdiffeq_rms_err"] < 100 * row["rtol"]
            assert isinstance(row["target_met"], bool)
    assert set(data["targets_met"]) >= {
        "euler_ours_over_raw<=1.1",
        "em_torchsde_over_ours>=5",
        "dopri5_nfe_and_error<=torchdiffeq",
        "cuda_graph_raw_over_graph>=3",
    }
