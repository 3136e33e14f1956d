"""Batches without replacement (``train(data_order="epoch")``): every point once per epoch,
the same global batches on any number of ranks, and bit-exact resumption."""

import pytest
import torch
from helpers import one_thread_fixture
from hypothesis import given, settings
from hypothesis import strategies as st

import ndmsolve as nd
from ndmsolve.data import gaussian_mixture_1d
from ndmsolve.fields import MLP
from ndmsolve.train import Batches, load_checkpoint, train

_one_thread = one_thread_fixture(torch.float32)


def _indices(n, batch, steps, seed=0, k=1, rank=0, world=1, order="epoch"):
    """The points each step takes, as indices (data = arange(n) in one column)."""
    data = torch.arange(n, dtype=torch.float32)[:, None]
    b = Batches(data, batch, torch.Generator().manual_seed(seed), k, rank, world, order)
    return [[x[:, 0].long() for x, _ in b.next(s)] for s in range(steps)]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), batch=st.integers(1, 50), epochs=st.integers(1, 3))
def test_every_point_once_per_epoch(n, batch, epochs):
    steps = -(-epochs * n // batch)  # enough steps to cover the epochs
    stream = torch.cat([p for parts in _indices(n, batch, steps) for p in parts])
    for e in range(epochs):
        assert torch.equal(stream[e * n : (e + 1) * n].sort().values, torch.arange(n))


def test_epochs_differ_and_seed_matters():
    a = torch.cat([p[0] for p in _indices(50, 10, 10, seed=0)])
    b = torch.cat([p[0] for p in _indices(50, 10, 10, seed=1)])
    assert not torch.equal(a[:50], a[50:])  # a new order each epoch
    assert not torch.equal(a, b)
    assert torch.equal(a, torch.cat([p[0] for p in _indices(50, 10, 10, seed=0)]))


def test_ranks_split_the_single_process_batches():
    """Rank r of W with K micro-batches takes parts r, r + W, ... of the one-process batch."""
    one = _indices(30, 12, 7, k=4)
    for world in (2, 4):
        for rank in range(world):
            mine = _indices(30, 12, 7, k=4, rank=rank, world=world)
            for s in range(7):
                assert len(mine[s]) == 4 // world
                for j, part in enumerate(mine[s]):
                    assert torch.equal(part, one[s][rank + j * world])
    # within an epoch the two ranks never take the same point
    r0 = torch.cat([p for parts in _indices(30, 12, 5, k=2, rank=0, world=2) for p in parts])
    r1 = torch.cat([p for parts in _indices(30, 12, 5, k=2, rank=1, world=2) for p in parts])
    first_epoch = 30 // 12  # whole steps inside epoch 0
    assert not set(r0[: 6 * first_epoch].tolist()) & set(r1[: 6 * first_epoch].tolist())


def test_random_order_draws_with_replacement():
    """The default keeps the old behaviour: iid indices, so repeats within an epoch."""
    stream = torch.cat([p[0] for p in _indices(20, 20, 1, order="random")])
    assert len(set(stream.tolist())) < 20


def _model(seed=0):
    torch.manual_seed(seed)
    return nd.NDM(MLP(1, hidden=16, depth=2, time_dim=8), schedule=nd.LinearLogSNR(-8.0, 8.0))


def test_epoch_order_trains_and_resumes_bit_exactly(tmp_path):
    data = gaussian_mixture_1d(100, torch.Generator().manual_seed(0))
    kw = dict(batch_size=32, progress=False, data_order="epoch")
    full = train(_model(), data, steps=12, generator=torch.Generator().manual_seed(2), **kw)
    ck = tmp_path / "ck.pt"
    train(_model(), data, steps=7, generator=torch.Generator().manual_seed(2), checkpoint=ck, **kw)
    assert load_checkpoint(ck)["data_order"] == "epoch"
    # a fresh model and another generator: the epochs' seed comes from the checkpoint
    resumed = train(
        _model(seed=9),
        data,
        steps=12,
        generator=torch.Generator().manual_seed(77),
        checkpoint=ck,
        resume=True,
        **kw,
    )
    assert resumed.losses == full.losses
    for p, q in zip(full.ema_model.parameters(), resumed.ema_model.parameters()):
        assert torch.equal(p, q)
    other = train(
        _model(),
        data,
        steps=12,
        generator=torch.Generator().manual_seed(2),
        progress=False,
        batch_size=32,
    )
    assert other.losses != full.losses  # the order matters: random differs from epoch
    with pytest.raises(ValueError, match="data_order='epoch'.*same"):
        train(
            _model(),
            data,
            steps=14,
            generator=2,
            checkpoint=ck,
            resume=True,
            batch_size=32,
            progress=False,
        )


def test_bad_data_order():
    data = gaussian_mixture_1d(64, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="data_order must be one of"):
        train(_model(), data, steps=1, batch_size=8, generator=0, data_order="shuffle")
    with pytest.raises(ValueError, match="data_order='epoch' needs data as a tensor"):
        train(
            _model(),
            lambda n, generator=None: gaussian_mixture_1d(n, generator),
            steps=1,
            batch_size=8,
            generator=0,
            data_order="epoch",
        )
