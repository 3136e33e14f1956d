"""Plots: a sample figure with trajectories is written; bad trajectories are rejected."""

import pytest
import torch

from ndmsolve.viz import scatter_samples


def test_scatter_with_trajectories(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 2, generator=g)
    paths = torch.randn(6, 4, 2, generator=g).cumsum(0)
    png = scatter_samples(
        tmp_path / "s.png", {"data": x, "model": x}, trajectories={"model": paths}
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".s.png.*"))
    with pytest.raises(ValueError, match="names no panel"):
        scatter_samples(tmp_path / "t.png", {"data": x}, trajectories={"other": paths})
    with pytest.raises(ValueError, match=r"\(S, k, 2\)"):
        scatter_samples(tmp_path / "t.png", {"data": x}, trajectories={"data": paths[:, :, :1]})
    assert not (tmp_path / "t.png").exists()
