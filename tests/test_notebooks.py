"""Every figure-reproduction notebook (``notebooks/*.py``, Jupytext percent scripts) runs
end to end at ``NDM_NOTEBOOK_SCALE=small``, writes its figure and reports sane numbers."""
import math
import runpy
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.py"))


def test_notebooks_found():
    assert NOTEBOOKS, "no notebooks/*.py found"


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
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic write left no temp file

    models = [k for k, v in results.items() if isinstance(v, dict) and "straightness_mean" in v]
    assert models, results
    for name in models:
        r = results[name]
        for key in ("straightness_mean", "straightness_median"):
            assert math.isfinite(r[key]) and r[key] >= 1.0, (name, key, r[key])
        assert math.isfinite(r["nelbo"]), (name, r)
        assert f"{r['straightness_mean']:.4f}" in text  # the numbers are printed too
