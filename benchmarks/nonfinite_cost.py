"""Cost of the training loop's non-finite check per step (``ndmsolve.train``'s policy).

Each step, ``train`` reads the loss and the global gradient norm in one host sync and
skips the update when either is NaN or inf. Without the check the loop reads the loss
alone (``.item()``) and, without clipping, computes no gradient norm. We time ``train``
with the check (``checked``) and with it turned off internally
(``ndmsolve.train.StepGuard.check = False``, ``unchecked``), with gradient clipping (the
default, whose norm the check reuses) and without (the check computes the norm itself),
on two cases: the CLI's toy NDM on checkerboard points (MLP predictor and transform) and
a small U-Net NDM on 8×8 images. The check's own work (gradient norm and the stacked read)
is also timed alone (``check_alone_ms``): end-to-end differences of a few per cent are
within the rounds' noise on a shared machine.

CPU time of this process (``time.process_time``, 1 thread), variants interleaved round
after round, median per step (a call trains ``steps`` steps; its set-up, the same in all
variants, is included).

    python -m benchmarks.nonfinite_cost [--quick] [--threads 1] [--rounds 7] [--cases mlp,unet8]

Writes ``benchmarks/results/nonfinite_cost_cpu.json`` (atomically).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

import ndmsolve as nd
import ndmsolve.train as nd_train
from benchmarks import common
from ndmsolve.fields import MLP, EpsilonPredictor, UNet

_HERE = os.path.dirname(os.path.abspath(__file__))

RESULTS = os.path.join(_HERE, "results")

# mlp: the CLI's toy defaults (widths 128/64, depth 3, batch 128); unet8: digits-sized.
CASES = {
    "mlp": dict(
        full=dict(batch=128, width=128, transform_width=64, depth=3, steps=10),
        quick=dict(batch=16, width=8, transform_width=8, depth=1, steps=2),
    ),
    "unet8": dict(
        full=dict(batch=32, width=16, transform_width=8, size=8, steps=5),
        quick=dict(batch=2, width=4, transform_width=4, size=8, steps=2),
    ),
}
VARIANTS = ("checked_clip", "unchecked_clip", "checked_noclip", "unchecked_noclip")


def build(case: str, cfg: dict) -> tuple[nd.NDM, torch.Tensor]:
    """The NDM and its training data (tensor)."""
    torch.manual_seed(0)
    sched = nd.LinearLogSNR(-10.0, 10.0)
    if case == "mlp":
        pred = MLP(2, hidden=cfg["width"], depth=cfg["depth"])
        tr = MLP(2, hidden=cfg["transform_width"], depth=cfg["depth"], zero_init=True)
        x = nd.data.checkerboard(4096, torch.Generator().manual_seed(1))
        shape = (2,)
    else:
        pred = UNet(1, base=cfg["width"], mults=(1, 2))
        tr = UNet(1, base=cfg["transform_width"], mults=(1, 2), zero_init=True)
        x = torch.rand(512, 1, cfg["size"], cfg["size"]) * 2 - 1
        shape = (1, cfg["size"], cfg["size"])
    model = nd.NDM(EpsilonPredictor(pred, sched), nd.ResidualTransform(tr), sched, data_shape=shape)
    return model, x


def train_fn(model, x, cfg: dict, checked: bool, grad_clip):
    def run():
        old = nd_train.StepGuard.check
        nd_train.StepGuard.check = checked
        try:
            nd_train.train(
                model,
                x,
                steps=cfg["steps"],
                batch_size=cfg["batch"],
                grad_clip=grad_clip,
                generator=0,
                progress=False,
            )
        finally:
            nd_train.StepGuard.check = old

    return run


def check_fn(model, x):
    """The check's own work on one step's gradients (no clipping): norm, one read."""
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    guard = nd_train.StepGuard(3, None, [], 0)
    loss = torch.ones(())
    return lambda: guard.decide(0, loss, guard.grad_norm(params, None), rank=0)


def run_case(case: str, cfg: dict, rounds: int, min_time: float) -> dict:
    model, x = build(case, cfg)
    fns = {
        v: train_fn(model, x, cfg, v.startswith("checked"), 1.0 if v.endswith("_clip") else None)
        for v in VARIANTS
    }
    fns["check_alone"] = check_fn(model, x)
    times = common.time_all(fns, torch.device("cpu"), rounds, min_time, clock=time.process_time)
    check_alone = times.pop("check_alone")
    per_step = {v: t / cfg["steps"] for v, t in times.items()}
    return {
        "config": dict(cfg, data_shape=list(x.shape[1:])),
        "params": sum(p.numel() for p in model.parameters()),
        "ms_per_step": {v: 1e3 * s for v, s in per_step.items()},
        "ratio_clip": per_step["checked_clip"] / per_step["unchecked_clip"],
        "ratio_noclip": per_step["checked_noclip"] / per_step["unchecked_noclip"],
        # What the check adds without clipping, timed alone: the gradient norm and the
        # stacked read of (loss, norm); with clipping only the stack (the norm is clip's).
        "check_alone_ms": 1e3 * check_alone,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, few rounds (smoke test)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds (default 7; quick 2)")
    p.add_argument("--min-time", type=float, default=None, help="CPU seconds per variant per round")
    p.add_argument("--cases", default=",".join(CASES), help="subset of " + ",".join(CASES))
    p.add_argument("--out-dir", default=RESULTS)
    a = p.parse_args(argv)
    cases = a.cases.split(",")
    bad = [c for c in cases if c not in CASES]
    if bad:
        p.error(f"--cases: unknown {bad}; choose from {sorted(CASES)}")
    a.device = "cpu"
    old_threads = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    rounds = a.rounds or (2 if a.quick else 7)
    min_time = a.min_time if a.min_time is not None else (0.005 if a.quick else 1.0)
    res = dict(
        common.run_meta("nonfinite_cost", a, torch.device("cpu"), rounds),
        clock="time.process_time: CPU time of this process",
        cases={},
    )
    try:
        for case in cases:
            cfg = CASES[case]["quick" if a.quick else "full"]
            print(f"running {case} {cfg} ...", file=sys.stderr, flush=True)
            res["cases"][case] = run_case(case, cfg, rounds, min_time)
    finally:
        torch.set_num_threads(old_threads)
    path = os.path.join(a.out_dir, "nonfinite_cost_cpu.json")
    common.write_json_atomic(path, res, prefix=".nonfinite_cost_", suffix=".json")
    print(
        f"\nnon-finite check, CPU ms per training step ({res['device_name']}, {a.threads} thread)"
    )
    for case, c in res["cases"].items():
        ms = c["ms_per_step"]
        print(
            f"{case:6} clip: {ms['checked_clip']:.2f} vs {ms['unchecked_clip']:.2f} "
            f"(x{c['ratio_clip']:.3f}); no clip: {ms['checked_noclip']:.2f} vs "
            f"{ms['unchecked_noclip']:.2f} (x{c['ratio_noclip']:.3f}); the check alone "
            f"{c['check_alone_ms']:.3f} ms"
        )
    print(f"wrote {path}")
    return res


if __name__ == "__main__":
    main()
