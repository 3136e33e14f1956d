"""Cost of one NDM training step relative to one DDPM step at the same predictor.

A training step is what ``ndmsolve.train`` does per batch: the loss (``continuous_loss``
or ``discrete_loss``), its backward pass and one Adam step. The DDPM baseline is the same
predictor with the identity transform. For each case (an MLP on 2-D toy data, the U-Net
on 8×8 and on 32×32 images) we time four NDMs beside it:

    general_equal       ResidualTransform(net(x, t)), net as wide as the predictor; ∂_t F
                        by the net's own forward_and_dt (MLP and UNet: forward mode
                        written out, exact)
    general_half        the same at half the predictor's width
    time_basis_equal    TimeBasisTransform(h(x)), ∂_t F analytic, h as wide as the predictor
    time_basis_half     the same at half width
    general_equal_jvp   (MLP only, to keep the run short) general_equal with ∂_t F by
                        torch.func.jvp (dF="func")
    general_*_prior     (continuous loss only) general_equal / general_half with the prior's
                        F(x, 1) pass on a random PRIOR_FRACTION of the batch
                        (``continuous_loss(prior_fraction=)``, unbiased)

Timings are interleaved (variant after variant, round after round) so a change of machine
load hits all variants alike; we report the median over rounds and the ratio to ``ddpm``.
On the CPU the default clock is the process's CPU time (``time.process_time``) at one
thread, which the load other processes put on the machine barely changes; ``--clock wall``
times wall-clock instead (and is the only clock on CUDA).

    python -m benchmarks.train_step_cost [--device cpu|cuda] [--quick] [--threads 1]
                                         [--clock cpu|wall] [--loss continuous|discrete]
                                         [--cases mlp,unet8,unet32]

Writes ``benchmarks/results/train_step_cost_<loss>_<device>.json`` (atomically).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

import ndmsolve as nd
from benchmarks import common
from ndmsolve.fields import MLP, EpsilonPredictor, UNet
from ndmsolve.objectives import continuous_loss, discrete_loss, prior_rows

_HERE = os.path.dirname(os.path.abspath(__file__))

RESULTS = os.path.join(_HERE, "results")

# The MLP is the demo's predictor (batch 256, width 128, depth 3); the U-Nets are image
# sizes: 8×8×1 (digits) and 32×32×3 (CIFAR-10). ``width`` is the predictor's width.
CASES = {
    "mlp": dict(full=dict(batch=256, width=128, depth=3), quick=dict(batch=16, width=8, depth=1)),
    "unet8": dict(
        full=dict(batch=64, width=32, size=8, channels=1),
        quick=dict(batch=2, width=4, size=8, channels=1),
    ),
    "unet32": dict(
        full=dict(batch=32, width=32, size=32, channels=3),
        quick=dict(batch=2, width=4, size=8, channels=3),
    ),
}
VARIANTS = ("ddpm", "general_equal", "general_half", "time_basis_equal", "time_basis_half")
JVP_VARIANT = "general_equal_jvp"  # MLP only: ∂_t F by torch.func.jvp instead
# The cheaper prior (continuous loss only): variant -> the variant it subsamples.
PRIOR_FRACTION = 1 / 8
PRIOR_VARIANTS = {"general_equal_prior": "general_equal", "general_half_prior": "general_half"}
N_BASIS = 4
DISCRETE_T = 1000


def _net(case: str, cfg: dict, width: int, out_factor: int = 1, zero_init: bool = False):
    if case == "mlp":
        return MLP(2, hidden=width, depth=cfg["depth"], out_dim=2 * out_factor, zero_init=zero_init)
    c = cfg["channels"]
    return UNet(c, base=width, mults=(1, 2), out_channels=c * out_factor, zero_init=zero_init)


def variants(case: str, loss: str) -> tuple[str, ...]:
    """The variants timed for a case and loss (ddpm first)."""
    jvp = (JVP_VARIANT,) if case == "mlp" else ()
    return VARIANTS + jvp + (tuple(PRIOR_VARIANTS) if loss == "continuous" else ())


def build(
    case: str, cfg: dict, device: torch.device, loss: str = "continuous"
) -> tuple[dict, torch.Tensor]:
    """name -> NDM (all with the same predictor weights), and a data batch."""
    sched = nd.LinearLogSNR(-12.0, 12.0)
    models = {}
    for name in variants(case, loss):
        torch.manual_seed(0)
        pred = EpsilonPredictor(_net(case, cfg, cfg["width"]), sched)
        width = cfg["width"] if "equal" in name else max(1, cfg["width"] // 2)
        if name == "ddpm":
            tr = None
        elif name.startswith("general"):
            tr = nd.ResidualTransform(_net(case, cfg, width))
        else:
            tr = nd.TimeBasisTransform(_net(case, cfg, width, out_factor=N_BASIS), N_BASIS, "sine")
        models[name] = nd.NDM(pred, tr, sched, dF="func" if name == JVP_VARIANT else "auto").to(
            device
        )
    torch.manual_seed(1)
    if case == "mlp":
        x = nd.data.checkerboard(cfg["batch"], torch.Generator().manual_seed(1))
    else:
        x = torch.rand(cfg["batch"], cfg["channels"], cfg["size"], cfg["size"]) * 2 - 1
    return models, x.to(device)


def step_fn(model: nd.NDM, x: torch.Tensor, loss: str, prior_fraction: float = 1.0):
    """One training step (loss, backward, Adam) as a closure."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator(device=x.device).manual_seed(0)

    def step():
        if loss == "continuous":
            out = continuous_loss(model, x, generator=g, prior_fraction=prior_fraction)
        else:
            out = discrete_loss(model, x, DISCRETE_T, generator=g)
        opt.zero_grad(set_to_none=True)
        out.total.mean().backward()
        opt.step()

    return step


