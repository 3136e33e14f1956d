"""``ndmsolve train``: train an NDM (or a DDPM: F = identity) on images or toy points.

    ndmsolve train --data digits --model ndm --steps 2000 --out runs/ndm [--config FILE.toml]
    torchrun --nproc_per_node 2 -m ndmsolve train --data digits ...   # DDP, gloo or NCCL

Writes to ``--out``: ``checkpoint.pt`` (``ndmsolve.checkpoint`` format; ``--resume``
continues it bit-exactly), ``loss.png``, ``samples.png`` (images) or ``samples_scatter.png``
(toys), ``train_log.json`` (losses, images/s, wall clock).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from pathlib import Path

import torch

from .._guard import TrainingInterrupted
from ..checkpoint import CheckpointWriteError
from .options import (
    THREADS,
    Labels,
    Option,
    UsageError,
    add_command,
    check_device,
    ints,
    lock_out,
    non_negative,
    positive,
    resolve,
    seed_range,
)

__all__ = ["OPTIONS", "register", "run"]


def _mults(v) -> str | None:
    return None if v and all(m >= 1 for m in v) else "must be a non-empty list of positive integers"


OPTIONS = [
    Option(
        "data", None, "digits, mnist, cifar10, png:DIR or a toy set (checkerboard, two_moons, ...)"
    ),
    Option("data_root", None, "folder holding MNIST's idx files or CIFAR-10's python batches"),
    Option(
        "model",
        "ndm",
        "ndm: learned F(x,t) = x + t·UNet(x,t); ddpm: F = identity",
        choices=("ndm", "ddpm"),
    ),
    Option("steps", 2000, "optimisation steps", int, check=positive),
    Option("out", "runs/train", "output folder"),
    Option(
        "seed", 0, "seed of the weights, the batches and the loss's noise", int, check=seed_range
    ),
    Option(
        "batch_size",
        128,
        "global batch size (split over processes and micro-batches)",
        int,
        check=positive,
    ),
    Option(
        "microbatches",
        None,
        "micro-batches per step, each with its own noise stream (default: the number of processes)",
        int,
        check=positive,
    ),
    Option(
        "data_order",
        "random",
        "batches: random (indices drawn with replacement) or epoch (each point once per epoch)",
        choices=("random", "epoch"),
    ),
    Option("lr", 1e-3, "Adam learning rate (the peak one under a schedule)", float, check=positive),
    Option("lr_schedule", "constant", "learning rate over the run", choices=("constant", "cosine")),
    Option("warmup_steps", 0, "linear learning-rate warm-up steps", int, check=non_negative),
    Option(
        "ema_decay",
        0.999,
        "EMA decay (with warm-up)",
        float,
        check=lambda v: None if 0 <= v < 1 else "must lie in [0, 1)",
    ),
    Option("grad_clip", 1.0, "max gradient norm (0: no clipping)", float, check=non_negative),
    Option(
        "predictor",
        "eps",
        "predictor parametrisation: eps (noise) or data (x directly)",
        choices=("eps", "data"),
    ),
    Option("schedule", "linear", "log-SNR schedule", choices=("linear", "cosine", "learned")),
    Option("logsnr_min", -10.0, "log-SNR at t = 1", float),
    Option("logsnr_max", 10.0, "log-SNR at t = 0", float),
    Option("base", 32, "U-Net channels at the first level", int, check=positive),
    Option("mults", (1, 2, 2), "U-Net channel multipliers, one per level", ints, check=_mults),
    Option("num_res_blocks", 1, "U-Net residual blocks per level", int, check=positive),
    Option(
        "attn_levels",
        (1,),
        "U-Net levels with self-attention (0 = full resolution)",
        ints,
        check=lambda v: None if all(lv >= 0 for lv in v) else "must be non-negative levels",
    ),
    Option("mid_attn", True, "self-attention in the U-Net's middle", bool),
    Option("attn_heads", 1, "attention heads", int, check=positive),
    Option(
        "dropout",
        0.0,
        "dropout in the residual blocks",
        float,
        check=lambda v: None if 0 <= v < 1 else "must lie in [0, 1)",
    ),
    Option(
        "time_dim",
        64,
        "time-embedding width",
        int,
        check=lambda v: None if v >= 2 and v % 2 == 0 else "must be an even integer >= 2",
    ),
    Option("transform_base", 16, "channels of the transform's U-Net (ndm)", int, check=positive),
    Option(
        "transform_mults",
        (1, 2),
        "channel multipliers of the transform's U-Net",
        ints,
        check=_mults,
    ),
    Option("hidden", 128, "MLP width of the predictor (toy data)", int, check=positive),
    Option("transform_hidden", 64, "MLP width of the transform (toy data)", int, check=positive),
    Option("depth", 3, "MLP depth (toy data)", int, check=positive),
    Option("checkpoint_every", 500, "steps between checkpoints", int, check=positive),
    Option("log_every", 50, "steps between log lines", int, check=positive),
    Option("n_grid", 64, "samples in the final sample grid (0: none)", int, check=non_negative),
    Option("grid_steps", 50, "Heun steps for the sample grid", int, check=positive),
    Option("amp", "none", "autocast dtype for the loss (GPU)", choices=("none", "bf16", "fp16")),
    Option("compile", False, "torch.compile the loss", bool),
    Option(
        "device",
        "auto",
        "auto (cuda:LOCAL_RANK when present), cpu or cuda",
        choices=("auto", "cpu", "cuda"),
    ),
    THREADS,
    Option(
        "max_bad_steps",
        3,
        "a step with a NaN/inf loss or gradient is skipped (weights, optimizer, EMA "
        "untouched); this many in a row stop training with the step named",
        int,
        check=positive,
    ),
    Option(
        "max_loss_ratio",
        None,
        "divergence guard (default: off): stop when a step's loss exceeds the lowest "
        "10-step mean loss ref by more than this times max(|ref|, 1)",
        float,
        check=lambda v: None if 0 < v < float("inf") else "must be positive and finite",
    ),
    Option(
        "dist_timeout",
        None,
        "seconds a torchrun process waits for the others before it stops with an error "
        "(default: 120 on CPU/gloo, PyTorch's default on NCCL)",
        float,
        check=lambda v: None if 0 < v < float("inf") else "must be positive and finite",
    ),
    Option(
        "progress",
        None,
        "progress bar: --progress always, --no-progress never; unset: only when "
        "stderr is a terminal (else one summary line)",
        bool,
    ),
]
# Options of the U-Net (image data only).
IMAGE_ONLY = (
    "base",
    "mults",
    "num_res_blocks",
    "attn_levels",
    "mid_attn",
    "attn_heads",
    "dropout",
    "time_dim",
    "transform_base",
    "transform_mults",
)
# Options that may differ when a run is resumed.
RESUMABLE = {
    "steps",
    "out",
    "checkpoint_every",
    "log_every",
    "n_grid",
    "grid_steps",
    "progress",
    "threads",
    "device",
    "data_root",
    "compile",
    "max_bad_steps",
    "max_loss_ratio",
    "dist_timeout",
}


def register(sub) -> None:
    add_command(
        sub,
        "train",
        "train an NDM or a DDPM on images or toy data",
        __doc__,
        run,
        OPTIONS,
        before=_add_run_flags,
    )


def _add_run_flags(p) -> None:
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE.toml",
        help="TOML file of options (keys as the long flags with _); flags override it (default: none)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue OUT/checkpoint.pt (default: start afresh)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh over an existing OUT/checkpoint.pt, replacing it (default: refuse)",
    )


def _device(cfg: dict) -> torch.device:
    from ..distributed import default_device

    if cfg["device"] == "cpu":
        return torch.device("cpu")
    check_device(cfg["device"], "--device")
    return default_device()


def _rank_from_env() -> int:
    # torchrun's RANK: the process group is not started yet when the folder is locked.
    return int(os.environ.get("RANK", "0"))


def _world_size() -> int:
    """The process count torchrun set (the process group starts later)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def check_options(cfg: dict, labels: Labels) -> None:
    """Options that contradict each other: refused before anything is loaded."""
    L = labels
    if not cfg["logsnr_min"] < cfg["logsnr_max"]:
        raise UsageError(
            f"{L['logsnr_min']} ({cfg['logsnr_min']:g}) must be below {L['logsnr_max']} "
            f"({cfg['logsnr_max']:g}): the log-SNR falls from t = 0 to t = 1"
        )
    world = _world_size()
    k = cfg["microbatches"] if cfg["microbatches"] is not None else world
    if cfg["microbatches"] is not None and k % world:
        raise UsageError(
            f"{L['microbatches']} ({k}) must be a multiple of the number of processes ({world})"
        )
    if cfg["batch_size"] % k:
        by = L["microbatches"] if cfg["microbatches"] is not None else "the number of processes"
        raise UsageError(f"{L['batch_size']} ({cfg['batch_size']}) must be divisible by {by} ({k})")
    if cfg["warmup_steps"] > cfg["steps"]:
        raise UsageError(
            f"{L['warmup_steps']} ({cfg['warmup_steps']}) must not exceed {L['steps']} "
            f"({cfg['steps']}): the learning rate would never reach --lr"
        )
    if "data_root" in L.given and cfg["data"] not in ("mnist", "cifar10"):
        raise UsageError(f"{L['data_root']} applies to mnist and cifar10 only, not {cfg['data']!r}")
    on_cpu = cfg["device"] == "cpu" or not torch.cuda.is_available()
    if cfg["amp"] == "fp16" and on_cpu:
        raise UsageError(
            f"{L['amp']} fp16 needs a CUDA device (autocast on the CPU has no fp16): "
            "use --amp bf16, or a GPU"
        )


