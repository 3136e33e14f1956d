"""Cost of PF-ODE likelihoods, side by side in one run.

1. **Field cost.** One evaluation of the augmented field (velocity + divergence, what
   ``log_likelihood`` hands the solver) relative to one velocity evaluation
   (``NDM.velocity`` under ``torch.no_grad``), for

       hutch1       Hutchinson, 1 probe (torch.func.vjp + vmap over probes)
       exact        exact trace, D VJPs vmapped over the basis (for the conv case,
                    D = 3072: timed on a chunk of basis vectors and scaled by D / chunk,
                    reported as ``exact_est``)
       scoresde1    the score_sde way: enable_grad, torch.autograd.grad of Σ v·ε

   on an MLP NDM (2-D, batch 8192) and a conv NDM (32×32×3, batch 128, ndmsolve's UNet
   at small width). Both NDMs have a neural ResidualTransform, so each velocity does a
   JVP for ∂_t F.
2. **Peak memory vs steps** of a fixed-step (euler) Hutchinson solve at 10/40/160 steps,
   model parameters requiring grad (as during training): ours, the score_sde-style
   baseline (detached returns), and a naive port that returns v attached (the graph of
   every step is kept alive through the solver state). CPU: the profiler's allocation
   events (peak of the running sum); CUDA: ``max_memory_allocated``.
3. **End to end at equal NFE and probes.** ``log_likelihood(method="midpoint", steps=N,
   trace="hutchinson", probes=1)`` vs the baseline field integrated by
   ``torchdiffeq.odeint(method="midpoint")`` with the same probes: wall time and the
   largest |Δ logp| between them (same scheme, so they must agree to rounding).

    python -m benchmarks.likelihood_cost [--device cpu|cuda] [--quick] [--threads 2]

Writes ``benchmarks/results/likelihood_cost_<device>.json`` (atomically).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable

import torch

import ndmsolve as nd
from benchmarks import common
from ndmsolve.fields import MLP, UNet
from ndmsolve.likelihood import (
    AugmentedField,
    Divergence,
    log_likelihood,
    sample_probes,
    standard_normal_logp,
)

_HERE = os.path.dirname(os.path.abspath(__file__))

RESULTS = os.path.join(_HERE, "results")

CASES = {
    "mlp": dict(
        full=dict(batch=8192, hidden=128, depth=3, mem_batch=1024, e2e_steps=20),
        quick=dict(batch=32, hidden=16, depth=1, mem_batch=16, e2e_steps=2),
    ),
    "conv": dict(
        full=dict(batch=128, size=32, base=8, exact_chunk=16, e2e_steps=2),
        quick=dict(batch=2, size=8, base=4, exact_chunk=4, e2e_steps=1),
    ),
}
MEM_STEPS = {"full": (10, 40, 160), "quick": (2, 4, 8)}


def build(case: str, cfg: dict, device: torch.device, batch: int | None = None):
    """An NDM with neural predictor and ResidualTransform, and a batch z (B, *shape)."""
    torch.manual_seed(0)
    b = batch or cfg["batch"]
    if case == "mlp":
        mk = lambda: MLP(2, hidden=cfg["hidden"], depth=cfg["depth"])  # noqa: E731
        z = torch.randn(b, 2)
    else:
        mk = lambda: UNet(3, base=cfg["base"], mults=(1, 2))  # noqa: E731
        z = torch.randn(b, 3, cfg["size"], cfg["size"])
    model = nd.NDM(mk(), nd.ResidualTransform(mk()), nd.LinearLogSNR(-10.0, 10.0), check=False)
    return model.to(device), z.to(device)


# ---------------------------------------------------------------------------- baseline
class ScoreSDEField:
    """score_sde's likelihood field, ported to torch: per call, under enable_grad,
    z.requires_grad_, v = model(z, t), ∇_z Σ(v·ε) by torch.autograd.grad, div = Σ ε·∇.

    ``detach=False`` is the naive port that returns v attached to its graph: the
    solver state then holds every step's graph (memory grows with steps).
    """

    def __init__(self, model, eps: torch.Tensor, detach: bool = True):
        self.model, self.eps, self.detach = model, eps[0], detach
        self.B, self.shape = eps.shape[1], tuple(eps.shape[2:])
        self.D = math.prod(self.shape)
        self.nfe = 0

    def __call__(self, t, y):
        self.nfe += 1
        z = y[:, : self.D].reshape(self.B, *self.shape)
        tb = t.reshape(()).expand(self.B).clamp(0.0, 1.0)
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            v = self.model.velocity(z, tb)
            g = torch.autograd.grad((v * self.eps).sum(), z, retain_graph=not self.detach)[0]
        div = (g * self.eps).reshape(self.B, -1).sum(1, keepdim=True)
        if self.detach:
            v, div = v.detach(), div.detach()
        return torch.cat([v.reshape(self.B, self.D), div], 1)


def field_cost(case: str, cfg: dict, device, rounds: int, min_time: float) -> dict:
    model, z = build(case, cfg, device)
    B, shape, D = z.shape[0], tuple(z.shape[1:]), math.prod(z.shape[1:])
    t0 = torch.tensor(0.4, device=device)
    tb = t0.expand(B)
    eps = sample_probes(1, z, "rademacher", torch.Generator(device=device).manual_seed(0))
    y = torch.cat([z.reshape(B, D), z.new_zeros(B, 1)], 1)
    hutch = AugmentedField(Divergence(model.velocity, "hutchinson", eps), shape, B)
    base = ScoreSDEField(model, eps)

    def velocity():
        with torch.no_grad():
            return model.velocity(z, tb)

    fns = {"velocity": velocity, "hutch1": lambda: hutch(t0, y), "scoresde1": lambda: base(t0, y)}
    exact_scale, exact_name = 1.0, "exact"
    if D <= 64:
        exact = AugmentedField(Divergence(model.velocity, "exact", None), shape, B)
        fns["exact"] = lambda: exact(t0, y)
    else:
        # D VJPs per evaluation: time one vmapped chunk of basis vectors and scale by D / chunk.
        k = cfg["exact_chunk"]
        basis = torch.eye(D, device=device)[:k].reshape(k, 1, *shape).expand(k, *z.shape)
        eng = Divergence(
            model.velocity, "hutchinson", basis
        )  # same machinery: vmap over k cotangents
        fns["exact"] = lambda: eng(z, tb)
        exact_scale, exact_name = D / k, "exact_est"
    # results agree before timing
    with torch.no_grad():
        v_ref = velocity()
    h, b = hutch(t0, y), base(t0, y)
    assert torch.allclose(h[:, :D], v_ref.reshape(B, D), atol=1e-4, rtol=1e-4)
    assert torch.allclose(h[:, D], b[:, D], atol=1e-3, rtol=1e-3), (h[:, D] - b[:, D]).abs().max()
    sec = common.time_all(fns, device, rounds, min_time)
    sec["exact"] *= exact_scale
    ms = {(exact_name if k == "exact" else k): 1e3 * v for k, v in sec.items()}
    ratios = {k: v / ms["velocity"] for k, v in ms.items() if k != "velocity"}
    return {"config": dict(cfg, D=D), "ms": ms, "ratios": ratios}


# ---------------------------------------------------------------------------- memory
def _peak_bytes(fn: Callable, device) -> int:
    """Peak bytes allocated above the level at entry while fn runs."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - start)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    )
    run = peak = 0
    for _, nbytes in events:
        run += nbytes
        peak = max(peak, run)
    return int(peak)


