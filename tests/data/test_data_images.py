"""Image data: the built-in digits, PNG folders, and bits/dim with n_bins grey levels."""

import math

import numpy as np
import pytest
import torch
from helpers import gen, one_thread_fixture

import ndmsolve as nd
from ndmsolve.data import (
    DIGITS_LEVELS,
    from_model_range,
    load_digits,
    load_png_folder,
    to_model_range,
)
from ndmsolve.likelihood import bits_per_dim, elbo_bits_per_dim
from ndmsolve.objectives import discretized_gaussian_log_prob

_one_thread = one_thread_fixture(torch.float32)
D64 = torch.float64


def test_digits_offline_split_reproducible():
    pytest.importorskip("sklearn")
    tr, ytr = load_digits("train")
    te, yte = load_digits("test")
    allx, ally = load_digits("all")
    assert (
        tr.shape == (1500, 1, 8, 8) and te.shape == (297, 1, 8, 8) and allx.shape == (1797, 1, 8, 8)
    )
    assert (
        tr.dtype == torch.uint8
        and int(allx.max()) == DIGITS_LEVELS - 1 == 16
        and int(allx.min()) == 0
    )
    # The two splits partition the set: same multiset of (image, label) rows.
    rows = lambda x, y: sorted(
        map(tuple, torch.cat([x.flatten(1), y[:, None].to(torch.uint8)], 1).tolist())
    )  # noqa: E731
    assert rows(torch.cat([tr, te]), torch.cat([ytr, yte])) == rows(allx, ally)
    assert torch.equal(load_digits("test")[0], te)  # same split every call
    assert not torch.equal(load_digits("test", seed=1)[0], te)
    # The pixels are scikit-learn's own.
    from sklearn.datasets import load_digits as sk

    assert np.array_equal(allx[:, 0].numpy(), sk().images.astype(np.uint8))
    padded, _ = load_digits("test", size=16)
    assert padded.shape == (297, 1, 16, 16) and torch.equal(padded[:, :, 4:12, 4:12], te)
    assert int(padded.sum()) == int(te.sum())
    with pytest.raises(ValueError, match="size"):
        load_digits(size=9)
    with pytest.raises(ValueError, match="split"):
        load_digits("val")


def _write_png(path, array, mode):
    from PIL import Image

    Image.fromarray(array, mode=mode).save(path)


def test_png_folder_round_trip(tmp_path):
    g = np.random.default_rng(0)
    grey = g.integers(0, 256, (3, 6, 4), dtype=np.uint8)
    for i, a in enumerate(grey):
        _write_png(tmp_path / f"img{i}.png", a, "L")
    x, y = load_png_folder(tmp_path)
    assert x.shape == (3, 1, 6, 4) and x.dtype == torch.uint8
    assert np.array_equal(x[:, 0].numpy(), grey) and y.tolist() == [0, 0, 0]
    # Class folders give labels by sorted name; RGB gives 3 channels.
    rgb = g.integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
    for i, a in enumerate(rgb):
        (tmp_path / "rgb" / ("b" if i % 2 else "a")).mkdir(parents=True, exist_ok=True)
        _write_png(tmp_path / "rgb" / ("b" if i % 2 else "a") / f"{i}.png", a, "RGB")
    x, y = load_png_folder(tmp_path / "rgb")
    assert x.shape == (4, 3, 5, 5) and y.tolist() == [0, 0, 1, 1]
    assert np.array_equal(x.permute(0, 2, 3, 1).numpy(), rgb[[0, 2, 1, 3]])
    # Mismatched sizes and unsupported modes name the file; a missing folder says what to put where.
    _write_png(tmp_path / "zz.png", grey[0][:4], "L")
    with pytest.raises(ValueError, match=r"zz\.png.*one size"):
        load_png_folder(tmp_path)
    (tmp_path / "rgba").mkdir()
    _write_png(tmp_path / "rgba" / "a.png", np.zeros((2, 2, 4), np.uint8), "RGBA")
    with pytest.raises(ValueError, match=r"a\.png.*'RGBA'"):
        load_png_folder(tmp_path / "rgba")
    with pytest.raises(FileNotFoundError, match=r"root/\*\.png"):
        load_png_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .png files"):
        load_png_folder(tmp_path / "empty")


@pytest.mark.parametrize("n_bins", [17, 256, 2])
def test_model_range_round_trip(n_bins):
    k = torch.arange(n_bins, dtype=torch.uint8)
    x = to_model_range(k, D64, n_bins=n_bins)
    assert x[0] == -1 and x[-1] == 1
    assert torch.equal(from_model_range(x, n_bins=n_bins), k)


@pytest.mark.parametrize("z", [0.0, 0.45, -0.99, 1.3])
def test_discretized_decoder_17_bins_normalised(z):
    bins = torch.arange(17, dtype=D64) / 8.0 - 1.0
    lp = discretized_gaussian_log_prob(
        bins, torch.full_like(bins, z), torch.full_like(bins, 0.2), n_bins=17
    )
    assert abs(float(lp.exp().sum()) - 1.0) < 1e-12
    # An interior bin is [x − 1/16, x + 1/16].
    Phi = torch.special.ndtr
    k = 8
    ref = math.log(float(Phi((bins[k] + 1 / 16 - z) / 0.2) - Phi((bins[k] - 1 / 16 - z) / 0.2)))
    assert abs(float(lp[k]) - ref) < 1e-6 * abs(
        ref
    )  # the plain CDF difference loses digits in tails


def test_bits_per_dim_with_17_levels_against_discrete_probability():
    """Zero velocity: the model is N(0, I) on y = 2 (x + u)/17 − 1, so P(x) is a product of
    normal-CDF differences over x's y-bin; the bpd must match it, with log(2/17) per dim."""
    x = torch.tensor([[0, 5], [16, 9]], dtype=torch.uint8)
    res = bits_per_dim(
        velocity=lambda z, t: 0.0 * z,
        x_uint8=x,
        n_dequant=3000,
        method="euler",
        steps=1,
        generator=gen(0),
        dtype=D64,
        n_bins=17,
    )
    Phi = torch.special.ndtr
    edge = lambda k: -1.0 + 2.0 * k.to(D64) / 17  # noqa: E731
    logP = torch.log(Phi(edge(x.long() + 1)) - Phi(edge(x.long()))).sum(1)
    assert torch.allclose(res.bpd, -logP / (2 * math.log(2)), atol=2e-3, rtol=0)
    with pytest.raises(ValueError, match=r"0\.\.16"):
        bits_per_dim(
            velocity=lambda z, t: 0.0 * z, x_uint8=x + 1, n_bins=17, method="euler", steps=1
        )


def test_elbo_bpd_uses_n_bins():
    from ndmsolve.fields import MLP

    torch.manual_seed(0)
    model = nd.NDM(
        MLP(4, hidden=8, depth=1, time_dim=4), schedule=nd.LinearLogSNR(-6.0, 6.0)
    ).double()
    x = torch.randint(0, 17, (6, 4), generator=gen(0)).to(torch.uint8)
    r17 = elbo_bits_per_dim(model, x, generator=gen(1), n_bins=17, dtype=D64)
    ref = nd.continuous_loss(
        model, x.to(D64) / 8.0 - 1.0, generator=gen(1), decoder="discretized", n_bins=17
    )
    assert torch.allclose(r17.nats, ref.total)
    assert torch.allclose(r17.bpd, ref.total / (4 * math.log(2)))
