"""Smoke tests of the benchmarks: each runs its ``--quick`` configuration, in-process, as
``python -m benchmarks.<name> --quick ...`` would (``benchmarks.<name>.main(argv)``), and
checks the JSON (and figure, and printed tables) it writes: structure and correctness
signals (atomic writes, exact budgets, pairing, agreement with reference loops), not
timings."""

import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--rounds", "1", "--min-time", "0"]


def _run(name: str, argv: list[str]):
    """``benchmarks.<name>.main(argv)``, torch's thread count restored afterwards."""
    mod = importlib.import_module(f"benchmarks.{name}")
    threads = torch.get_num_threads()
    try:
        return mod, mod.main(argv)
    finally:
        torch.set_num_threads(threads)


def _same_as_written(res, path: Path, tmp: Path, temp_glob: str) -> dict:
    on_disk = json.loads(path.read_text())
    assert on_disk == json.loads(json.dumps(res))  # what main returns is what it wrote
    assert not list(tmp.glob(temp_glob))  # no temp file left behind
    return on_disk


def _positive_ratios(ratios: dict, where):
    for name, r in ratios.items():
        assert isinstance(r, float) and math.isfinite(r) and r > 0, (where, name, r)


# --------------------------------------------------------------------------- checks
def check_drift_cost(tmp, _printed):
    _, res = _run("drift_cost", ["--quick", "--threads", "1", *FAST, "--out-dir", str(tmp)])
    on_disk = _same_as_written(res, tmp / "drift_cost_cpu.json", tmp, ".drift_cost_*")
    for key in ("device", "device_name", "torch", "threads", "cases"):
        assert key in on_disk, key
    assert on_disk["device_name"] and on_disk["torch"]
    assert set(on_disk["cases"]) == {"mlp", "conv"}
    for case, c in on_disk["cases"].items():
        assert set(c["ratios"]) == {"func", "autograd", "fd", "time_basis_analytic"}, case
        _positive_ratios(c["ratios"], case)
        for name, a in c["attempts"].items():
            assert "error" in a or (math.isfinite(a["ratio"]) and a["ratio"] > 0), (case, name, a)
        assert c["ms"]["base_residual"] > 0


def check_likelihood_cost(tmp, _printed):
    argv = ["--quick", "--threads", "1", *FAST, "--out-dir", str(tmp)]
    _, res = _run("likelihood_cost", argv)
    path = tmp / "likelihood_cost_cpu.json"
    on_disk = _same_as_written(res, path, tmp, ".likelihood_cost_*")
    for key in ("device", "device_name", "torch", "threads", "field_cost", "memory", "end_to_end"):
        assert key in on_disk, key
    assert on_disk["device_name"] and on_disk["torch"]
    assert set(on_disk["field_cost"]) == {"mlp", "conv"}
    assert "exact" in on_disk["field_cost"]["mlp"]["ratios"]
    assert "exact_est" in on_disk["field_cost"]["conv"]["ratios"]
    for case, c in on_disk["field_cost"].items():
        _positive_ratios(c["ratios"], case)
    mem = on_disk["memory"]["mib"]
    assert all(len(v) == 3 and all(x >= 0 for x in v) for v in mem.values())
    # the naive port keeps each step's graph: its peak grows with the number of steps
    assert mem["naive_attached"][-1] > mem["naive_attached"][0]
    for e in on_disk["end_to_end"].values():
        assert e["nfe"]["ours"] == e["nfe"]["scoresde"]
        assert e["max_abs_dlogp"] < 1e-3


def check_nonfinite_cost(tmp, _printed):
    import ndmsolve.train as nd_train

    mod, res = _run("nonfinite_cost", ["--quick", *FAST, "--out-dir", str(tmp)])
    on_disk = _same_as_written(res, tmp / "nonfinite_cost_cpu.json", tmp, ".nonfinite_cost_*")
    assert set(on_disk["cases"]) == {"mlp", "unet8"}
    for case, c in on_disk["cases"].items():
        assert set(c["ms_per_step"]) == set(mod.VARIANTS), case
        for key in ("ratio_clip", "ratio_noclip", "check_alone_ms"):
            assert math.isfinite(c[key]) and c[key] > 0, (case, key)
    assert nd_train.StepGuard.check is True  # the check it turns off is on again