def _unet_errors(cfg: dict, prefix: str, hw: tuple) -> str | None:
    mults = cfg[f"{prefix}mults"]
    factor = 2 ** (len(mults) - 1)
    if hw[0] % factor or hw[1] % factor:
        return (
            f"({','.join(map(str, mults))}) has {len(mults)} levels for {hw[0]}x{hw[1]} images: "
            f"each level after the first halves the resolution, so H and W must be divisible "
            f"by {factor}"
        )
    return None


def check_data_options(cfg: dict, labels: Labels, shape: tuple, image: bool) -> None:
    """Options that must fit the data's ``shape`` (C, H, W) or (d,): before the model is built."""
    L = labels
    kind, other = (
        ("image", ("hidden", "transform_hidden", "depth")) if image else ("toy", IMAGE_ONLY)
    )
    unused = [n for n in other if n in L.given]
    if unused:
        raise UsageError(
            f"{', '.join(L[n] for n in unused)} do(es) not apply to {kind} data "
            f"{cfg['data']!r}: remove it"
        )
    if not image:
        return
    for prefix in ("", "transform_"):
        msg = _unet_errors(cfg, prefix, shape[1:])
        if msg:
            raise UsageError(f"{L[prefix + 'mults']} {msg}")
    levels = len(cfg["mults"])
    bad = [lv for lv in cfg["attn_levels"] if not 0 <= lv < levels]
    if bad:
        raise UsageError(
            f"{L['attn_levels']} {bad} out of range: --mults gives {levels} levels, 0..{levels - 1}"
        )
    widths = [cfg["base"] * cfg["mults"][lv] for lv in cfg["attn_levels"]]
    widths += [cfg["base"] * cfg["mults"][-1]] if cfg["mid_attn"] else []
    if any(w % cfg["attn_heads"] for w in widths):
        raise UsageError(
            f"{L['attn_heads']} ({cfg['attn_heads']}) must divide the attended widths "
            f"{sorted(set(widths))} (--base times --mults)"
        )


