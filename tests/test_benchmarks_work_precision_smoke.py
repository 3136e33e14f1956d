"""Smoke test of benchmarks/work_precision.py: its --quick mode in-process (tiny batches)
and the JSON and PNG it writes. Structure and correctness signals, not timings."""

import json
import math

import pytest
import torch

pytest.importorskip("torchdiffeq")

from helpers import load_benchmark


def test_work_precision_quick(tmp_path):
    mod = load_benchmark("work_precision")
    threads = torch.get_num_threads()
    try:
        mod.main(["--quick", "--seeds", "0", "--out-dir", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    data = json.loads((tmp_path / "work_precision_cpu_quick.json").read_text())
    assert (tmp_path / "work_precision_cpu_quick.png").stat().st_size > 1000
    assert not list(tmp_path.glob(".work_precision*"))  # atomic writes left no temp file
    assert data["meta"]["device_name"] and data["meta"]["likelihood_defaults"]["method"]

    assert set(data["wp"]) == {"vdp", "lv", "linear", "ndm"}
    for name, prob in data["wp"].items():
        assert {"default", "tsit5/rms", "tsit5/sample_max", "torchdiffeq:dopri5"} <= set(
            prob["runs"]
        )
        for label, rows in prob["runs"].items():
            for r in rows:
                assert r["nfe"] > 0 and math.isfinite(r["wall_s"]) and r["wall_s"] > 0
                assert 0 <= r["mean"] <= r["worst"] * (1 + 1e-12)
            # tighter tolerance, smaller worst error and more work
            assert rows[-1]["worst"] < rows[0]["worst"] and rows[-1]["nfe"] > rows[0]["nfe"], (
                name,
                label,
            )
        head = prob["worst_ratio_torchdiffeq_dopri5_over_ours"]["default"]
        assert len(head["nfe"]) == len(head["ratio"])

    table = data["table"]["summary"]
    assert set(table) == {
        "dopri5, rms (old default)",
        "tsit5, rms",
        "tsit5, sample_max",
        "new default",
    }
    for row in table.values():
        for s in row.values():
            assert s["nfe"]["mean"] > 0 and s["worst"]["mean"] >= s["mean"]["mean"]
    assert max(data["table"]["ours_1e-10_vs_dop853_max_abs"]) < 1e-6  # the two references agree
