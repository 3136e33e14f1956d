"""Image figures: sample grids, loss curves and the Figure-5-style z_t / x̂ grid."""

import pytest
import torch
from helpers import gen, one_thread_fixture

import ndmsolve as nd
from ndmsolve.fields import EpsilonPredictor, UNet
from ndmsolve.viz import _tile, _unit, diffusion_grid, image_grid, loss_curve

_one_thread = one_thread_fixture(torch.float32)
PNG = b"\x89PNG\r\n\x1a\n"


def test_tile_places_every_image():
    x = torch.arange(6, dtype=torch.float64).reshape(6, 1, 1, 1).expand(6, 1, 2, 3) / 5
    tile = _tile(x, nrow=4)
    assert tile.shape == (2 * 3 - 1, 4 * 4 - 1, 1)
    assert tile[0, 0, 0] == 0 and tile[3, 4, 0] == pytest.approx(5 / 5)  # image 5: row 1, column 1
    assert tile[2, 0, 0] == 1.0  # the gap between rows is white
    # integer levels and model-range floats map to [0, 1]
    assert torch.equal(
        _unit(torch.tensor([[[[0, 16]]]], dtype=torch.uint8), 17),
        torch.tensor([[[[0.0, 1.0]]]], dtype=torch.float64),
    )
    assert torch.equal(
        _unit(torch.tensor([[[[-1.0, 1.0, 3.0]]]]), None),
        torch.tensor([[[[0.0, 1.0, 1.0]]]], dtype=torch.float64),
    )


def test_figures_written(tmp_path):
    torch.manual_seed(0)
    sched = nd.LinearLogSNR(-6.0, 6.0)
    ndm = nd.NDM(
        EpsilonPredictor(UNet(1, base=4, mults=(1, 2), time_dim=8), sched),
        nd.ResidualTransform(UNet(1, base=4, mults=(1,), time_dim=8)),
        sched,
        data_shape=(1, 8, 8),
    )
    ddpm = nd.NDM(
        EpsilonPredictor(UNet(1, base=4, mults=(1, 2), time_dim=8), sched),
        None,
        sched,
        data_shape=(1, 8, 8),
    )
    x = torch.rand(3, 1, 8, 8, generator=gen(0)) * 2 - 1
    p = diffusion_grid(
        tmp_path / "fig5.png", {"NDM": ndm, "DDPM": ddpm}, x, ts=(0.0, 0.5, 1.0), generator=gen(1)
    )
    assert p.read_bytes()[:8] == PNG
    p = image_grid(
        tmp_path / "grid.png", torch.randint(0, 17, (10, 1, 8, 8), dtype=torch.uint8), n_bins=17
    )
    assert p.read_bytes()[:8] == PNG
    p = loss_curve(tmp_path / "loss.png", [3.0, 2.0, 1.5] * 30, window=10)
    assert p.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="ts must be times"):
        diffusion_grid(tmp_path / "bad.png", {"NDM": ndm}, x, ts=(1.5,))
    with pytest.raises(ValueError, match="images must have shape"):
        image_grid(tmp_path / "bad.png", torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="at least one"):
        loss_curve(tmp_path / "bad.png", [])
    assert sorted(q.name for q in tmp_path.iterdir()) == ["fig5.png", "grid.png", "loss.png"]
