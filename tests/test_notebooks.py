"""Every figure-reproduction notebook (``notebooks/*.py``, Jupytext percent scripts) runs
end to end at ``NDM_NOTEBOOK_SCALE=small``, writes its figure and reports sane numbers."""

import math
import runpy
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.py"))


def _entries(obj, key):
    """Every value stored under ``key`` anywhere in nested dicts; a [mean, se] pair gives its mean."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v[0] if isinstance(v, (list, tuple)) else v
            else:
                yield from _entries(v, key)


def test_notebooks_found():
    assert {p.stem for p in NOTEBOOKS} >= {
        "ot_dynamics_1d",
        "ot_dynamics_2d",
        "learned_transforms_2d",
    }


@pytest.mark.parametrize("script", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_small(script, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    monkeypatch.setenv("NDM_NOTEBOOK_SCALE", "small")
    monkeypatch.setenv("NDM_NOTEBOOK_OUT", str(out))
    g = runpy.run_path(str(script), run_name="__main__")
    text = capsys.readouterr().out
    results = g["RESULTS"]

    figure = Path(results["figure"])
    assert figure.is_file() and figure.stat().st_size > 0
    assert figure.parent == out
    assert not [
        p for p in out.iterdir() if p.name.endswith(".tmp")
    ]  # atomic write left no temp file

    nelbos = list(_entries(results, "nelbo"))
    assert all(math.isfinite(v) for v in nelbos), nelbos
    if nelbos:
        assert (
            f"{nelbos[0]:.3f}" in text or f"{nelbos[0]:.4f}" in text
        )  # the numbers are printed too
    if script.stem in ("ot_dynamics_1d", "ot_dynamics_2d", "learned_transforms_2d"):
        assert nelbos
    for key in ("kinetic_ratio", "coupling_ratio"):
        # both ratios are >= 1 exactly on samples (the path couples its own end points)
        values = list(_entries(results, key))
        assert all(math.isfinite(v) and v >= 1.0 - 1e-9 for v in values), (key, values)
    if script.stem.startswith("ot_dynamics"):
        assert list(_entries(results, "kinetic_ratio"))
