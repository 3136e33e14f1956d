"""torch.distributed on CPU with gloo, two processes: DDP training matches one process
with the same global batch (as the same micro-batches), and the sharded likelihood equals
the single-process one."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ndmsolve as nd
from ndmsolve.data import checkerboard
from ndmsolve.fields import MLP, EpsilonPredictor
from ndmsolve.train import train

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo"
)

STEPS, BATCH = 6, 32


def _model():
    torch.manual_seed(0)
    sched = nd.LinearLogSNR(-8.0, 8.0)
    pred = EpsilonPredictor(MLP(2, hidden=16, depth=2, time_dim=8), sched)
    return nd.NDM(
        pred, nd.ResidualTransform(MLP(2, hidden=8, depth=1, time_dim=8)), sched, data_shape=(2,)
    )


def _train(ckpt=None):
    data = checkerboard(256, torch.Generator().manual_seed(0))
    return train(
        _model(),
        data,
        steps=STEPS,
        batch_size=BATCH,
        generator=3,
        microbatches=2,
        progress=False,
        checkpoint=ckpt,
        log_every=2,
    )


def _likelihood(model, x):
    from ndmsolve.commands.likelihood import evaluate

    cfg = dict(
        batch_size=5,
        method="dopri5",
        rtol=1e-3,
        atol=1e-3,
        trace="hutchinson",
        probes=2,
        n_dequant=1,
        elbo_draws=2,
        seed=7,
    )
    return evaluate(model, x, 17, cfg, torch.device("cpu"))


def _worker(rank: int, world: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world
    )
    try:
        res = _train(ckpt=os.path.join(folder, "ddp.pt"))
        x = torch.randint(0, 17, (13, 2), generator=torch.Generator().manual_seed(1)).to(
            torch.uint8
        )
        lik = _likelihood(res.ema_model, x)
        torch.save(
            {
                "losses": res.losses,
                "params": [p.detach().clone() for p in res.model.parameters()],
                "lik": lik,
            },
            os.path.join(folder, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_ddp_matches_single_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    single = _train()
    x = torch.randint(0, 17, (13, 2), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    lik1 = _likelihood(single.ema_model, x)
    for rank in (0, 1):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        # Same global batch and noise: the loss trajectory and the weights agree up to the
        # order of float sums (gradients all-reduced across ranks vs accumulated).
        assert torch.allclose(
            torch.tensor(out["losses"]), torch.tensor(single.losses), rtol=1e-5, atol=1e-5
        )
        for p, q in zip(out["params"], single.model.parameters()):
            assert torch.allclose(p, q.detach(), rtol=1e-4, atol=1e-6)
        lik2 = out["lik"]
        assert lik2["n"] == lik1["n"] == 13
        for key in ("ode", "elbo"):
            assert lik2[key]["mean"] == pytest.approx(lik1[key]["mean"], rel=1e-5, abs=1e-6), key
            assert lik2[key]["se"] == pytest.approx(lik1[key]["se"], rel=1e-4, abs=1e-6), key
            assert torch.allclose(
                torch.tensor(lik2[f"{key}_per_point"]),
                torch.tensor(lik1[f"{key}_per_point"]),
                rtol=1e-5,
                atol=1e-5,
            )
    # Rank 0 wrote one checkpoint with both ranks' RNG states; it loads as a model.
    state = nd.checkpoint.load_checkpoint(tmp_path / "ddp.pt")
    assert state["world_size"] == 2 and len(state["rng_per_rank"]) == 2 and state["step"] == STEPS
    assert isinstance(nd.load_model(tmp_path / "ddp.pt"), nd.NDM)
    # A different micro-batch split draws different noise: the match above is not automatic.
    other = train(
        _model(),
        checkerboard(256, torch.Generator().manual_seed(0)),
        steps=STEPS,
        batch_size=BATCH,
        generator=3,
        microbatches=4,
        progress=False,
    )
    assert not torch.allclose(
        torch.tensor(other.losses), torch.tensor(single.losses), rtol=1e-5, atol=1e-5
    )