def check_images_throughput(tmp, _printed):
    _, res = _run("images_throughput", ["--quick", *FAST, "--out-dir", str(tmp)])
    path = tmp / "images_throughput_cpu_quick.json"
    on_disk = _same_as_written(res, path, tmp, ".images_throughput_*")
    assert on_disk["clock"] == "cpu" and on_disk["threads"] == 1
    assert set(on_disk["images_per_s"]) == {"train_ndm", "train_ddpm", "sample_ndm", "sample_ddpm"}
    for k, v in on_disk["images_per_s"].items():
        assert math.isfinite(v) and v > 0, (k, v)
        secs = on_disk["seconds_per_call"][k]
        batch = on_disk["sizes"]["batch" if k.startswith("train") else "sample_batch"]
        assert v == pytest.approx(batch / secs)
    # the NDM is the DDPM's predictor plus a transform network
    assert on_disk["params"]["ndm"] > on_disk["params"]["ddpm"]
    steps = on_disk["sizes"]["sample_steps"]  # Heun: 2 evaluations per step
    assert on_disk["sample_nfe"] == {"ndm": 2 * steps, "ddpm": 2 * steps}
    assert len(on_disk["loadavg_before"]) == 3


def _check_train_step_cost(loss, tmp):
    argv = ["--quick", "--threads", "1", *FAST, "--loss", loss, "--out-dir", str(tmp)]
    mod, res = _run("train_step_cost", argv)
    path = tmp / f"train_step_cost_{loss}_cpu.json"
    on_disk = _same_as_written(res, path, tmp, ".train_step_cost_*")
    for key in ("device", "device_name", "torch", "threads", "loss", "clock", "cases"):
        assert key in on_disk, key
    assert on_disk["device_name"] and on_disk["loss"] == loss and on_disk["clock"] == "cpu"
    assert set(on_disk["cases"]) == {"mlp", "unet8", "unet32"}
    for case, c in on_disk["cases"].items():
        extra = {mod.JVP_VARIANT} if case == "mlp" else set()
        extra |= set(mod.PRIOR_VARIANTS) if loss == "continuous" else set()
        assert set(c["ratios"]) == set(mod.VARIANTS) - {"ddpm"} | extra, case
        _positive_ratios(c["ratios"], case)
        # half width means a smaller transform than the equal-width one
        assert c["params"]["general_half"] < c["params"]["general_equal"]
        assert c["params"]["time_basis_half"] < c["params"]["time_basis_equal"]
        assert c["params"]["ddpm"] == 0
        units = c["pass_units"]
        assert set(mod.PASSES) <= set(units) and units["predictor"] == 1.0
        assert all(math.isfinite(v) and v > 0 for v in units.values()), units


def check_train_step_cost_continuous(tmp, _printed):
    _check_train_step_cost("continuous", tmp)


def check_train_step_cost_discrete(tmp, _printed):
    _check_train_step_cost("discrete", tmp)


def check_prior_fraction_cost(tmp, _printed):
    argv = ["--quick", "--seeds", "2", "--cpu-seconds", "0.05", "--out-dir", str(tmp)]
    _, res = _run("prior_fraction_cost", argv)
    path = tmp / "prior_fraction_cost_cpu.json"
    on_disk = _same_as_written(res, path, tmp, ".prior_fraction_cost_*")
    # the subset prior adds gradient variance, never removes it
    for case, v in on_disk["variance"].items():
        assert v["grad_var_added"] > 0 and math.isfinite(v["grad_trvar_exact"]), case
    e = on_disk["elbo_equal_cpu"]
    assert len(e["exact"]["values"]) == len(e["subset"]["values"]) == 2
    assert all(n >= 1 for n in e["exact"]["steps"] + e["subset"]["steps"])


def check_default_grid(tmp, _printed):
    out = tmp / "dg.json"
    _run("default_grid", ["--quick", "--schedules", "ddpm", "--nfe", "10", "--out", str(out)])
    res = json.loads(out.read_text())["schedules"]["ddpm"]
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


def check_fewstep(tmp, _printed):
    out = tmp / "res.json"
    models = ["--models", "mixture,mixture-affine", "--n", "200"]
    _run("fewstep", ["--quick", *models, "--timing", "--rounds", "1", "--out", str(out)])
    data = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 1000
    assert not list(tmp.glob(".fewstep.*"))  # atomic writes left no temp file
    assert data["meta"]["device_name"] and data["meta"]["torch"]
    assert data["config"]["nfe"] == [5, 10]
    for name in ("mixture", "mixture-affine"):
        fl = data["floors"][name]
        assert 0 < fl["mean"] < 1 and fl["se"] >= 0
        assert data["reference_error"][name] < 1e-3  # RK4 at 200 vs 100 steps (quick)
        for nfe in ("5", "10"):
            best = data["confirmed"][name][nfe]["best"]["ndmsolve"]
            assert math.isfinite(best["sw1"]) and best["sw1"] > 0 and len(best["sw1_seeds"]) == 2
    for r in data["rows"]:
        assert r["nfe"] in (5, 10)  # every budget is met exactly (counted)
        assert len(r["sw1_seeds"]) == 2  # selection seeds: sw1 only
        if r["library"] == "k-diffusion":
            assert r["model"] == "mixture"  # only the classical diffusion
    timing = data["timing"]["models"]["mixture-affine"]
    assert timing["euler"]["ratio_to_euler"] == 1.0 and timing["ddim"]["ratio_to_ddim"] == 1.0
    assert timing["heun"]["nfe"] == 2 * timing["euler"]["nfe"]
    _fewstep_pairing(data)


