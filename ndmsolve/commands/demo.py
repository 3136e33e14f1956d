"""``ndmsolve demo``: an NDM against a DDPM on the 2D checkerboard.

    ndmsolve demo [--steps N] [--quick] [--out DIR]

``demo`` trains a small NDM (learned transform F(x, t) = x + t·MLP(x, t)) and a DDPM/VDM
baseline (F = identity) on the 2D checkerboard with the same predictor, steps and seed,
then reports both models' negative ELBO on held-out data and, when the sampling module is
available, plots samples from both.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import torch

from .options import UsageError, lock_out

__all__ = ["DEMO", "QUICK", "demo_models", "register", "run"]

# How these settings were chosen (measured ablations): docs/results/demo.md.
DEMO = dict(
    steps=5000,
    batch_size=1024,
    hidden=128,
    x_features=32,
    x_scale=1.0,
    lr=8e-3,
    lr_schedule="cosine",
    warmup_steps=100,
    n_eval=2000,
    eval_draws=200,
    n_samples=2000,
    sample_steps=50,
    n_paths=48,
)
QUICK = dict(
    steps=80,
    batch_size=128,
    hidden=32,
    x_features=0,  # 80 steps cannot use them (measured: 11.4 vs 6.3 nats)
    x_scale=1.0,
    lr=2e-3,
    lr_schedule="cosine",
    warmup_steps=10,
    n_eval=500,
    eval_draws=10,
    n_samples=300,
    sample_steps=8,
    n_paths=16,
)


def demo_models(hidden: int, x_features: int = 0, x_scale: float = 1.0) -> list:
    """The demo's two untrained models for 2D points, ``[ndm, ddpm]`` (float32 ``nd.NDM``,
    data shape (2,)): ε-parametrised MLP predictors of width ``hidden`` (``x_features``
    random Fourier features of scale ``x_scale``) on ``LinearLogSNR(-12, 12)``; the NDM with
    a residual MLP transform of width ``hidden // 2``, the DDPM with F the identity."""
    import ndmsolve as nd

    from ..fields import MLP, EpsilonPredictor

    # Same seed → the two predictors start from identical weights; the NDM transform starts
    # at the identity (zero_init), so both models begin as the same classical diffusion.
    # ε-parametrised predictors: the ELBO's e^λ weight near t = 0 makes x-prediction slow.
    models = []
    for learned in (True, False):
        torch.manual_seed(0)
        sched = nd.LinearLogSNR(-12.0, 12.0)
        net = MLP(2, hidden=hidden, depth=3, x_features=x_features, x_scale=x_scale)
        predictor = EpsilonPredictor(net, sched)
        transform = (
            nd.ResidualTransform(MLP(2, hidden=hidden // 2, depth=2, zero_init=True))
            if learned
            else None
        )
        models.append(
            nd.NDM(predictor, transform=transform, schedule=sched, data_shape=(2,)).float()
        )
    return models


def register(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="train an NDM and a DDPM on the 2D checkerboard and compare their negative ELBO",
        description="Train a small NDM (learned transform) and a DDPM (identity transform) on the 2D "
        "checkerboard for the same number of steps; print both held-out negative ELBOs and plot samples.",
    )
    demo.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"training steps per model (default {DEMO['steps']}, or {QUICK['steps']} with --quick)",
    )
    demo.add_argument(
        "--quick", action="store_true", help="a ~10 s version with small networks (for tests)"
    )
    demo.add_argument("--out", default="runs/demo", help="output folder (default: ./runs/demo)")
    demo.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    demo.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: fastest for these small networks)",
    )
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    demo.set_defaults(func=run)


def run(args) -> int:
    """Run the demo of ``args`` (the parsed flags); returns the exit code."""
    from .._guard import TrainingInterrupted
    from ..checkpoint import CheckpointWriteError

    cfg = dict(QUICK if args.quick else DEMO)
    if args.steps is not None:
        cfg["steps"] = args.steps
    out = Path(args.out)
    try:
        if args.seed < 0:
            raise UsageError(f"--seed must be non-negative, got {args.seed}")
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {str(out)!r} is a file; expected a folder")
        with contextlib.ExitStack() as held:
            lock_out(held, out)
            try:
                return _demo_in(args, cfg, out)
            except CheckpointWriteError as e:
                print(f"ndmsolve demo: error: {e}", file=sys.stderr)
                return 1
            except TrainingInterrupted as e:
                print(f"ndmsolve demo: {e.message(None)}", file=sys.stderr)
                return e.exit_code
    except UsageError as e:
        print(f"ndmsolve demo: error: {e}", file=sys.stderr)
        return 2