def pass_fns(models: dict, x: torch.Tensor) -> dict:
    """One forward + backward of each network pass the general-transform loss is made of."""
    pred, net = models["ddpm"].predictor, models["general_equal"].transform.net
    t = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(3)).to(x.device)

    def fwd_bwd(f):
        def run():
            out = f()
            (sum(o.sum() for o in out) if isinstance(out, tuple) else out.sum()).backward()

        return run

    # The cheaper prior: F(x, 1) on m rows alone, or stacked into the (F, ∂_t F) call at (x, t).
    m = prior_rows(PRIOR_FRACTION, x.shape[0])
    xs, ts = torch.cat([x, x[:m]]), torch.cat([t, torch.ones_like(t[:m])])
    return {
        "predictor": fwd_bwd(lambda: pred(x, t)),
        "F": fwd_bwd(lambda: net(x, t)),
        "F_and_dF": fwd_bwd(lambda: net.forward_and_dt(x, t)),
        "F_prior_rows": fwd_bwd(lambda: net(x[:m], torch.ones_like(t[:m]))),
        "F_and_dF_stacked_prior": fwd_bwd(lambda: net.forward_and_dt(xs, ts)),
    }


PASSES = ("predictor", "F", "F_and_dF", "F_prior_rows", "F_and_dF_stacked_prior")


def run_case(
    case: str, cfg: dict, device, loss: str, rounds: int, min_time: float, clock: str = "wall"
) -> dict:
    models, x = build(case, cfg, device, loss)
    params = {n: sum(p.numel() for p in m.transform.parameters()) for n, m in models.items()}
    params["predictor"] = sum(p.numel() for p in models["ddpm"].predictor.parameters())
    fns = {
        n: step_fn(m, x, loss, PRIOR_FRACTION if n in PRIOR_VARIANTS else 1.0)
        for n, m in models.items()
    }
    fns.update({"pass_" + n: f for n, f in pass_fns(models, x).items()})
    timer = {"cpu": time.process_time, "wall": time.perf_counter}[clock]
    times = common.time_all(fns, device, rounds, min_time, warmup=2, clock=timer)
    base, unit = times["ddpm"], times["pass_predictor"]
    steps = {n: v for n, v in times.items() if not n.startswith("pass_")}
    units = {n: times["pass_" + n] / unit for n in PASSES}
    # The continuous loss of a general transform: predictor + (F, dF) at (x, t) + F(x, 1)
    # + (F, dF) at (x_hat, t); the rest of a step is the loss's arithmetic and Adam.
    units["sum_of_passes"] = units["predictor"] + units["F"] + 2 * units["F_and_dF"]
    units["general_equal_step"] = times["general_equal"] / unit
    cfg = dict(cfg, data_shape=list(x.shape[1:]), n_basis=N_BASIS)
    if loss == "continuous":
        cfg.update(prior_fraction=PRIOR_FRACTION, prior_rows=prior_rows(PRIOR_FRACTION, len(x)))
    return {
        "config": cfg,
        "params": params,
        "ms": {n: 1e3 * s for n, s in steps.items()},
        "ratios": {n: steps[n] / base for n in steps if n != "ddpm"},
        "pass_units": units,
    }