def _fewstep_pairing(data):
    # Every configuration saw the same z1, data and directions per seed: the reported
    # difference is the mean of per-seed differences, and its s.e. theirs.
    for name in ("mixture", "mixture-affine"):
        cell = data["confirmed"][name]["10"]
        a, b = cell["best"]["ndmsolve"], cell["best"]["ndmsolve:euler"]
        d = [x - y for x, y in zip(a["sw1_seeds"], b["sw1_seeds"], strict=True)]
        got = cell["paired"]["ndmsolve - ndmsolve:euler"]["sw1"]
        assert got["mean"] == pytest.approx(sum(d) / 2, abs=1e-12)
        assert got["se"] == pytest.approx(abs(d[0] - d[1]) / 2, abs=1e-12)
    rows = [r for r in data["rows"] if r["model"] == "mixture" and r["nfe"] == 10]
    eu = min((r for r in rows if r["method"] == "euler"), key=lambda r: r["sw1"])
    assert eu["d_sw1_vs_euler"] == 0.0
    # the confirmed best is the lowest mean sw1 of its library on the selection seeds
    for nfe in (5, 10):
        ours = [r for r in data["rows"] if r["model"] == "mixture" and r["nfe"] == nfe]
        ours = [r for r in ours if r["library"] == "ndmsolve"]
        best = data["confirmed"]["mixture"][str(nfe)]["best"]["ndmsolve"]
        assert best["name"] == min(ours, key=lambda r: r["sw1"])["name"]


@pytest.mark.skipif(
    importlib.util.find_spec("k_diffusion") is None, reason="needs k-diffusion (optional)"
)
def test_fewstep_same_numbers_as_k_diffusion(tmp_path):
    out = tmp_path / "res.json"
    _run("fewstep", ["--quick", "--models", "mixture", "--n", "200", "--out", str(out)])
    _fewstep_same_numbers_as_k_diffusion(json.loads(out.read_text()))


def _fewstep_same_numbers_as_k_diffusion(data):
    # F = identity: our dpmpp_2m / ddim / dpmpp_3m on the Karras grid (no lower-order final
    # steps), ending with x̂ at t = 0, are k-diffusion's dpmpp_2m / euler / dpmpp_3m on its
    # Karras σ grid (ρ = 7) ending at σ = 0.
    assert data["meta"]["k_diffusion"] is not None
    rows = [r for r in data["rows"] if r["model"] == "mixture"]
    s_end = min(r["s_min"] for r in rows if r["s_min"] is not None)

    def find(lib, m, nfe, **kw):
        (hit,) = [
            r
            for r in rows
            if (r["library"], r["method"], r["grid"], r["final"], r["nfe"])
            == (lib, m, "karras", "x_hat", nfe)
            and r["s_min"] == s_end
            and all(r[k] == v for k, v in kw.items())
        ]
        return hit

    for ours, theirs in (("dpmpp_2m", "dpmpp_2m"), ("ddim", "euler"), ("dpmpp_3m", "dpmpp_3m")):
        for nfe in (5, 10):
            kw = {} if ours == "ddim" else {"lower_order_final": False}
            a = find("ndmsolve", ours, nfe, **kw)
            b = find("k-diffusion", theirs, nfe, rho=7.0)
            # k-diffusion builds its σ grid in float32 (torch.linspace): agreement to ~1e-7
            assert a["sw1_seeds"] == pytest.approx(b["sw1_seeds"], rel=1e-5), (ours, nfe)


