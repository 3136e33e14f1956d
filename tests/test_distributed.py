"""torch.distributed on CPU with gloo, two processes: DDP training matches one process
with the same global batch (as the same micro-batches), and the sharded likelihood equals
the single-process one."""

import os
import socket
import time

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


def _resume_worker(rank: int, world: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous2", rank=rank, world_size=world
    )
    data = checkerboard(256, torch.Generator().manual_seed(0))
    kw = dict(batch_size=BATCH, generator=3, progress=False, log_every=5)
    try:
        # Fresh model and generator seed on resume: all state comes from the checkpoint.
        train(_model(), data, steps=20, checkpoint=os.path.join(folder, "resumed.pt"), **kw)
        train(
            _model(),
            data,
            steps=40,
            checkpoint=os.path.join(folder, "resumed.pt"),
            resume=True,
            **{**kw, "generator": 99},
        )
        train(_model(), data, steps=40, checkpoint=os.path.join(folder, "straight.pt"), **kw)
    finally:
        dist.destroy_process_group()


def test_ddp_resume_is_bit_exact(tmp_path):
    """Two gloo processes (two micro-batches, each rank its own noise generator): 20 steps
    and a resume to 40 equal 40 straight, bit for bit."""
    mp.spawn(_resume_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    a = nd.checkpoint.read_checkpoint(tmp_path / "resumed.pt")
    b = nd.checkpoint.read_checkpoint(tmp_path / "straight.pt")
    assert a["step"] == b["step"] == 40 and len(a["generators_per_rank"]) == 2
    assert a["losses"] == b["losses"]
    for key in ("model", "ema", "optimizer", "generators_per_rank", "rng_per_rank"):
        fa, fb = _flat(a[key]), _flat(b[key])
        assert fa.keys() == fb.keys(), key
        for k in fa:
            if isinstance(fa[k], torch.Tensor):
                assert torch.equal(fa[k], fb[k]), (key, k)
            else:
                assert fa[k] == fb[k], (key, k)
    # The ranks' noise generators differ: each rank's own state was stored.
    g0, g1 = b["generators_per_rank"]
    assert not torch.equal(g0[2], g1[2]) and not torch.equal(g0[1], g1[1])
    # One process cannot continue a two-process run: said before anything is restored.
    with pytest.raises(nd.checkpoint.CheckpointError, match="written by 2 processes; resume it"):
        train(
            _model(),
            checkerboard(256, torch.Generator().manual_seed(0)),
            steps=41,
            batch_size=BATCH,
            generator=3,
            progress=False,
            checkpoint=tmp_path / "straight.pt",
            resume=True,
        )


def _flat(obj, prefix="") -> dict:
    """Nested dicts/lists -> {path: leaf}."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flat(val, f"{prefix}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in _flat(val, f"{prefix}/{i}").items()}
    return {prefix: obj}


def _timeout_worker(rank: int, port: int, folder: str) -> None:
    from ndmsolve import distributed as ddist

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2"
    )
    # 3 s: also the start-up's limit, so a loaded machine's late second process still joins.
    ddist.init_from_env(timeout=3)
    done = os.path.join(folder, "line.txt")
    if rank == 1:  # a lost rank: never joins the collective; leaves once rank 0 has given up
        deadline = time.monotonic() + 60
        while not os.path.exists(done) and time.monotonic() < deadline:
            time.sleep(0.1)
        os._exit(0)  # gloo may abort tearing down a group with a timed-out operation
    try:
        ddist.all_reduce_sum(torch.ones(1))
        line = "no error"
    except RuntimeError as e:
        line = ddist.describe_timeout(e)
    with open(done + ".tmp", "w") as f:
        f.write(str(line))
    os.replace(done + ".tmp", done)
    os._exit(0)


def test_dist_timeout_ends_a_collective_with_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_timeout_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    line = (tmp_path / "line.txt").read_text()
    assert line.startswith(
        "rank 0 of 2: the other processes did not answer within --dist-timeout (3 s)"
    )
    assert "\n" not in line


def test_train_timeout_default():
    from ndmsolve import distributed as ddist

    assert ddist.train_timeout(7.5) == 7.5
    expected = None if torch.cuda.is_available() else ddist.GLOO_TIMEOUT_S
    assert ddist.train_timeout(None) == expected
    with pytest.raises(ValueError, match="timeout"):
        ddist.init_from_env(timeout=0)