def _fmt(v) -> str:
    return f"{v:10.2f}" if isinstance(v, (int, float)) and math.isfinite(v) else f"{'-':>10}"


def print_table(res: dict) -> None:
    cases = list(res["cases"])
    print(
        f"\nNDM training step / DDPM training step ({res['loss']} loss) — {res['device_name']} "
        f"({res['device']}), torch {res['torch']}, threads {res['threads']}, {res['clock']} clock"
        f"{', QUICK' if res['quick'] else ''}"
    )
    print(f"{'':24}" + "".join(f"{c:>10}" for c in cases))
    print(f"{'ddpm step ms':24}" + "".join(_fmt(res["cases"][c]["ms"]["ddpm"]) for c in cases))
    for v in VARIANTS[1:] + (JVP_VARIANT,) + tuple(PRIOR_VARIANTS):
        print(f"{'ratio ' + v:24}" + "".join(_fmt(res["cases"][c]["ratios"].get(v)) for c in cases))
    print("passes, fwd+bwd, in predictor passes (general_equal transform):")
    for v in PASSES + ("sum_of_passes", "general_equal_step"):
        print(f"{'  ' + v:24}" + "".join(_fmt(res["cases"][c]["pass_units"][v]) for c in cases))
    print()


def write_json(res: dict, out_dir: str) -> str:
    path = os.path.join(out_dir, f"train_step_cost_{res['loss']}_{res['device']}.json")
    common.write_json_atomic(path, res, prefix=".train_step_cost_", suffix=".json")
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_run_args(p, rounds_help="timing rounds (default 7; quick 2)")
    p.add_argument("--loss", default="continuous", choices=["continuous", "discrete"])
    p.add_argument(
        "--cases", default=",".join(CASES), help="comma-separated subset of " + ",".join(CASES)
    )
    p.add_argument(
        "--clock",
        default=None,
        choices=["cpu", "wall"],
        help="cpu: process CPU time (default on the CPU); wall: wall-clock (default on CUDA)",
    )
    p.add_argument("--out-dir", default=RESULTS)
    p.set_defaults(threads=1)
    a = p.parse_args(argv)
    cases = a.cases.split(",")
    bad = [c for c in cases if c not in CASES]
    if bad:
        p.error(f"--cases: unknown {bad}; choose from {sorted(CASES)}")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device available")
    device = torch.device(a.device)
    clock = a.clock or ("cpu" if device.type == "cpu" else "wall")
    if clock == "cpu" and device.type != "cpu":
        p.error("--clock cpu measures CPU time: use --clock wall with --device cuda")
    old_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(a.threads)
    rounds = a.rounds or (2 if a.quick else 7)
    min_time = a.min_time if a.min_time is not None else (0.005 if a.quick else 0.5)
    res = dict(
        common.run_meta("train_step_cost", a, device, rounds),
        loss=a.loss,
        clock=clock,
        clock_note=(
            "time.process_time: CPU time of this process (1 thread: the work done, little "
            "changed by other processes' load)"
            if clock == "cpu"
            else "time.perf_counter: wall-clock"
        ),
        cases={},
        load_average_start=list(os.getloadavg()),  # the shared machine's 1/5/15-min load
    )
    try:
        for case in cases:
            cfg = CASES[case]["quick" if a.quick else "full"]
            print(f"running {case} {cfg} ...", file=sys.stderr, flush=True)
            res["cases"][case] = run_case(case, cfg, device, a.loss, rounds, min_time, clock)
    finally:
        torch.set_num_threads(old_threads)
    res["load_average_end"] = list(os.getloadavg())
    path = write_json(res, a.out_dir)
    print_table(res)
    print(f"wrote {path}")
    return res


if __name__ == "__main__":
    main()