def check_fewstep_path(tmp, _printed):
    # needs ndmsolve.commands.demo.demo_models (the commands branch of issue 19)
    _run("fewstep_path", ["--quick", "--out", str(tmp)])
    data = json.loads((tmp / "fewstep_path_quick.json").read_text())
    assert set(data["models"]) == {"demo-NDM", "demo-DDPM"}
    for res in data["models"].values():
        assert len(res["profile"]) == 10 and {"t", "F_minus_x"} <= set(res["profile"][0])
        assert [len(res["local"][k]) for k in ("10", "20")] == [10, 20]
        ends = [min(res["rk4"][s].items())[1]["mean"] for s in ("10", "20", "40")]
        assert ends[0] > ends[1] > ends[2], ends  # errors at t = 0 fall with more steps
    # the x- and F-combinations agree for F = identity; the first step is DDIM's
    ddpm = data["models"]["demo-DDPM"]
    assert all(r["F_minus_x"] == 0 for r in ddpm["profile"])
    for rows in ddpm["local"].values():
        for r in rows:
            assert abs(r["dpmpp_2m_x"] - r["dpmpp_2m_F"]) <= 1e-12 * (1 + r["dpmpp_2m_x"])
    for res in data["models"].values():
        first = res["local"]["10"][0]
        assert first["dpmpp_2m_x"] == first["ddim"] == first["dpmpp_2m_F"]
        assert first["max_D_minus_x_hat"] == 0


def check_solver_overhead(tmp, printed):
    pytest.importorskip("torchdiffeq")
    pytest.importorskip("torchsde")
    out = tmp / "res.json"
    _run("solver_overhead", ["--quick", "--fields", "mlp-small", "--out", str(out)])
    text = printed()
    assert "[1] Euler" in text and "[3] dopri5" in text
    data = json.loads(out.read_text())
    assert not list(tmp.glob(".solver_overhead.*"))  # atomic write left no temp file
    for key in ("device", "torch", "torchdiffeq", "torchsde"):
        assert data["meta"][key]
    assert data["cuda_graph"]["status"].startswith("n/a")  # --device cpu
    steps = data["config"]["steps"]
    e = data["euler"]["mlp-small"]
    assert e["ours_nfe"] == steps and e["torchdiffeq_nfe"] == steps
    assert e["max_abs_diff_ours_vs_raw"] < 1e-5  # the same arithmetic as the raw loop
    for k in ("ours_s", "raw_s", "torchdiffeq_s", "ours_over_raw", "torchdiffeq_over_raw"):
        assert math.isfinite(e[k]) and e[k] > 0
    assert isinstance(e["target_met"], bool)
    # Load-independent overhead: dispatched ATen ops of our Euler solve vs the raw loop (one
    # fused add and one finiteness sum per step, plus a bounded setup).
    assert e["aten_ops_ours"] - e["aten_ops_raw"] <= steps + 64
    em = data["euler_maruyama"]["mlp-small"]
    assert em["torchsde_nfe"] == steps
    assert em["ours_nfe"] == steps and isinstance(em["target_met"], bool)
    assert em["aten_ops_ours"] - em["aten_ops_raw"] <= steps + 64
    for name in ("mlp-t", "ndm-pfode"):
        for row in data["dopri5"][name]["tolerances"].values():
            assert row["ours_nfe"] > 0 and row["torchdiffeq_nfe"] > 0
            # both solvers must actually be accurate to around the tolerance
            assert row["ours_rms_err"] < 100 * row["rtol"]
            assert row["torchdiffeq_rms_err"] < 100 * row["rtol"]
            assert isinstance(row["target_met"], bool)
    assert set(data["targets_met"]) >= {
        "euler_ours_over_raw<=1.1",
        "em_torchsde_over_ours>=5",
        "dopri5_nfe_and_error<=torchdiffeq",
        "cuda_graph_raw_over_graph>=3",
    }


def check_work_precision(tmp, _printed):
    # needs ndmsolve.likelihood.AugmentedField/Divergence (the liktrain branch of issue 19)
    pytest.importorskip("torchdiffeq")
    _run("work_precision", ["--quick", "--seeds", "0", "--out-dir", str(tmp)])
    data = json.loads((tmp / "work_precision_cpu_quick.json").read_text())
    assert (tmp / "work_precision_cpu_quick.png").stat().st_size > 1000
    assert not list(tmp.glob(".work_precision*"))  # atomic writes left no temp file
    assert data["meta"]["device_name"] and data["meta"]["likelihood_defaults"]["method"]
    assert set(data["wp"]) == {"vdp", "lv", "linear", "ndm"}
    for name, prob in data["wp"].items():
        want = {"default", "tsit5/rms", "tsit5/sample_max", "torchdiffeq:dopri5"}
        assert want <= set(prob["runs"])
        for label, rows in prob["runs"].items():
            for r in rows:
                assert r["nfe"] > 0 and math.isfinite(r["wall_s"]) and r["wall_s"] > 0
                assert 0 <= r["mean"] <= r["worst"] * (1 + 1e-12)
            # tighter tolerance, smaller worst error and more work
            assert rows[-1]["worst"] < rows[0]["worst"], (name, label)
            assert rows[-1]["nfe"] > rows[0]["nfe"], (name, label)
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
    assert max(data["table"]["ours_1e-10_vs_dop853_max_abs"]) < 1e-6  # the references agree