def run(args) -> int:
    from .. import distributed as ddist
    from ..train import TrainingStopped

    labels = Labels()
    cfg = resolve(args, OPTIONS, args.config, labels)
    if cfg["data"] is None:
        raise UsageError("--data is required (digits, mnist, cifar10, png:DIR or a toy set)")
    check_options(cfg, labels)
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other: continue or replace")
    out = Path(cfg["out"])
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file; expected a folder (created if missing)")
    with contextlib.ExitStack() as held:
        lock_out(held, out, enabled=_rank_from_env() == 0)
        try:
            return _run(args, cfg, out, labels)
        except TrainingInterrupted as e:
            if _rank_from_env() == 0:
                print(f"ndmsolve train: {e.message('--resume')}", file=sys.stderr, flush=True)
            return e.exit_code
        except CheckpointWriteError as e:
            print(f"ndmsolve train: error: {e}", file=sys.stderr, flush=True)
            return 1
        except (TrainingStopped, RuntimeError) as e:
            # a stopped run or a lost rank: one line, exit 1
            line = str(e) if isinstance(e, TrainingStopped) else ddist.describe_timeout(e)
            if line is None:
                raise
            print(f"ndmsolve train: error: {line.splitlines()[0]}", file=sys.stderr, flush=True)
            return 1


