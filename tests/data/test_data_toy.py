"""Toy sets and image loaders: shapes, seeding, ranges, error messages."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from ndmsolve.data import (
    TOY_DATASETS,
    checkerboard,
    from_model_range,
    gaussian_mixture_1d,
    gaussian_mixture_1d_log_prob,
    load_cifar10,
    load_mnist,
    load_toy,
    to_model_range,
)

DIMS = {"gaussian_mixture_1d": 1}


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_toy_shapes_seeding(name, dtype):
    x = load_toy(name, 257, torch.Generator().manual_seed(3), dtype=dtype)
    assert x.shape == (257, DIMS.get(name, 2)) and x.dtype == dtype
    assert torch.isfinite(x).all()
    again = load_toy(name, 257, torch.Generator().manual_seed(3), dtype=dtype)
    other = load_toy(name, 257, torch.Generator().manual_seed(4), dtype=dtype)
    assert torch.equal(x, again)
    assert not torch.equal(x, other)
    # Spread out (not collapsed) and on the usual scale.
    assert 0.3 < float(x.std(0).min()) and float(x.abs().max()) < 8


def test_toy_ignores_global_seed():
    torch.manual_seed(0)
    a = checkerboard(100, torch.Generator().manual_seed(1))
    torch.manual_seed(99)
    b = checkerboard(100, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_checkerboard_geometry():
    x = checkerboard(4000, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(x.min()) >= -4 and float(x.max()) < 4
    # Dark squares only: floor(x/2) of the two coordinates has odd sum ... on the 2-wide grid,
    # the parity of (col + row) is constant over the support.
    parity = (torch.floor(x[:, 0] / 2) + torch.floor(x[:, 1] / 2)) % 2
    assert parity.unique().numel() == 1
    counts = torch.bincount(
        (torch.floor(x[:, 0] / 2) + 2).long() * 4 + (torch.floor(x[:, 1] / 2) + 2).long(),
        minlength=16,
    )
    nonzero = counts[counts > 0]
    assert nonzero.numel() == 8 and float(nonzero.min()) > 0.8 * 4000 / 8


def test_gaussian_mixture_1d_density_matches_samples():
    x = gaussian_mixture_1d(20000, torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = torch.linspace(-6, 6, 4001, dtype=torch.float64).unsqueeze(1)
    p = gaussian_mixture_1d_log_prob(grid).exp()
    assert abs(float(torch.trapezoid(p, grid[:, 0])) - 1) < 1e-6
    mean_exact = float(torch.trapezoid(p * grid[:, 0], grid[:, 0]))
    assert abs(float(x.mean()) - mean_exact) < 0.05
    with pytest.raises(ValueError, match="stds"):
        gaussian_mixture_1d(5, stds=(1.0, -1.0, 1.0))


def test_load_toy_errors():
    with pytest.raises(ValueError, match="checkerboard.*two_moons"):
        load_toy("spirals", 10)
    with pytest.raises(ValueError, match="n must be"):
        load_toy("rings", 0)


# ----------------------------------------------------------------- images
def _write_cifar(root, n_per_batch=3):
    d = root / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    expected = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(d / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
        expected[name] = (data, labels)
    return expected


def test_cifar10_loader(tmp_path):
    expected = _write_cifar(tmp_path)
    x, y = load_cifar10(tmp_path, "train")
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    data, labels = expected["data_batch_2"]
    # Channel-major layout: the first 1024 bytes are the red plane.
    assert np.array_equal(x[3, 0].numpy().ravel(), data[0, :1024])
    assert np.array_equal(x[3, 2].numpy().ravel(), data[0, 2048:])
    assert y[3].item() == labels[0]
    xt, yt = load_cifar10(tmp_path / "cifar-10-batches-py", "test")
    assert xt.shape == (3, 3, 32, 32)


def _write_idx(path, arr, gz=False):
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loader(tmp_path, gz):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    labs = np.array([3, 1, 4, 1], dtype=np.uint8)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    sfx = ".gz" if gz else ""
    _write_idx(raw / f"t10k-images-idx3-ubyte{sfx}", imgs, gz)
    _write_idx(raw / f"t10k-labels-idx1-ubyte{sfx}", labs, gz)
    x, y = load_mnist(tmp_path, "test")
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.uint8
    assert np.array_equal(x[:, 0].numpy(), imgs) and y.tolist() == [3, 1, 4, 1]


def test_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not download"):
        load_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not download"):
        load_mnist(tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_mnist(tmp_path, "val")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
    with pytest.raises(ValueError, match="truncated"):
        load_mnist(tmp_path)
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28)))
    with open(tmp_path / "train-images-idx3-ubyte", "ab") as f:
        f.write(b"\x01")  # one byte too many
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2))
    with pytest.raises(ValueError, match="header says"):
        load_mnist(tmp_path)


def test_model_range_round_trip():
    x = torch.arange(256, dtype=torch.uint8)
    y = to_model_range(x)
    assert float(y.min()) == -1.0 and float(y.max()) == 1.0 and y.dtype == torch.float32
    assert torch.equal(from_model_range(y), x)
    assert torch.equal(from_model_range(to_model_range(x, torch.float64) + 0.003), x)
    with pytest.raises(TypeError, match="uint8"):
        to_model_range(y)
