"""The NFE-vs-quality sweep on closed-form models: quality improves with NFE for every
registered method and reaches the metric's floor, the JSON has the documented columns,
the best-method logic is right, and bad grids, methods and metrics fail clearly."""

import json
import math

import pytest
import torch
from helpers import one_thread_fixture
from torch import nn

import ndmsolve as nd
from ndmsolve.studies import sweep
from ndmsolve.studies.nfe_sweep import (
    COLUMNS,
    _ClosedFormTruth,
    best_methods,
    closed_form_models,
    default_methods,
    method_kind,
)

_one_thread = one_thread_fixture()

# cheap and expensive end of each kind's grid (adaptive: tol 1 (ODE), 10 (SDE) is a few steps)
ENDS = {
    "ode_fixed": [1, 8],
    "sde_fixed": [2, 16],
    "discrete": [2, 16],
    "ode_adaptive": [1.0, 1e-3],
    "sde_adaptive": [10.0, 0.3],
}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    # a multistep sampler's cheap end is its history length (nd.solvers.METHODS[m].min_steps)
    grid = {
        m: [
            max(v, nd.solvers.METHODS[m].min_steps) if method_kind(m) == "discrete" else v
            for v in ENDS[method_kind(m)]
        ]
        for m in default_methods()
    }
    res = sweep(
        closed_form_models(),
        grid,
        seeds=3,
        n=128,
        metrics=("energy_distance", "sliced_wasserstein", "nll"),
        out=out,
    )
    return res, out


def test_quality_improves_with_nfe_for_every_method(result):
    res, _ = result
    methods = default_methods()
    assert {"heun", "dopri5", "euler_maruyama", "ddim", "ancestral"} <= set(methods)
    for model in ("NDM", "DDPM"):
        fl = res.floors[model]["energy_distance"]
        for m in methods:
            rows = sorted(
                (r for r in res.rows if r["model"] == model and r["method"] == m),
                key=lambda r: r["nfe"],
            )
            assert len(rows) == 2 and not any(r["error"] for r in rows), rows
            cheap, dear = rows
            assert dear["nfe"] > cheap["nfe"], (model, m, rows)
            # the standard error of the difference
            gap = math.hypot(cheap["energy_distance_se"], dear["energy_distance_se"])
            assert dear["energy_distance"] < cheap["energy_distance"] - gap, (model, m, rows)
            # SW's floor at n = 128 is ~0.3: improvements are there but within its noise
            assert dear["sliced_wasserstein"] < cheap["sliced_wasserstein"], (model, m, rows)
            # converged samplers are scored against the exact truth: they reach the floor
            bound = fl["mean"] + 4 * (fl["se"] + dear["energy_distance_se"])
            assert dear["energy_distance"] < bound, (model, m, dear, fl)


def test_nll_floor_is_the_truths_entropy(result):
    res, _ = result
    # 8 well-separated N(m_k, 0.15² I): H = log 8 + log(2πe 0.15²) (σ_0 blur negligible)
    H = math.log(8) + 1 + math.log(2 * math.pi) + 2 * math.log(0.15)
    fl = res.floors["NDM"]["nll"]
    assert abs(fl["mean"] - H) < 4 * fl["se"] + 0.02, (fl, H)


def test_json_has_documented_columns(result):
    res, out = result
    data = json.loads((out / "sweep.json").read_text())
    metric_cols = [
        c for m in ("energy_distance", "sliced_wasserstein", "nll") for c in (m, m + "_se")
    ]
    assert data["columns"] == list(COLUMNS) + metric_cols
    assert len(data["rows"]) == 2 * 2 * len(default_methods())
    for row in data["rows"]:
        assert set(row) == set(data["columns"]), row
        assert (row["steps"] is None) != (row["tol"] is None)
        assert (
            row["nfe"] > 0 and row["wall_s"] > 0 and row["seeds"] == [0, 1, 2] and row["n"] == 128
        )
    for model in ("NDM", "DDPM"):
        assert set(data["floors"][model]) == {"energy_distance", "sliced_wasserstein", "nll"}
        assert len(data["best"][model]) == 3  # default: three multiples of the floor
    png = out / "sweep.png"
    assert png.is_file() and png.stat().st_size > 10_000
    assert "best NDM: energy_distance" in res.summary()