def _check_resume(args, cfg: dict, ckpt: Path, labels) -> bool:
    """Check ``--resume``/``--overwrite`` against ``ckpt``; False when the checkpoint is
    already at ``--steps`` (nothing to do)."""
    from ..checkpoint import read_checkpoint

    if not args.resume:
        if ckpt.exists() and not args.overwrite:
            raise UsageError(
                f"{ckpt} exists: pass --resume to continue it or --overwrite to replace it"
            )
        return True
    if not ckpt.is_file():
        raise UsageError(f"--resume: no checkpoint at {ckpt}")
    state = read_checkpoint(ckpt)
    done = int(state.get("step", 0))
    if cfg["steps"] < done:
        raise UsageError(
            f"--steps {cfg['steps']} is below the step of {ckpt} ({done}); "
            f"--resume needs --steps >= {done}"
        )
    stored = state.get("train_config") or {}
    changed = sorted(k for k in cfg if k not in RESUMABLE and k in stored and stored[k] != cfg[k])
    if changed:
        raise UsageError(
            f"--resume: {ckpt} was trained with different "
            + ", ".join(f"{labels[k]} ({stored[k]!r})" for k in changed)
            + "; pass the same values"
        )
    return cfg["steps"] > done


def _run(args, cfg: dict, out: Path, labels) -> int:
    from .. import distributed as ddist
    from ..data.sets import load_dataset
    from .models import build_model

    torch.set_num_threads(cfg["threads"])
    ckpt = out / "checkpoint.pt"
    if not _check_resume(args, cfg, ckpt, labels):
        if _rank_from_env() == 0:
            print(
                f"ndmsolve train: {ckpt} is already at step {cfg['steps']}: nothing to train "
                f"(raise --steps to continue)",
                flush=True,
            )
        return 0
    ddist.init_from_env(timeout=ddist.train_timeout(cfg["dist_timeout"]))
    rank = ddist.rank()
    try:
        ds = load_dataset(cfg["data"], "train", root=cfg["data_root"], seed=cfg["seed"])
    except (ValueError, OSError) as e:
        raise UsageError(f"{labels['data']} {cfg['data']!r}: {e}") from None
    check_data_options(cfg, labels, ds.shape, ds.is_image)
    device = _device(cfg)
    model = build_model(cfg, ds.shape, ds.is_image, cfg["seed"]).to(device)
    x = ds.model_range().to(device)
    if rank == 0:
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"ndmsolve train: {cfg['model']} on {cfg['data']} {tuple(x.shape)}, {n_params} parameters, "
            f"{cfg['steps']} steps x batch {cfg['batch_size']}, {ddist.world_size()} process(es), "
            f"device {device}, output in {out}/",
            flush=True,
        )
    t0, c0 = time.perf_counter(), time.process_time()
    res, log = _fit(args, cfg, model, x, ds, ckpt)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if rank != 0:
        return 0
    _report(cfg, out, ds, res, log, dict(wall_s=wall, cpu_s=cpu, device=device))
    return 0