CHECKS = {name[len("check_") :]: fn for name, fn in globals().items() if name.startswith("check_")}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_quick_run(name, tmp_path, capsys):
    CHECKS[name](tmp_path, lambda: capsys.readouterr().out)


# --------------------------------------------------------------------------- pieces
def test_runs_as_a_module_from_the_repository_root():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "benchmarks.memory_batching", "--help"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert "usage:" in res.stdout and "--quick" in res.stdout


def test_fewstep_extrapolate_repeats_only_our_multistep_configs():
    from benchmarks import fewstep as mod

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


def test_fewstep_endpoint_error_against_reference():
    # err is the distance to an RK4 solve of the PF-ODE from the same z1: a fine RK4 run
    # of ours has (near) zero error, a 5-step Euler a large one.
    from benchmarks import fewstep as mod

    model = mod.mixture_models()[0]["mixture-affine"]
    z1 = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = mod.reference(model, z1, [0.0, 0.3], 200)
    fine = mod.our_sample(model, z1, "rk4", "logsnr", "z", 800)[0]
    assert (fine - ref[0.0][0]).norm(dim=1).max() < 1e-5
    coarse = mod.our_sample(model, z1, "euler", "logsnr", "z", 5)[0]
    assert (coarse - ref[0.0][0]).norm(dim=1).mean() > 1e-2
    t = torch.full((50,), 0.3, dtype=torch.float64)
    z03 = mod.our_sample(model, z1, "rk4", "logsnr", "z", 400, t_min=0.3)[0]
    assert torch.allclose(ref[0.3][1], model.x_hat(z03, t), atol=1e-6)


def test_fewstep_select_is_best_rows_per_library_and_method():
    from benchmarks import fewstep as mod

    def cfg(lib, m, g):
        return (lib, m, g, "z", None, None, None, None)

    a, b = cfg("ndmsolve", "euler", "logsnr"), cfg("ndmsolve", "euler", "karras")
    c = cfg("ndmsolve", "heun", "logsnr")
    k = cfg("k-diffusion", "euler", "karras")
    res = {
        (a, 10): {"sw1": [0.3, 0.5]},
        (b, 10): {"sw1": [0.2, 0.4]},
        (c, 10): {"sw1": [0.25, 0.45]},
        (k, 10): {"sw1": [0.1, math.nan]},  # not finite: mean inf, its library's only one
        (a, 5): {"sw1": [0.01, 0.01]},  # another budget
    }
    got = mod.select(res, 10)
    assert got == {
        "ndmsolve": b,
        "ndmsolve:euler": b,
        "ndmsolve:heun": c,
        "k-diffusion": k,
        "k-diffusion:euler": k,
    }


def test_images_throughput_models_are_the_trained_ones():
    """The benchmark builds its networks from ndmsolve train's own options."""
    import ndmsolve as nd
    from benchmarks import images_throughput as mod
    from ndmsolve.commands.train import OPTIONS

    names = {o.name for o in OPTIONS}
    for model in ("ndm", "ddpm"):
        cfg = mod.model_config(model, mod.SIZES["full"])
        assert set(cfg) <= names, set(cfg) - names
    m = mod.build(mod.SIZES["quick"])
    assert isinstance(m["ddpm"].transform, nd.IdentityTransform)
    assert isinstance(m["ndm"].transform, nd.ResidualTransform)
    pred = [sum(p.numel() for p in m[k].predictor.parameters()) for k in ("ndm", "ddpm")]
    assert pred[0] == pred[1]


@pytest.mark.parametrize(
    "name, argv, flag",
    [
        ("images_throughput", ["--quick", "--threads", "0"], "--threads"),
        ("train_step_cost", ["--quick", "--cases", "mlp,resnet"], "--cases"),
        ("prior_fraction_cost", ["--quick", "--fraction", "1.5"], "--fraction"),
        ("prior_fraction_cost", ["--quick", "--seeds", "1"], "--seeds"),
    ],
)
def test_bad_options_are_refused_naming_the_flag(name, argv, flag, tmp_path, capsys):
    mod = importlib.import_module(f"benchmarks.{name}")
    with pytest.raises(SystemExit):
        mod.main([*argv, "--out-dir", str(tmp_path)])
    assert flag in capsys.readouterr().err