def _demo_in(args, cfg: dict, out: Path) -> int:
    from ..data import checkerboard
    from ..metrics import mean_se

    print(
        f"ndmsolve demo: 2D checkerboard, {cfg['steps']} steps x batch {cfg['batch_size']} per model, "
        f"seed {args.seed}, output in {out}/",
        flush=True,
    )
    g_data = torch.Generator().manual_seed(args.seed)
    train_x = checkerboard(50_000, g_data)
    test_x = checkerboard(cfg["n_eval"], g_data)  # same stream, later draws: disjoint from training
    results = _train_both(args, cfg, out, train_x, test_x)

    d = train_x.shape[1]
    print(
        f"\nHeld-out negative ELBO ({cfg['n_eval']} points x {cfg['eval_draws']} draws of t; lower is better):"
    )
    for name, r in results.items():
        print(
            f"{name:<5} negative ELBO: {r['nelbo']:.4f} ± {r['se']:.4f} nats "
            f"({r['nelbo'] / d:.4f} nats/dim)"
        )
    diff, diff_se = mean_se(results["NDM"]["per_point"] - results["DDPM"]["per_point"])
    print(f"NDM − DDPM: {diff:+.4f} ± {diff_se:.4f} nats (paired: same points and draws)")

    summary = {
        k: {kk: vv for kk, vv in v.items() if kk not in ("model", "per_point")}
        for k, v in results.items()
    }
    summary["NDM_minus_DDPM"] = dict(nelbo=diff, se=diff_se)
    summary["config"] = dict(cfg, seed=args.seed, dims=d)
    try:
        from ..sampling import sample
    except ImportError as e:
        print(f"\nSampling is unavailable ({e}); no plot written.")
    else:
        _sample_and_plot(sample, args, cfg, out, results, test_x, summary)
    _write_json(out / "results.json", summary)
    return 0


def _train_both(args, cfg: dict, out: Path, train_x, test_x) -> dict:
    """Train the NDM and the DDPM on ``train_x`` (N, 2) and score each on ``test_x``:
    {name: model, per-point negative ELBO, its mean ± se, times, final loss}."""
    from ..metrics import mean_se
    from ..objectives import held_out_nelbo
    from ..time_proposal import AdaptiveTimeProposal
    from ..train import train

    ndm, ddpm = demo_models(cfg["hidden"], cfg["x_features"], cfg["x_scale"])
    results = {}
    for name, model in (("NDM", ndm), ("DDPM", ddpm)):
        t0 = time.perf_counter()
        res = train(
            model,
            train_x,
            steps=cfg["steps"],
            batch_size=cfg["batch_size"],
            lr=cfg["lr"],
            lr_schedule=cfg["lr_schedule"],
            warmup_steps=cfg["warmup_steps"],
            time_proposal=AdaptiveTimeProposal(),
            generator=torch.Generator().manual_seed(args.seed + 1),
            progress=not args.no_progress and sys.stderr.isatty(),  # else the line below
            log_every=50,
            checkpoint=out / f"{name.lower()}.pt",
            overwrite=True,  # a demo run replaces the previous one's files
        )
        train_s = time.perf_counter() - t0
        # Same seed for both models: the same (t, ε) draws, so their difference is paired.
        per_point = held_out_nelbo(
            res.ema_model, test_x, cfg["eval_draws"], torch.Generator().manual_seed(args.seed + 2)
        )
        nelbo, se = mean_se(per_point)
        results[name] = dict(
            model=res.ema_model,
            per_point=per_point,
            nelbo=nelbo,
            se=se,
            train_s=train_s,
            final_train_loss=sum(res.losses[-50:]) / len(res.losses[-50:]),
        )
        print(
            f"  trained {name} in {train_s:.1f} s, final training loss "
            f"{results[name]['final_train_loss']:.4f} nats",
            flush=True,
        )
    return results


def _sample_and_plot(sample, args, cfg: dict, out: Path, results, test_x, summary) -> None:
    """Heun samples (by ``sample``, i.e. ``nd.sample``) of each trained model: the fraction
    on the board's dark squares (into ``summary``) and a scatter plot with PF-ODE paths,
    ``out/samples.png``."""
    from ..analytic import UniformBoxes
    from ..metrics import mean_se
    from ..viz import scatter_samples

    board = UniformBoxes.checkerboard()
    panels, paths = {"data": test_x}, {}
    for name, r in results.items():
        t0 = time.perf_counter()
        s = sample(
            r["model"],
            cfg["n_samples"],
            method="heun",
            steps=cfg["sample_steps"],
            generator=torch.Generator().manual_seed(args.seed + 3),
            return_path=True,
        )
        panel = f"{name} (heun, {s.nfe} NFE)"
        panels[panel], paths[panel] = s.samples, s.path[:, : cfg["n_paths"]]
        summary[name]["sample_s"] = time.perf_counter() - t0
        on = board.contains(s.samples).to(torch.float64)
        summary[name]["on_board"], summary[name]["on_board_se"] = mean_se(on)
    print(
        f"\nSamples on the dark squares ({cfg['n_samples']} heun samples; data: 1): "
        + ", ".join(
            f"{n} {summary[n]['on_board']:.3f} ± {summary[n]['on_board_se']:.3f}" for n in results
        )
    )
    png = scatter_samples(
        out / "samples.png",
        panels,
        lim=4.5,
        trajectories=paths,
        title=f"checkerboard: data vs samples after {cfg['steps']} training steps "
        f"(lines: {cfg['n_paths']} PF-ODE paths from t = 1, circles)",
    )
    print(f"\nSamples plotted to {png}")


def _write_json(path: Path, obj) -> None:
    from ..io import atomic_write

    atomic_write(path, lambda f: json.dump(obj, f, indent=2), binary=False)