def _fit(args, cfg: dict, model, x: torch.Tensor, ds, ckpt: Path):
    """``nd.train`` of ``model`` on ``x`` (N, ...) with the options ``cfg``, checkpointing
    to ``ckpt``; returns its result and the log lines (step, loss, images/s)."""
    from ..objectives import continuous_loss
    from ..train import train

    loss = (
        functools.partial(continuous_loss, decoder="discretized", n_bins=ds.n_bins)
        if ds.is_image
        else "continuous"
    )
    log = []
    res = train(
        model,
        x,
        steps=cfg["steps"],
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        lr_schedule=cfg["lr_schedule"],
        warmup_steps=cfg["warmup_steps"],
        ema_decay=cfg["ema_decay"],
        grad_clip=cfg["grad_clip"] or None,
        generator=cfg["seed"],
        loss=loss,
        progress="auto" if cfg["progress"] is None else cfg["progress"],
        log_every=cfg["log_every"],
        checkpoint=ckpt,
        checkpoint_every=cfg["checkpoint_every"],
        resume=args.resume,
        overwrite=args.overwrite,
        microbatches=cfg["microbatches"],
        amp=None if cfg["amp"] == "none" else cfg["amp"],
        compile=cfg["compile"],
        extra={"train_config": cfg, "data": cfg["data"], "n_bins": ds.n_bins},
        on_log=lambda s, v, ips: log.append({"step": s, "loss": v, "images_per_s": ips}),
        data_order=cfg["data_order"],
        max_bad_steps=cfg["max_bad_steps"],
        max_loss_ratio=cfg["max_loss_ratio"],
    )
    return res, log


def _report(cfg: dict, out: Path, ds, res, log: list, run: dict) -> None:
    """The run's outputs in ``out``: the loss curve, a sample grid (``--n-grid``) and
    ``train_log.json``; ``run``: wall_s, cpu_s and the device."""
    from .. import distributed as ddist
    from ..io import atomic_write
    from ..viz import loss_curve

    device = run["device"]
    loss_curve(out / "loss.png", res.losses, title=f"{cfg['model']} on {cfg['data']}")
    ips = [r["images_per_s"] for r in log[1:]] or [r["images_per_s"] for r in log]
    summary = {
        "steps": cfg["steps"],
        "wall_s": run["wall_s"],
        # This process's CPU time: the cost of the run on a shared machine, where wall time
        # depends on the load.
        "cpu_s": run["cpu_s"],
        "threads": cfg["threads"],
        "final_loss": sum(res.losses[-50:]) / max(1, len(res.losses[-50:])),
        "images_per_s": sum(ips) / len(ips) if ips else None,
        "log": log,
        "losses": res.losses,
        "config": cfg,
        "device": str(device),
        "processes": ddist.world_size(),
    }
    if cfg["n_grid"]:
        from ..sampling import sample

        s = sample(
            res.ema_model,
            cfg["n_grid"],
            method="heun",
            steps=cfg["grid_steps"],
            generator=torch.Generator(device).manual_seed(cfg["seed"] + 1),
            device=device,
        )
        summary["grid_nfe"] = s.nfe
        _plot_samples(out, s.samples, ds, f"{cfg['model']}, {cfg['steps']} steps, heun {s.nfe} NFE")
    atomic_write(out / "train_log.json", lambda f: json.dump(summary, f, indent=1), binary=False)
    print(
        f"trained {cfg['steps']} steps in {run['wall_s']:.1f} s; final loss "
        f"{summary['final_loss']:.4f}; checkpoint {out / 'checkpoint.pt'}",
        flush=True,
    )


def _plot_samples(out: Path, samples: torch.Tensor, ds, title: str) -> Path:
    from ..viz import image_grid, scatter_samples

    if ds.is_image:
        return image_grid(out / "samples.png", samples.cpu(), title=title)
    return scatter_samples(out / "samples_scatter.png", {"data": ds.x[:2000], title: samples.cpu()})
