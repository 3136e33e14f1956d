"""``ndmsolve sample``: draw samples from a checkpoint.

    ndmsolve sample runs/ndm/checkpoint.pt --method heun --steps 50 --num-samples 64 --out samples.png
    ndmsolve sample CKPT --method dopri5 --rtol 1e-4 --num-samples 64 --out samples.png

Writes a PNG grid (images) or scatter plot (toys) to ``--out`` and the samples to the same
name with ``.npz`` (``samples``: model range; ``pixels``: integer levels, images only;
``nfe``). Prints the NFE.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..solvers.registry import METHODS, method_check
from .options import (
    DEVICE,
    EMA,
    THREADS,
    Labels,
    Option,
    UsageError,
    add_command,
    check_device,
    check_out_file,
    positive,
    refuse_other_kind,
    resolve,
    seed_range,
)

__all__ = ["OPTIONS", "register", "run"]

OPTIONS = [
    Option(
        "method",
        "heun",
        "sampler (nd.solvers.METHODS, by kind: ndmsolve.sampling_methods())",
        check=method_check(),
    ),
    Option(
        "steps",
        None,
        "steps of a fixed-step or discrete sampler (default 50 unless --rtol)",
        int,
        check=positive,
    ),
    Option(
        "grid_kind",
        None,
        "time grid for --steps: uniform in t, logsnr or karras (default: logsnr for the "
        "multistep samplers, uniform for the others; nd.sampling.default_grid_kind)",
        choices=("uniform", "logsnr", "karras"),
    ),
    Option("rtol", None, "relative tolerance of an adaptive sampler", float, check=positive),
    Option("atol", None, "absolute tolerance (default: rtol)", float, check=positive),
    # --num-samples: torchrun reads "--n" as an abbreviation of its own --nnodes/--nproc-per-node.
    Option(
        "n",
        64,
        "number of samples",
        int,
        check=positive,
        flags=("--num-samples",),
        aliases=("--n",),
    ),
    Option("batch_size", 256, "samples per solve", int, check=positive),
    Option("out", "samples.png", "output PNG (the .npz goes next to it)"),
    Option("seed", 0, "seed of the prior draws (and SDE noise)", int, check=seed_range),
    EMA,
    DEVICE,
    THREADS,
]


def register(sub) -> None:
    p = add_command(
        sub,
        "sample",
        "draw samples from a checkpoint (PNG + .npz, NFE printed)",
        __doc__,
        run,
        OPTIONS,
    )
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint written by ndmsolve")


def check_solver_options(cfg: dict, labels: Labels) -> None:
    """Steps for fixed-step methods, tolerances for adaptive ones; sets the default 50 steps."""
    m = METHODS[cfg["method"]]
    L = labels
    refuse_other_kind(m, labels, fixed_only=("steps", "grid_kind"), adaptive_only=("rtol", "atol"))
    if m.adaptive:
        if cfg["rtol"] is None:
            raise UsageError(f"--method {m.name} is adaptive: give its tolerance with --rtol")
        return
    if cfg["steps"] is None:
        cfg["steps"] = 50
    if cfg["steps"] < m.min_steps:
        raise UsageError(
            f"{L['steps']} must be at least {m.min_steps} for {m.name!r}, got {cfg['steps']}"
        )


def run(args) -> int:
    from ..checkpoint import load_model, read_checkpoint
    from ..distributed import default_device
    from ..sampling import sample

    labels = Labels()
    cfg = resolve(args, OPTIONS, labels=labels)
    check_solver_options(cfg, labels)
    out = check_out_file(cfg["out"], labels["out"], ".png")
    check_device(cfg["device"], labels["device"])
    torch.set_num_threads(cfg["threads"])
    device = torch.device("cpu") if cfg["device"] == "cpu" else default_device()
    state = read_checkpoint(args.checkpoint)
    model = load_model(args.checkpoint, ema=cfg["ema"], map_location=device)
    n_bins = state.get("n_bins")
    shape = tuple(getattr(model, "data_shape", None) or ())
    if not (n_bins is not None and len(shape) == 3) and not (len(shape) == 1 and shape[0] <= 2):
        raise UsageError(
            f"{args.checkpoint}: samples of shape {shape} cannot be plotted "
            "(images or 1-2 dimensional points only)"
        )
    kw = (
        {"steps": cfg["steps"], "grid_kind": cfg["grid_kind"]}
        if cfg["steps"] is not None
        else {"rtol": cfg["rtol"], "atol": cfg["atol"] or cfg["rtol"]}
    )
    g = torch.Generator(device).manual_seed(cfg["seed"])
    chunks, nfe = [], 0
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        for i in range(0, cfg["n"], cfg["batch_size"]):
            s = sample(
                model,
                min(cfg["batch_size"], cfg["n"] - i),
                method=cfg["method"],
                generator=g,
                device=device,
                **kw,
            )
            chunks.append(s.samples.cpu())
            nfe += s.nfe
    except (ValueError, TypeError) as e:  # unknown method, steps for an adaptive one, ...
        raise UsageError(str(e)) from None
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    x = torch.cat(chunks)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "samples": x.numpy(),
        "nfe": np.asarray(nfe),
        "wall_s": np.asarray(wall),
        "cpu_s": np.asarray(cpu),
    }
    title = f"{cfg['method']}, {nfe} NFE"
    from ..io import atomic_write
    from ..viz import image_grid, scatter_samples

    if n_bins is not None and x.ndim == 4:
        from ..data import from_model_range

        arrays["pixels"] = from_model_range(x, n_bins).numpy()
        image_grid(out, x, title=title)
    else:
        scatter_samples(out, {title: x})
    npz = out.with_suffix(".npz")
    atomic_write(npz, lambda f: np.savez(f, **arrays))
    print(
        f"{cfg['n']} samples with {cfg['method']}: NFE {nfe} (in {len(chunks)} solve(s)), "
        f"{cfg['n'] / wall:.1f} samples/s ({cfg['n'] / max(cpu, 1e-9):.1f} per CPU-second); wrote {out} and {npz}",
        flush=True,
    )
    return 0
