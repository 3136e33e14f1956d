"""Sampler recipes (``ndmsolve.studies.recipes``): parsing, checks, and the sweep running them."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ndmsolve as nd
from ndmsolve.studies.nfe_sweep import closed_form_models, sweep
from ndmsolve.studies.recipes import Recipe, as_recipe, load_recipes, parse_recipe, spec_of


def test_parse_recipe():
    r = parse_recipe("unipc_2m:grid_kind=logsnr,sigma_min=0.12,denoise=true")
    assert (
        r.method == "unipc_2m" and r.name == "unipc_2m:grid_kind=logsnr,sigma_min=0.12,denoise=true"
    )
    assert r.options == {"grid_kind": "logsnr", "sigma_min": 0.12, "denoise": True}
    assert r.ends_early
    assert parse_recipe("heun") == parse_recipe("heun") or parse_recipe("heun").options == {}
    assert parse_recipe("torchdiffeq:rk4").method == "torchdiffeq:rk4"
    assert parse_recipe("torchdiffeq:rk4:grid_kind=logsnr").options == {"grid_kind": "logsnr"}
    d = as_recipe({"method": "ddim", "eta": 0.5, "name": "half"})
    assert (d.method, d.options, d.name) == ("ddim", {"eta": 0.5}, "half")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("heunn", "unknown method 'heunn'"),
        ("ddim:grid=logsnr", "unknown option 'grid'"),
        ("dopri5:grid_kind=logsnr", "unknown option 'grid_kind'"),
        ("ddim:denoise", "expected key=value"),
        ("ddim:denoise=yes", "denoise must be true or false"),
        ("ddim:sigma_min=abc", "sigma_min must be a number"),
        ("ddim:sigma_min=0.1,t_min=0.2", "sigma_min or t_min, not both"),
        ("ddim:eta=0.1,eta=0.2", "'eta' given twice"),
        ("", "a recipe must be"),
    ],
)
def test_recipe_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_recipe(spec)


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(["ddim", "unipc_2m", "dpmpp_3m"]),
    grid=st.none() | st.sampled_from(["uniform", "logsnr", "karras"]),
    smin=st.none() | st.floats(0.01, 1.0),
    denoise=st.none() | st.booleans(),
    lof=st.none() | st.booleans(),
)
def test_spec_round_trips(method, grid, smin, denoise, lof):
    opts = {"grid_kind": grid, "sigma_min": smin, "denoise": denoise}
    if method != "ddim":
        opts["lower_order_final"] = lof
    opts = {k: v for k, v in opts.items() if v is not None}
    r = Recipe(method, opts)
    back = parse_recipe(spec_of(method, opts))
    assert (back.method, back.options, back.name) == (r.method, r.options, r.name)


def test_load_recipes(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[[recipe]]\nmethod = "ddim"\nsteps = [3, 5]\n[[recipe]]\nmethod = "heun"\n')
    (a, sa), (b, sb) = load_recipes(p)
    assert (a.method, sa, b.method, sb) == ("ddim", {"steps": [3, 5]}, "heun", {})
    p.write_text('method = "ddim"\n')
    with pytest.raises(ValueError, match=r"\[\[recipe\]\] tables"):
        load_recipes(p)
    p.write_text("[[recipe]\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_recipes(p)


def test_sweep_recipe_equals_sample_with_its_options():
    """A recipe's row scores the very samples ``nd.sample`` gives with its options."""
    models = {"DDPM": closed_form_models()["DDPM"]}
    spec = "unipc_2m:grid_kind=karras,sigma_min=0.2,denoise=true,lower_order_final=false"
    res = sweep(models, {spec: [4]}, seeds=2, floor_seeds=2, n=40, metrics=["nll"])
    (row,) = res.rows
    assert row["method"] == spec and row["nfe"] == 5
    vals = []
    for s in (0, 1):
        x = nd.sample(
            models["DDPM"],
            40,
            "unipc_2m",
            steps=4,
            grid_kind="karras",
            sigma_min=0.2,
            denoise=True,
            lower_order_final=False,
            generator=torch.Generator().manual_seed(s),
        ).samples
        truth = models["DDPM"].predictor.data
        t = torch.zeros(40, dtype=torch.float64)
        vals.append(float(-truth.marginal_log_prob(x.double(), t, models["DDPM"].schedule).mean()))
    assert row["nll"] == pytest.approx(sum(vals) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="add denoise=true"):
        sweep(models, {"ddim:sigma_min=0.2": [4]}, seeds=2, n=8, metrics=["nll"])
