"""Training and sampling images per CPU-second of the digits study's NDM and DDPM.

The models are the ones ``notebooks/images_digits.py`` trains at its ``full`` scale, built
by ``ndmsolve train``'s own ``build_model``: the same ε-predictor U-Net for both, and for
the NDM a transform F(x, t) = x + t·UNet(x, t). Throughput does not depend on the weights,
so the models are freshly initialised (the transform's output layer is zero at
initialisation; it is perturbed here so that no work is skipped by a zero).

    train   one optimisation step at the study's batch: the ELBO with the 17-bin
            discretised decoder, backward, gradient clipping, Adam
    sample  one Heun PF-ODE solve of a batch of images at the study's step count

Timings use this process's CPU time (``time.process_time``) at one thread by default, so
the load of a shared machine does not enter; rounds are interleaved across the four
variants and the median over rounds is reported, with the load average before and after.

    python -m benchmarks.images_throughput [--quick] [--threads 1] [--rounds 5]

Writes ``benchmarks/results/images_throughput_cpu.json`` (atomically).
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import torch

import ndmsolve as nd
from benchmarks import common
from ndmsolve.commands.models import build_model
from ndmsolve.objectives import continuous_loss

_HERE = os.path.dirname(os.path.abspath(__file__))

RESULTS = os.path.join(_HERE, "results")
N_BINS = 17  # the digits' grey levels
# The notebook's "full" networks and batch; "quick" is the smoke test's size.
SIZES = {
    "full": dict(base=32, transform_base=8, batch=64, sample_batch=64, sample_steps=50),
    "quick": dict(base=4, transform_base=4, batch=4, sample_batch=4, sample_steps=2),
}


def model_config(model: str, size: dict) -> dict:
    """The ``ndmsolve train`` options of the study for ``model`` ("ndm" or "ddpm")."""
    return dict(
        model=model,
        schedule="linear",
        logsnr_min=-10.0,
        logsnr_max=10.0,
        predictor="eps",
        base=size["base"],
        mults=[1, 2],
        time_dim=64,
        num_res_blocks=1,
        attn_levels=[1],
        mid_attn=True,
        attn_heads=1,
        dropout=0.0,
        transform_base=size["transform_base"],
        transform_mults=[1],
    )


def build(size: dict) -> dict[str, nd.NDM]:
    models = {}
    for name in ("ndm", "ddpm"):
        m = build_model(model_config(name, size), (1, 8, 8), True, seed=0)
        if isinstance(m.transform, nd.ResidualTransform):
            with torch.no_grad():
                g = torch.Generator().manual_seed(1)
                for p in m.transform.parameters():
                    p.add_(1e-3 * torch.randn(p.shape, generator=g))
        models[name] = m
    return models


def train_step_fn(model: nd.NDM, x: torch.Tensor):
    """One training step as ``ndmsolve train`` takes it (less the EMA update)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    loss = functools.partial(continuous_loss, decoder="discretized", n_bins=N_BINS)

    def step():
        opt.zero_grad(set_to_none=True)
        loss(model, x, generator=g).total.mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def sample_fn(model: nd.NDM, n: int, steps: int):
    g = torch.Generator().manual_seed(0)
    model = model.eval()

    def solve():
        return nd.sample(model, n, method="heun", steps=steps, generator=g)

    return solve


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny networks, few rounds (smoke test)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds (default 5; quick 2)")
    p.add_argument("--min-time", type=float, default=None, help="CPU seconds per variant per round")
    p.add_argument(
        "--clock", default="cpu", choices=["cpu", "wall"], help="process CPU time or wall time"
    )
    p.add_argument("--out-dir", default=RESULTS)
    a = p.parse_args(argv)
    if a.threads < 1:
        p.error(f"--threads must be >= 1, got {a.threads}")
    if a.rounds is not None and a.rounds < 1:
        p.error(f"--rounds must be >= 1, got {a.rounds}")
    size = SIZES["quick" if a.quick else "full"]
    rounds = a.rounds or (2 if a.quick else 5)
    min_time = a.min_time if a.min_time is not None else (0.01 if a.quick else 2.0)
    clock = time.process_time if a.clock == "cpu" else time.perf_counter
    old_threads = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    try:
        models = build(size)
        from ndmsolve.data import load_digits, to_model_range

        x = to_model_range(load_digits("train")[0][: size["batch"]], n_bins=N_BINS)
        fns = {}
        for name, m in models.items():
            fns[f"train_{name}"] = train_step_fn(m, x)
            fns[f"sample_{name}"] = sample_fn(m, size["sample_batch"], size["sample_steps"])
        nfe = {name: fns[f"sample_{name}"]().nfe for name in models}
        load_before = os.getloadavg()
        secs = common.time_all(fns, torch.device("cpu"), rounds, min_time, clock=clock)
        load_after = os.getloadavg()
    finally:
        torch.set_num_threads(old_threads)
    a.device = "cpu"
    res = dict(
        common.run_meta("images_throughput", a, torch.device("cpu"), rounds),
        clock=a.clock,
        sizes=size,
        params={n: sum(q.numel() for q in m.parameters()) for n, m in models.items()},
        sample_nfe=nfe,
        seconds_per_call=secs,
        images_per_s={
            "train_ndm": size["batch"] / secs["train_ndm"],
            "train_ddpm": size["batch"] / secs["train_ddpm"],
            "sample_ndm": size["sample_batch"] / secs["sample_ndm"],
            "sample_ddpm": size["sample_batch"] / secs["sample_ddpm"],
        },
        ndm_over_ddpm_time={
            "train": secs["train_ndm"] / secs["train_ddpm"],
            "sample": secs["sample_ndm"] / secs["sample_ddpm"],
        },
        loadavg_before=list(load_before),
        loadavg_after=list(load_after),
    )
    path = os.path.join(a.out_dir, f"images_throughput_cpu{'_quick' if a.quick else ''}.json")
    common.write_json_atomic(path, res, prefix=".images_throughput_", suffix=".json")
    unit = "CPU-second" if a.clock == "cpu" else "second (wall)"
    print(
        f"digits U-Net (base {size['base']}, transform base {size['transform_base']}), "
        f"{a.threads} thread(s), {rounds} interleaved rounds, images per {unit}; "
        f"load {load_before[0]:.2f} -> {load_after[0]:.2f}"
    )
    for k, v in res["images_per_s"].items():
        print(f"  {k:12s} {v:9.1f}")
    r = res["ndm_over_ddpm_time"]
    print(
        f"  NDM / DDPM time: train {r['train']:.2f}x, sample {r['sample']:.2f}x "
        f"(heun {size['sample_steps']} steps, NFE {nfe})"
    )
    print(f"wrote {path}")
    return res


if __name__ == "__main__":
    main()
