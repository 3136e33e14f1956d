"""Smoke test of benchmarks/fewstep_path.py (--quick, briefly trained demo models) and of
fewstep.py's ``--extrapolate`` configurations: the JSON's structure and its correctness
signals (RK4 self-convergence, the x- and F-combinations equal for F = identity)."""

import json

import pytest
import torch
from helpers import load_benchmark


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    mod = load_benchmark("fewstep_path")
    out = tmp_path_factory.mktemp("fewstep_path")
    threads = torch.get_num_threads()
    try:
        mod.main(["--quick", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return json.loads((out / "fewstep_path_quick.json").read_text())


def test_structure_and_rk4_self_convergence(data):
    assert set(data["models"]) == {"demo-NDM", "demo-DDPM"}
    for res in data["models"].values():
        assert len(res["profile"]) == 10 and {"t", "F_minus_x"} <= set(res["profile"][0])
        assert [len(res["local"][k]) for k in ("10", "20")] == [10, 20]
        ends = [min(res["rk4"][s].items())[1]["mean"] for s in ("10", "20", "40")]
        assert ends[0] > ends[1] > ends[2], ends  # errors at t = 0 fall with more steps


def test_combinations_agree_for_identity_F_and_first_step_is_ddim(data):
    ddpm = data["models"]["demo-DDPM"]
    assert all(r["F_minus_x"] == 0 for r in ddpm["profile"])
    for rows in ddpm["local"].values():
        for r in rows:
            assert abs(r["dpmpp_2m_x"] - r["dpmpp_2m_F"]) <= 1e-12 * (1 + r["dpmpp_2m_x"])
    for res in data["models"].values():
        first = res["local"]["10"][0]
        assert first["dpmpp_2m_x"] == first["ddim"] == first["dpmpp_2m_F"]
        assert first["max_D_minus_x_hat"] == 0


def test_fewstep_extrapolate_repeats_only_our_multistep_configs():
    mod = load_benchmark("fewstep")
    one = mod.configs(True, [0.03], ("logsnr",), True)
    two = mod.configs(True, [0.03], ("logsnr",), True, ("x", "F"))
    ms = [c for c in one if c[0] == "ndmsolve" and c[1] in mod.MULTISTEP]
    assert len(two) == len(one) + len(ms) and len(ms) > 0
    names = [mod.config_name(c) for c in two]
    assert len(set(names)) == len(names)
    assert sum(n.endswith("/extrapolate-F") for n in names) == len(ms)
    assert all(c[7] is None for c in two if c[1] not in mod.MULTISTEP or c[0] != "ndmsolve")
    with pytest.raises(SystemExit, match="--extrapolate"):
        mod.main(["--quick", "--extrapolate", "y"])
