"""Smoke test of benchmarks/default_grid.py (--quick, one schedule): the JSON's structure,
the per-(method, NFE) best rows, and the default rows' ratio to them."""

import json

import torch
from helpers import load_benchmark


def test_default_grid_quick(tmp_path):
    mod = load_benchmark("default_grid")
    out = tmp_path / "dg.json"
    threads = torch.get_num_threads()
    try:
        mod.main(["--quick", "--schedules", "ddpm", "--nfe", "10", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    data = json.loads(out.read_text())
    res = data["schedules"]["ddpm"]
    assert res["floor"]["mean"] > 0 and res["floor"]["se"] > 0
    rows = res["rows"]
    methods = {r["method"] for r in rows}
    assert {"euler", "ddim", "dpmpp_3m", "unipc_2m"} <= methods
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        best = [r for r in mine if r.get("best")]
        assert len(best) == 1 and best[0]["ratio_to_best"] == 1.0
        assert all(r["ratio_to_best"] >= 1.0 for r in mine if r["rule"] != "DEFAULT")
        (default,) = [r for r in mine if r["rule"] == "DEFAULT"]
        assert default["nfe"] == 10 and len(default["sw1"]) == 2
    # the default rows equal the explicit rule they stand for (same z_1, same draws)
    dflt = {r["method"]: r for r in rows if r["rule"] == "DEFAULT"}
    rule = {(r["method"], r["rule"]): r for r in rows}
    assert dflt["unipc_2m"]["sw1"]["mean"] == rule[("unipc_2m", "logsnr/z/lof=True")]["sw1"]["mean"]
    assert dflt["ddim"]["sw1"]["mean"] == rule[("ddim", "uniform/z")]["sw1"]["mean"]