def memory_vs_steps(cfg: dict, steps_list, device) -> dict:
    import torchdiffeq

    model, z = build("mlp", cfg, device, batch=cfg["mem_batch"])
    B, D = z.shape
    eps = sample_probes(1, z, "rademacher", torch.Generator(device=device).manual_seed(0))
    y0 = torch.cat([z, z.new_zeros(B, 1)], 1)
    out = {
        "batch": B,
        "steps": list(steps_list),
        "mib": {"ours": [], "scoresde": [], "naive_attached": []},
    }
    for n in steps_list:
        grid = torch.linspace(0.0, 1.0, 2, device=device)
        runs = {
            "ours": lambda: log_likelihood(
                model,
                z,
                "euler",
                steps=n,
                trace="hutchinson",
                probes=1,
                generator=torch.Generator(device=device).manual_seed(0),
            ),
            "scoresde": lambda: torchdiffeq.odeint(
                ScoreSDEField(model, eps), y0, grid, method="euler", options={"step_size": 1.0 / n}
            ),
            "naive_attached": lambda: torchdiffeq.odeint(
                ScoreSDEField(model, eps, detach=False),
                y0,
                grid,
                method="euler",
                options={"step_size": 1.0 / n},
            ),
        }
        for name, fn in runs.items():
            out["mib"][name].append(_peak_bytes(fn, device) / 2**20)
    return out


