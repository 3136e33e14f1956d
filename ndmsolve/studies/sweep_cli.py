"""``ndmsolve sweep``: the NFE-vs-quality sweep from the command line.

    ndmsolve sweep [--model NAME=CHECKPOINT ... --data TOY] [--methods a,b] [--steps 2,4,8]
                   [--tols 1e-2,1e-3] [--seeds 3] [--num-samples 1000] [--metrics energy_distance,...]
                   [--quality q1,q2,q3] [--out DIR]

Without ``--model`` it sweeps the closed-form NDM and DDPM of
``ndmsolve.studies.nfe_sweep.closed_form_models`` (scored against their exact marginals).
Checkpoint models are scored against draws of the toy data set ``--data``. Writes
``sweep.json`` and ``sweep.png`` to ``--out`` and prints the table and, for each quality
level, the method that reaches it with the fewest NFE.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["add_sweep_parser"]


def _list(cast, what: str):
    def parse(text: str) -> list:
        try:
            items = [cast(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what}, got {text!r}"
            ) from None
        if not items:
            raise argparse.ArgumentTypeError(f"expected at least one of {what}, got {text!r}")
        return items

    return parse


def add_sweep_parser(sub) -> None:
    """Register ``sweep`` on an argparse subparsers object."""
    from .nfe_sweep import DEFAULT_STEPS, METRICS

    p = sub.add_parser(
        "sweep",
        help="sample quality against NFE for a grid of samplers, step counts and tolerances",
        description="Sample each model with every method of the grid over several seeds, score "
        "the samples against the truth (exact marginal of closed-form models, or toy data), and "
        "report the metric ± se against NFE, the metric's floor and the fewest-NFE method per "
        "quality level. Writes sweep.json and sweep.png.",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=CHECKPOINT",
        help="a trained model (repeatable); default: the closed-form NDM and DDPM",
    )
    p.add_argument(
        "--data",
        default=None,
        help="toy data set the checkpoint models are scored against (e.g. checkerboard)",
    )
    p.add_argument(
        "--methods",
        type=_list(str, "method names"),
        default=None,
        help="comma-separated methods (default: every registered method but the backends)",
    )
    p.add_argument(
        "--steps",
        dest="step_grid",
        type=_list(int, "step counts"),
        default=list(DEFAULT_STEPS),
        help=f"step counts of fixed-step and discrete methods (default {list(DEFAULT_STEPS)})",
    )
    p.add_argument(
        "--tols",
        type=_list(float, "tolerances"),
        default=None,
        help="tolerances (rtol = atol) of adaptive methods (default: by kind, see "
        "ndmsolve.studies.nfe_sweep.DEFAULT_TOLS)",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..k-1 (default 3, at least 2)")
    # --num-samples: torchrun reads "--n" as an abbreviation of its own --nnodes/--nproc-per-node.
    p.add_argument(
        "--num-samples",
        dest="n",
        type=int,
        default=None,
        help="samples per setting and seed (default 1000)",
    )
    p.add_argument("--n", dest="n_alias", type=int, default=None, help="same as --num-samples")
    p.add_argument(
        "--n-ref", type=int, default=None, help="truth samples scored against (default --n)"
    )
    p.add_argument(
        "--metrics",
        type=_list(str, "metric names"),
        default=["energy_distance", "sliced_wasserstein"],
        help=f"comma-separated, from {list(METRICS)}; the first decides the best method "
        "(default energy_distance,sliced_wasserstein)",
    )
    p.add_argument(
        "--quality",
        type=_list(float, "numbers"),
        default=None,
        help="levels of the first metric to report the best method at (default 10, 3 "
        "and 1.5 times its floor)",
    )
    p.add_argument("--out", default="runs/sweep", help="output folder (default: ./runs/sweep)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.set_defaults(func=_run_sweep)


def _check_values(args) -> str | None:
    """The first bad value, named by its flag (None: all good); fills ``args.n``."""
    import math

    from ..solvers.registry import METHODS, listing
    from .nfe_sweep import METRICS

    if args.n is not None and args.n_alias is not None:
        return "--num-samples and --n are the same option: give one"
    n_flag = "--n" if args.n_alias is not None else "--num-samples"
    args.n = args.n_alias if args.n_alias is not None else (args.n or 1000)
    if args.n < 2:
        return f"{n_flag} must be at least 2, got {args.n}"
    if args.n_ref is not None and args.n_ref < 2:
        return f"--n-ref must be at least 2, got {args.n_ref}"
    if args.seeds < 2:
        return f"--seeds must give at least 2 seeds (for a standard error), got {args.seeds}"
    if any(k < 1 for k in args.step_grid):
        return f"--steps must be positive step counts, got {args.step_grid}"
    for flag, values in (("--tols", args.tols), ("--quality", args.quality)):
        if values is not None and not all(math.isfinite(v) and v > 0 for v in values):
            return f"{flag} must be positive finite numbers, got {values}"
    unknown = [m for m in args.methods or () if m not in METHODS]
    if unknown:
        return f"--methods: unknown method {', '.join(map(repr, unknown))}; registered: {listing()}"
    unknown = [m for m in args.metrics if m not in METRICS]
    if unknown:
        return f"--metrics: unknown metric {', '.join(map(repr, unknown))}; choose from {list(METRICS)}"
    return None


def _run_sweep(args) -> int:
    from .nfe_sweep import closed_form_models, sweep

    def fail(msg: str) -> int:
        print(f"ndmsolve sweep: error: {msg}", file=sys.stderr)
        return 2

    msg = _check_values(args)
    if msg:
        return fail(msg)
    reference = None
    if args.model:
        models = {}
        for spec in args.model:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                return fail(f"--model must be NAME=CHECKPOINT, got {spec!r}")
            models[name] = path
        if args.data is None:
            return fail(
                "--data is needed with --model: the toy data set the samples are scored against"
            )
        from ..data import TOY_DATASETS

        if args.data not in TOY_DATASETS:
            return fail(f"--data must be one of {sorted(TOY_DATASETS)}, got {args.data!r}")
        reference = TOY_DATASETS[args.data]
        for name, path in models.items():
            if not os.path.isfile(path):
                why = (
                    "is a folder, not a checkpoint file" if os.path.isdir(path) else "no such file"
                )
                return fail(f"--model {name}={path}: checkpoint {path!r} {why}")
    else:
        if args.data is not None:
            return fail(
                "--data applies to --model checkpoints; the closed-form models carry their truth"
            )
        models = closed_form_models()
    try:
        res = sweep(
            models,
            args.methods,
            steps=args.step_grid,
            tols=args.tols,
            seeds=args.seeds,
            n=args.n,
            n_ref=args.n_ref,
            metrics=args.metrics,
            reference=reference,
            quality=args.quality,
            out=args.out,
            progress=True,
        )
    except (ValueError, TypeError, FileNotFoundError) as e:
        from ..checkpoint import one_line

        return fail(one_line(e))
    print()
    print(res.summary())
    print(f"\nwrote {args.out}/sweep.json and {args.out}/sweep.png")
    return 0
