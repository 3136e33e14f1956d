"""``ndmsolve sweep``: the NFE-vs-quality sweep from the command line.

    ndmsolve sweep [--model NAME=CHECKPOINT ... [--data TOY [--other-data]]]
                   [--methods a,b] [--recipe SPEC ...] [--recipes FILE.toml]
                   [--steps 2,4,8] [--tols 1e-2,1e-3] [--seeds 3] [--floor-seeds 10]
                   [--num-samples 1000] [--metrics energy_distance,...] [--quality q1,q2,q3]
                   [--out DIR]

Without ``--model`` it sweeps the closed-form NDM and DDPM of
``ndmsolve.studies.nfe_sweep.closed_form_models`` (scored against their exact marginals).
Checkpoint models are scored against draws of the toy data set they were trained on (as
``ndmsolve train`` records it); ``--data`` must name that set, or, with ``--other-data``,
any toy set. A recipe (``--recipe``, repeatable, or a TOML file of ``[[recipe]]`` tables)
is a method with its ``nd.sample`` options, e.g.
``--recipe unipc_2m:grid_kind=logsnr,sigma_min=0.12,denoise=true`` (see
``ndmsolve.studies.recipes``). Writes ``sweep.json`` and ``sweep.png`` to ``--out`` and
prints the table and, for each quality level, the method that reaches it with the fewest NFE.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "run"]


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


def register(sub) -> None:
    """Register ``sweep`` on an argparse subparsers object."""
    p = sub.add_parser(
        "sweep",
        help="sample quality against NFE for a grid of samplers, step counts and tolerances",
        description="Sample each model with every method of the grid over several seeds, score "
        "the samples against the truth (exact marginal of closed-form models, or toy data), and "
        "report the metric ± se against NFE, the metric's floor and the fewest-NFE method per "
        "quality level. Writes sweep.json and sweep.png.",
    )
    _add_model_arguments(p)
    _add_grid_arguments(p)
    p.add_argument("--out", default="runs/sweep", help="output folder (default: ./runs/sweep)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.set_defaults(func=run)


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    """What is swept: the models, the data they are scored against, the methods."""
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
        help="toy data set the checkpoint models are scored against (default: the one each "
        "was trained on, as recorded in the checkpoint; another is an error without "
        "--other-data)",
    )
    p.add_argument(
        "--other-data",
        action="store_true",
        help="score the checkpoint models against --data although they were trained on "
        "other data (or their checkpoint does not record it)",
    )
    p.add_argument(
        "--methods",
        type=_list(str, "method names"),
        default=None,
        help="comma-separated method names (default: every registered method but the "
        "backends, or none when --recipe/--recipes are given)",
    )
    p.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="SPEC",
        help="a method with its sample options, METHOD:key=value,... (repeatable), e.g. "
        "unipc_2m:grid_kind=logsnr,sigma_min=0.12,denoise=true; keys: grid_kind, "
        "sigma_min or t_min, denoise, eta and the method's options (lower_order_final, "
        "extrapolate, ...)",
    )
    p.add_argument(
        "--recipes",
        default=None,
        metavar="FILE",
        help="a TOML file of [[recipe]] tables (method = ..., options, optional name and "
        "steps/tols), run with --recipe's",
    )


def _add_grid_arguments(p: argparse.ArgumentParser) -> None:
    """How it is swept: step counts, tolerances, seeds, sample sizes, metrics."""
    from ..studies.nfe_sweep import (
        DEFAULT_FLOOR_MULTIPLES,
        DEFAULT_FLOOR_SEEDS,
        DEFAULT_STEPS,
        METRICS,
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
    p.add_argument(
        "--floor-seeds",
        type=int,
        default=DEFAULT_FLOOR_SEEDS,
        help=f"seeds of each metric's floor, reported as mean ± se (default "
        f"{DEFAULT_FLOOR_SEEDS}, at least 2)",
    )
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
        help="levels of the first metric to report the best method at (default "
        + ", ".join(f"{k:g}" for k in DEFAULT_FLOOR_MULTIPLES)
        + " times its floor)",
    )


def _check_values(args) -> str | None:
    """The first bad value, named by its flag (None: all good); fills ``args.n``."""
    import math

    from ..solvers.registry import METHODS, listing
    from ..studies.nfe_sweep import METRICS

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
    if args.floor_seeds < 2:
        return f"--floor-seeds must be at least 2 (for a standard error), got {args.floor_seeds}"
    if any(k < 1 for k in args.step_grid):
        return f"--steps must be positive step counts, got {args.step_grid}"
    for flag, values in (("--tols", args.tols), ("--quality", args.quality)):
        if values is not None and not all(math.isfinite(v) and v > 0 for v in values):
            return f"{flag} must be positive finite numbers, got {values}"
    recipes = [m for m in args.methods or () if "=" in m]
    if recipes:
        return f"--methods takes plain names; give {recipes[0]!r} as --recipe SPEC"
    unknown = [m for m in args.methods or () if m not in METHODS]
    if unknown:
        return f"--methods: unknown method {', '.join(map(repr, unknown))}; registered: {listing()}"
    unknown = [m for m in args.metrics if m not in METRICS]
    if unknown:
        return f"--metrics: unknown metric {', '.join(map(repr, unknown))}; choose from {list(METRICS)}"
    return None


def run(args) -> int:
    """Run the sweep of ``args`` (the parsed flags); returns the exit code."""
    from ..studies.nfe_sweep import closed_form_models, sweep

    def fail(msg: str) -> int:
        print(f"ndmsolve sweep: error: {msg}", file=sys.stderr)
        return 2

    msg = _check_values(args)
    if msg:
        return fail(msg)
    try:
        methods = _methods(args)
        if args.model:
            models, reference = _checkpoint_models(args)
        else:
            if args.data is not None or args.other_data:
                return fail(
                    "--data applies to --model checkpoints; the closed-form models carry their truth"
                )
            models, reference = closed_form_models(), None
        res = sweep(
            models,
            methods,
            steps=args.step_grid,
            tols=args.tols,
            seeds=args.seeds,
            floor_seeds=args.floor_seeds,
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


def _methods(args):
    """None (every method), or {name or recipe: its own settings, None for the shared}."""
    from ..studies.recipes import load_recipes, parse_recipe

    for m in args.methods or []:
        if "=" in m:
            raise ValueError(f"--methods takes plain names; give {m!r} as --recipe SPEC")
    recipes = []
    for spec in args.recipe:
        try:
            recipes.append((parse_recipe(spec), None))
        except ValueError as e:
            raise ValueError(f"--recipe: {e}") from None
    if args.recipes:
        try:
            recipes += [(r, s.get("steps", s.get("tols"))) for r, s in load_recipes(args.recipes)]
        except ValueError as e:
            raise ValueError(f"--recipes: {e}") from None
    if not recipes:
        return args.methods
    out = {m: None for m in args.methods or []}
    for r, settings in recipes:
        if r.name in out:
            raise ValueError(f"--recipe/--recipes: {r.name!r} given twice")
        out[r] = settings
    return out


def _checkpoint_models(args):
    """{name: path} and the toy-data sampler, after checking --data against the checkpoints."""
    from ..checkpoint import read_checkpoint
    from ..data import TOY_DATASETS

    if args.data is not None and args.data not in TOY_DATASETS:
        raise ValueError(f"--data must be one of {sorted(TOY_DATASETS)}, got {args.data!r}")
    models, trained_on = {}, {}
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--model must be NAME=CHECKPOINT, got {spec!r}")
        models[name] = path
        trained_on[name] = read_checkpoint(path).get("data")
    data = args.data
    if data is None:
        known = set(trained_on.values())
        if None in known or len(known) != 1:
            raise ValueError(
                "--data is needed with --model: the checkpoints record "
                f"{ {k: v for k, v in trained_on.items()} } as their training data"
            )
        data = known.pop()
    elif not args.other_data:
        other = {k: v for k, v in trained_on.items() if v != data}
        if other:
            raise ValueError(
                f"--data {data!r} is not the data the models were trained on ({other}; "
                "None: not recorded); pass --other-data to score against it anyway"
            )
    if data not in TOY_DATASETS:
        raise ValueError(
            f"the checkpoints were trained on {data!r}, not a toy data set the sweep can "
            f"draw ({sorted(TOY_DATASETS)})"
        )
    return models, TOY_DATASETS[data]