# ---------------------------------------------------------------------------- end to end
def end_to_end(case: str, cfg: dict, device) -> dict:
    import torchdiffeq

    model, z = build(case, cfg, device)
    B, D = z.shape[0], math.prod(z.shape[1:])
    n = cfg["e2e_steps"]
    gen = lambda: torch.Generator(device=device).manual_seed(0)  # noqa: E731
    eps = sample_probes(1, z, "rademacher", gen())  # = the probes log_likelihood draws

    def ours():
        return log_likelihood(
            model, z, "midpoint", steps=n, trace="hutchinson", probes=1, generator=gen()
        )

    def baseline():
        f = ScoreSDEField(model, eps)
        y0 = torch.cat([z.reshape(B, D), z.new_zeros(B, 1)], 1)
        y1 = torchdiffeq.odeint(
            f,
            y0,
            torch.tensor([0.0, 1.0], device=device),
            method="midpoint",
            options={"step_size": 1.0 / n},
        )[-1]
        return standard_normal_logp(y1[:, :D]) + y1[:, D], f.nfe

    res, (lp_b, nfe_b) = ours(), baseline()
    out = {
        "steps": n,
        "nfe": {"ours": res.nfe, "scoresde": nfe_b},
        "max_abs_dlogp": float((res.logp - lp_b).abs().max()),
        "mean_logp": float(res.logp.mean()),
    }
    sec = {}
    for name, fn in (("ours", ours), ("scoresde", baseline)):
        common.sync(device)
        t0 = time.perf_counter()
        fn()
        common.sync(device)
        sec[name] = time.perf_counter() - t0
    out["s"] = sec
    out["speedup_vs_scoresde"] = sec["scoresde"] / sec["ours"]
    return out


# ---------------------------------------------------------------------------- report
def print_table(res: dict) -> None:
    print(
        f"\nlikelihood cost on {res['device_name']} ({res['device']}), torch {res['torch']}, "
        f"threads {res['threads']}{' [quick]' if res['quick'] else ''}"
    )
    print("\n1) one augmented-field evaluation / one velocity evaluation")
    print(
        f"{'case':6} {'D':>5} {'B':>6} {'velocity ms':>12} {'hutch1':>8} {'exact':>10} {'scoresde1':>10}"
    )
    for case, c in res["field_cost"].items():
        r = c["ratios"]
        ex = f"{r['exact']:.2f}" if "exact" in r else f"~{r['exact_est']:.0f} (est)"
        print(
            f"{case:6} {c['config']['D']:>5} {c['config']['batch']:>6} {c['ms']['velocity']:>12.2f} "
            f"{r['hutch1']:>8.2f} {ex:>10} {r['scoresde1']:>10.2f}"
        )
    m = res["memory"]
    print(
        f"\n2) peak memory (MiB) of a euler Hutchinson solve, mlp batch {m['batch']}, params requiring grad"
    )
    print(f"{'steps':>6} " + " ".join(f"{k:>15}" for k in m["mib"]))
    for i, n in enumerate(m["steps"]):
        print(f"{n:>6} " + " ".join(f"{m['mib'][k][i]:>15.2f}" for k in m["mib"]))
    print("\n3) end to end, midpoint, equal NFE, 1 Hutchinson probe (same probes)")
    print(
        f"{'case':6} {'NFE':>5} {'ours s':>9} {'scoresde s':>11} {'speedup':>8} {'max|dlogp|':>11}"
    )
    for case, e in res["end_to_end"].items():
        print(
            f"{case:6} {e['nfe']['ours']:>5} {e['s']['ours']:>9.3f} {e['s']['scoresde']:>11.3f} "
            f"{e['speedup_vs_scoresde']:>8.2f} {e['max_abs_dlogp']:>11.2e}"
        )


def write_json(res: dict, out_dir: str) -> str:
    path = os.path.join(out_dir, f"likelihood_cost_{res['device']}.json")
    common.write_json_atomic(path, res, prefix=".likelihood_cost_", suffix=".json")
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_run_args(p, rounds_help="timing rounds (default 5; quick 1)")
    p.add_argument(
        "--conv-batch", type=int, default=None, help="override the conv case's batch (full: 128)"
    )
    common.add_cases_args(p, CASES, RESULTS)
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device available")
    device = torch.device(a.device)
    size = "quick" if a.quick else "full"
    old_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(a.threads)
    rounds = a.rounds or (1 if a.quick else 5)
    min_time = a.min_time if a.min_time is not None else (0.0 if a.quick else 0.5)
    res = dict(common.run_meta("likelihood_cost", a, device, rounds), field_cost={}, end_to_end={})
    cases = a.cases.split(",")
    if a.conv_batch:
        CASES["conv"][size] = dict(CASES["conv"][size], batch=a.conv_batch)
    try:
        for case in cases:
            cfg = CASES[case][size]
            print(f"field cost {case} {cfg} ...", file=sys.stderr, flush=True)
            res["field_cost"][case] = field_cost(case, cfg, device, rounds, min_time)
        print("memory vs steps ...", file=sys.stderr, flush=True)
        res["memory"] = memory_vs_steps(CASES["mlp"][size], MEM_STEPS[size], device)
        for case in cases:
            print(f"end to end {case} ...", file=sys.stderr, flush=True)
            res["end_to_end"][case] = end_to_end(case, CASES[case][size], device)
    finally:
        torch.set_num_threads(old_threads)
    path = write_json(res, a.out_dir)
    print_table(res)
    print(f"wrote {path}")
    return res


if __name__ == "__main__":
    main()
