"""``ndmsolve likelihood``: test-set likelihood of a checkpoint, ODE and ELBO.

    ndmsolve likelihood runs/ndm/checkpoint.pt --split test --trace hutchinson --probes 4

Images: bits/dim of the PF-ODE density with uniform dequantisation
(``ndmsolve.bits_per_dim``, the data's own number of grey levels) and of the negative ELBO
(``elbo_bits_per_dim``, discretised decoder). Toys: nats/dim of both. Mean ± standard
error over the points, NFE, written as JSON. Under torchrun the points are sharded over
the processes (fixed batches, each with its own seed, so the numbers do not depend on the
number of processes) and the sums all-reduced at the end.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

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

__all__ = ["OPTIONS", "register", "run", "evaluate"]

#: default ELBO draws of t per point. The draws of t dominate the ELBO's standard error:
#: on digits' 297 test images (a small DDPM, benchmarks/elbo_draws.py) one draw's sd is 3.95
#: bits/dim against 0.27 between images, so the SE is 0.23 at 1 draw, 0.083 at 8 and 0.043
#: at 32, below the 0.1-0.13 bits/dim that separate the README's digit models. The draws
#: cost one predictor call per point each, a few % of the ODE solve's.
ELBO_DRAWS = 32

OPTIONS = [
    Option("split", "test", "data split", choices=("train", "test")),
    Option("data_root", None, "folder of MNIST/CIFAR-10 files (default: the one used in training)"),
    # --num-points: torchrun reads "--n" as an abbreviation of its own --nnodes/--nproc-per-node.
    Option(
        "n",
        None,
        "evaluate the first N points of the split (default: all)",
        int,
        check=positive,
        flags=("--num-points",),
        aliases=("--n",),
    ),
    Option("batch_size", 100, "points per solve", int, check=positive),
    Option("method", "tsit5", "ODE solver (nd.solvers.METHODS)", check=method_check(("ode",))),
    Option("rtol", 1e-5, "relative tolerance (adaptive methods)", float, check=positive),
    Option("atol", 1e-5, "absolute tolerance (adaptive methods)", float, check=positive),
    Option("steps", None, "steps of a fixed-step method (required with one)", int, check=positive),
    Option(
        "trace",
        "hutchinson",
        "divergence: exact (d VJPs) or hutchinson",
        choices=("exact", "hutchinson"),
    ),
    Option("probes", 1, "Hutchinson probes per point, fixed over the solve", int, check=positive),
    Option("n_dequant", 1, "uniform dequantisation draws per image", int, check=positive),
    Option(
        "elbo_draws",
        ELBO_DRAWS,
        "draws of t per point for the ELBO (their variance dominates the ELBO's standard "
        "error at 1 draw; see ELBO_DRAWS)",
        int,
        check=positive,
    ),
    Option("seed", 0, "seed of dequantisation, probes and the ELBO's draws", int, check=seed_range),
    EMA,
    Option("out", None, "output JSON (default: likelihood_<split>.json next to the checkpoint)"),
    DEVICE,
    THREADS,
]


def register(sub) -> None:
    p = add_command(
        sub,
        "likelihood",
        "ODE and ELBO bits/dim of a checkpoint on a data split (JSON)",
        __doc__,
        run,
        OPTIONS,
    )
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint written by ndmsolve train")


def _mean_se_from_sums(s: float, s2: float, n: int) -> dict:
    mean = s / n
    var = max(s2 / n - mean**2, 0.0) * n / max(n - 1, 1)
    return {"mean": mean, "se": math.sqrt(var / n)}


def evaluate(model, x: torch.Tensor, n_bins, cfg: dict, device) -> dict:
    """ODE and ELBO per-dimension values of ``x`` (all points), sharded over the ranks."""
    from .. import distributed as ddist
    from ..likelihood import bits_per_dim, elbo_bits_per_dim, log_likelihood
    from ..objectives import continuous_loss

    rank, world = ddist.rank(), ddist.world_size()
    N, B = x.shape[0], cfg["batch_size"]
    D = math.prod(x.shape[1:])
    sums = torch.zeros(6, dtype=torch.float64)  # ode, ode², elbo, elbo², count, nfe
    points = []  # (first index, ode values, elbo values) of this rank's batches
    ll = dict(method=cfg["method"], trace=cfg["trace"], probes=cfg["probes"])
    if cfg.get("steps") is not None:
        ll["steps"] = cfg["steps"]
    else:
        ll.update(rtol=cfg["rtol"], atol=cfg["atol"])
    mine = [(b, i) for b, i in enumerate(range(0, N, B)) if b % world == rank]
    progress = _Progress(len(mine), N, cfg, enabled=rank == 0)
    for b, i in mine:
        xb = x[i : i + B].to(device)
        g = torch.Generator(device).manual_seed(
            cfg["seed"] * 1_000_003 + b
        )  # per batch: shard-independent
        if n_bins is not None:
            r = bits_per_dim(
                model,
                xb,
                n_bins=n_bins,
                n_dequant=cfg["n_dequant"],
                generator=g,
                dtype=torch.float32,
                **ll,
            )
            ode, nfe = r.bpd, r.nfe
            elbo = elbo_bits_per_dim(
                model, xb, generator=g, n_t=cfg["elbo_draws"], n_bins=n_bins, dtype=torch.float32
            ).bpd
        else:
            r = log_likelihood(model, xb, generator=g, **ll)
            ode, nfe = -r.logp / D, r.nfe
            with torch.no_grad():
                elbo = sum(
                    continuous_loss(model, xb, generator=g).total for _ in range(cfg["elbo_draws"])
                )
            elbo = elbo / cfg["elbo_draws"] / D
        ode, elbo = ode.double().cpu(), elbo.double().cpu()
        points.append((i, ode.tolist(), elbo.tolist()))
        progress.update(xb.shape[0], ode, elbo)
        sums += torch.stack(
            [
                ode.sum(),
                (ode**2).sum(),
                elbo.sum(),
                (elbo**2).sum(),
                torch.tensor(float(xb.shape[0]), dtype=torch.float64),
                torch.tensor(float(nfe), dtype=torch.float64),
            ]
        )
    progress.close()
    sums = ddist.all_reduce_sum(sums)
    n = int(sums[4])
    n_batches = -(-N // B)
    gathered = sorted(p for part in ddist.all_gather_objects(points) for p in part)
    return {
        "ode": _mean_se_from_sums(float(sums[0]), float(sums[1]), n),
        "elbo": _mean_se_from_sums(float(sums[2]), float(sums[3]), n),
        "n": n,
        "nfe_per_batch": float(sums[5]) / n_batches,
        "batches": n_batches,
        "ode_per_point": [v for _, o, _ in gathered for v in o],
        "elbo_per_point": [v for _, _, e in gathered for v in e],
    }


class _Progress:
    """Progress over this rank's batches on stderr: a tqdm bar on a terminal, else (a log)
    one line when the evaluation starts and one per batch done, with running means."""

    def __init__(self, batches: int, n: int, cfg: dict, enabled: bool):
        import sys

        from tqdm.auto import tqdm

        self.tty = bool(getattr(sys.stderr, "isatty", None) and sys.stderr.isatty())
        self.on, self.batches, self.done, self.t0 = enabled, batches, 0, time.perf_counter()
        self.sums = [0.0, 0.0, 0]
        self.bar = tqdm(
            total=batches,
            desc="likelihood",
            unit="batch",
            disable=not (enabled and self.tty),
            dynamic_ncols=True,
            file=sys.stderr,
        )
        self._log(
            f"likelihood: {n} points in batches of {cfg['batch_size']} ({batches} here): ODE "
            f"({cfg['method']}, {_accuracy(cfg)}) and ELBO "
            f"({cfg['elbo_draws']} draws of t per point)"
        )

    def _log(self, line: str) -> None:
        import sys

        if self.on and not self.tty:
            print(line, file=sys.stderr, flush=True)

    def update(self, k: int, ode, elbo) -> None:
        self.done += 1
        self.sums[0] += float(ode.sum())
        self.sums[1] += float(elbo.sum())
        self.sums[2] += k
        ode_m, elbo_m = self.sums[0] / self.sums[2], self.sums[1] / self.sums[2]
        self.bar.set_postfix(ode=f"{ode_m:.4f}", elbo=f"{elbo_m:.4f}", refresh=False)
        self.bar.update(1)
        self._log(
            f"likelihood: batch {self.done}/{self.batches} done ({self.sums[2]} points, "
            f"{time.perf_counter() - self.t0:.0f} s): running ODE {ode_m:.4f}, ELBO {elbo_m:.4f}"
        )

    def close(self) -> None:
        self.bar.close()


def _accuracy(cfg: dict) -> str:
    if cfg.get("steps") is not None:
        return f"{cfg['steps']} steps"
    return f"rtol {cfg['rtol']:g}, atol {cfg['atol']:g}"


def check_options(cfg: dict, labels: Labels) -> None:
    """Refuse options the chosen method or trace would ignore; fixed-step methods need
    ``--steps`` (then rtol/atol are None in ``cfg``)."""
    L, given = labels, labels.given
    if cfg["trace"] == "exact" and "probes" in given:
        raise UsageError(
            f"{L['probes']} applies to {L['trace']} hutchinson only (the exact trace draws "
            "no probes): remove it"
        )
    check_device(cfg["device"], L["device"])
    if cfg["out"] is not None:
        check_out_file(cfg["out"], L["out"])
    m = METHODS[cfg["method"]]
    refuse_other_kind(m, labels, fixed_only=("steps",), adaptive_only=("rtol", "atol"))
    if m.adaptive:
        return
    if cfg["steps"] is None:
        raise UsageError(
            f"--method {m.name} is a fixed-step method: give its step count with --steps"
        )
    if cfg["steps"] < m.min_steps:
        raise UsageError(f"{L['steps']} must be at least {m.min_steps} for {m.name!r}")
    cfg["rtol"] = cfg["atol"] = None


def run(args) -> int:
    """Run ``likelihood`` on the parsed flags ``args``; returns the exit code."""
    from .. import distributed as ddist
    from ..checkpoint import load_model, read_checkpoint

    labels = Labels()
    cfg = resolve(args, OPTIONS, labels=labels)
    check_options(cfg, labels)
    torch.set_num_threads(cfg["threads"])
    state = read_checkpoint(args.checkpoint)
    tcfg = state.get("train_config")
    if not tcfg or "data" not in state:
        raise UsageError(
            f"{args.checkpoint} does not name its data set (not written by ndmsolve train)"
        )
    if "data_root" in labels.given and state["data"] not in ("mnist", "cifar10"):
        raise UsageError(
            f"{labels['data_root']} applies to mnist and cifar10 only, not {state['data']!r}"
        )
    ddist.init_from_env()
    device = torch.device("cpu") if cfg["device"] == "cpu" else ddist.default_device()
    model = load_model(args.checkpoint, ema=cfg["ema"], map_location=device)
    ds, x = _points(cfg, labels, state["data"], tcfg)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        res = evaluate(model, x if ds.is_image else x.float(), ds.n_bins, cfg, device)
    except TypeError as e:
        raise UsageError(str(e)) from None
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if ddist.rank() != 0:
        return 0
    _report(args.checkpoint, cfg, state, ds, res, wall, cpu)
    return 0


def _points(cfg: dict, labels: Labels, data: str, tcfg: dict):
    """The data set ``data`` the checkpoint was trained on, and the points of the chosen
    split to evaluate (N, ...), checked against ``--num-points`` and ``--trace``."""
    from ..data.sets import load_dataset

    try:
        ds = load_dataset(
            data,
            cfg["split"],
            root=cfg["data_root"] or tcfg.get("data_root"),
            seed=tcfg.get("seed", 0),
        )
    except (ValueError, OSError) as e:
        raise UsageError(f"the checkpoint's data {data!r}: {e}") from None
    if cfg["n"] is not None and cfg["n"] > ds.x.shape[0]:
        raise UsageError(
            f"{labels['n']} {cfg['n']}: the {cfg['split']} split of {data!r} has only "
            f"{ds.x.shape[0]} points"
        )
    x = ds.x if cfg["n"] is None else ds.x[: cfg["n"]]
    if cfg["trace"] == "exact" and math.prod(x.shape[1:]) > 4096:
        raise UsageError(
            f"{labels['trace']} exact needs {math.prod(x.shape[1:])} VJPs per evaluation; "
            "use hutchinson"
        )
    return ds, x


def _report(checkpoint, cfg: dict, state: dict, ds, res: dict, wall: float, cpu: float) -> None:
    """Write the JSON summary of ``evaluate``'s result ``res`` and print its line."""
    from .. import distributed as ddist
    from ..io import atomic_write

    unit = "bits/dim" if ds.is_image else "nats/dim"
    summary = {
        "checkpoint": str(checkpoint),
        "data": state["data"],
        "split": cfg["split"],
        "n": res["n"],
        "unit": unit,
        "ode": res["ode"],
        "elbo": res["elbo"],
        "nfe_per_batch": res["nfe_per_batch"],
        "batches": res["batches"],
        "n_bins": ds.n_bins,
        "processes": ddist.world_size(),
        "wall_s": wall,
        "cpu_s": cpu,
        "points_per_s": res["n"] / wall,
        "step": state.get("step"),
        "options": cfg,
        "uniform_bpd": math.log2(ds.n_bins) if ds.is_image else None,
        "ode_per_point": res["ode_per_point"],
        "elbo_per_point": res["elbo_per_point"],
    }
    out = Path(cfg["out"] or Path(checkpoint).with_name(f"likelihood_{cfg['split']}.json"))
    atomic_write(out, lambda f: json.dump(summary, f, indent=1), binary=False)
    tr = f"hutchinson, {cfg['probes']} probe(s)" if cfg["trace"] == "hutchinson" else "exact trace"
    print(
        f"{state['data']} {cfg['split']} ({res['n']} points): ODE {res['ode']['mean']:.4f} ± {res['ode']['se']:.4f} "
        f"{unit} ({cfg['method']}, {_accuracy(cfg)}, {tr}), "
        f"ELBO {res['elbo']['mean']:.4f} ± {res['elbo']['se']:.4f} {unit}, NFE {res['nfe_per_batch']:.0f} per batch; "
        f"wrote {out}",
        flush=True,
    )