def test_non_closed_form_model_with_reference_matches_closed_form():
    models = closed_form_models()

    class Wrapped(nn.Module):  # hides the ExactPredictor: scored against a reference instead
        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, z, t):
            return self.p(z, t)

    ndm = models["NDM"]
    hidden = type(ndm)(Wrapped(ndm.predictor), ndm.transform, ndm.schedule, data_shape=(2,))
    kw = dict(seeds=2, n=128, metrics=("energy_distance",))
    a = sweep({"NDM": ndm}, {"heun": [4]}, **kw)
    b = sweep({"NDM": hidden}, {"heun": [4]}, reference=_ClosedFormTruth(ndm, 0.0), **kw)
    assert a.rows[0]["energy_distance"] == pytest.approx(b.rows[0]["energy_distance"], rel=1e-6)
    assert not b.config["closed_form"]["NDM"] and a.config["closed_form"]["NDM"]
    with pytest.raises(ValueError, match="not closed-form: pass reference"):
        sweep({"NDM": hidden}, {"heun": [4]}, **kw)
    with pytest.raises(ValueError, match="'nll' needs the exact density"):
        sweep(
            {"NDM": hidden},
            {"heun": [4]},
            reference=_ClosedFormTruth(ndm, 0.0),
            seeds=2,
            n=16,
            metrics=("nll",),
        )


def test_best_methods_picks_fewest_nfe():
    def row(method, nfe, v):
        return dict(
            model="M",
            method=method,
            steps=nfe,
            tol=None,
            nfe=float(nfe),
            error=None,
            q=v,
            q_se=0.01,
        )

    rows = [
        row("a", 4, 1.0),
        row("a", 16, 0.2),
        row("a", 64, 0.1),
        row("b", 8, 0.5),
        row("b", 32, 0.15),
        row("b", 128, 0.12),
    ]
    best = best_methods(rows, "q", [0.6, 0.18, 0.11, 0.01])["M"]
    assert [b["method"] for b in best] == ["b", "b", "a", None]
    assert [b["nfe"] for b in best] == [8.0, 32.0, 64.0, None]
    assert best[1]["per_method"] == {"a": 64.0, "b": 32.0}
    assert best[3]["per_method"] == {"a": None, "b": None}


def test_bad_grids_methods_and_metrics_fail_clearly():
    models = closed_form_models()
    kw = dict(seeds=2, n=16)
    with pytest.raises(ValueError, match="methods: unknown method 'heunn'"):
        sweep(models, ["heun", "heunn"], **kw)
    with pytest.raises(ValueError, match="at least one method"):
        sweep(models, [], **kw)
    with pytest.raises(ValueError, match="step counts.*'heun'.*must not be empty"):
        sweep(models, ["heun"], steps=[], **kw)
    with pytest.raises(ValueError, match="tolerances.*'dopri5'.*must not be empty"):
        sweep(models, {"dopri5": []}, **kw)
    with pytest.raises(ValueError, match="'dpmpp_3m' must be >= its history length 3"):
        sweep(models, {"dpmpp_3m": [2, 8]}, **kw)
    with pytest.raises(ValueError, match="positive ints"):
        sweep(models, ["heun"], steps=[4, 0], **kw)
    with pytest.raises(ValueError, match="positive finite"):
        sweep(models, ["dopri5"], tols=[-1e-3], **kw)
    with pytest.raises(ValueError, match="unknown metric 'fid'"):
        sweep(models, ["heun"], steps=[2], metrics=("fid",), **kw)
    with pytest.raises(ValueError, match="metrics must name at least one"):
        sweep(models, ["heun"], steps=[2], metrics=(), **kw)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        sweep(models, ["heun"], steps=[2], seeds=1, n=16)
    with pytest.raises(ValueError, match="non-empty mapping"):
        sweep({}, ["heun"], steps=[2], **kw)
    with pytest.raises(TypeError, match="must be an NDM or a checkpoint path"):
        sweep({"x": object()}, ["heun"], steps=[2], **kw)
    with pytest.raises(ValueError, match="do not pass a reference"):
        sweep(models, ["heun"], steps=[2], reference=lambda n, g: torch.zeros(n, 2), **kw)


def test_solver_failure_is_a_row_not_a_crash():
    res = sweep(
        {"DDPM": closed_form_models()["DDPM"]},
        {"dopri5": [1e-6]},
        seeds=2,
        n=16,
        max_steps=3,
        metrics=("energy_distance",),
    )
    (row,) = res.rows
    assert row["error"].startswith("StepLimitError") and math.isnan(row["energy_distance"])
    assert res.best["DDPM"][0]["method"] is None
