"""Solver overhead of ``ndmsolve.solve`` against a hand-written loop, torchdiffeq and torchsde.

Everything is measured in ONE process, interleaved (each repeat runs every contender once,
round-robin), so the ratios are robust to background load even when absolute times are not.

Sections (each prints a table; all go into one JSON file):

1. Euler, ``steps`` fixed steps: ours ``solve(method="euler")`` vs a raw loop
   ``y = y + dt * f(t_i, y)`` vs ``torchdiffeq.odeint(method="euler")``.
   Targets: ours/raw <= 1.1.  (torchdiffeq/raw is reported, no target.)
2. Euler–Maruyama, same steps: ours vs a raw EM loop vs ``torchsde.sdeint(method="euler")``
   with its default Brownian interval.  Target: torchsde/ours >= 5.
3. dopri5 at rtol = atol = 1e-5 and 1e-3: ours vs ``torchdiffeq`` dopri5 on fields where
   adaptivity matters (a scaled random MLP with strong t-dependence; the PF-ODE of a small
   random NDM).  NFE (torchdiffeq's counted by a wrapper), wall time, error against a float64
   reference (torchdiffeq dopri5 at 1e-10, cross-checked with ours at 1e-10).
   Target: ours NFE <= torchdiffeq NFE with ours error <= torchdiffeq error (x1.05 slack
   is NOT applied; the comparison is strict).
4. CUDA graph (``--device cuda`` only): ``solve(..., cuda_graph=True)`` replay vs the raw
   eager loop.  Target: raw/graph >= 3.  On CPU: "n/a (no CUDA)".

Fields (``f(t, y)`` with ``t`` a 0-dim tensor, expanded to (B,) for the nets):

- ``mlp``: ``ndmsolve.fields.MLP(2, hidden=128, depth=3, time_dim=32)``, batch 8192 on CUDA.
- ``conv``: ``ndmsolve.fields.UNet(channels=3, base=16, mults=(1, 2))`` on 32x32x3, batch 128
  on CUDA.
- ``mlp-small``: MLP(2, hidden=32, depth=2), batch 256: a cheap field, so that per-step
  solver overhead is visible at all on CPU (with the big fields a CPU step is 10-100 ms of
  matmuls/convs and every ratio is 1.00 whatever the solver does).

On CPU the default batches are smaller (mlp 2048, conv 8 with base 8) so that a full run
finishes in minutes on 2 cores; override with ``--mlp-batch`` / ``--conv-batch`` /
``--conv-base``. Every size used is written to the JSON.

Usage::

    python -m benchmarks.solver_overhead [--device cpu|cuda] [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import ndmsolve
from ndmsolve.solvers.api import all_methods, solve

try:
    import torchdiffeq
except ImportError:  # pragma: no cover - a dependency, but keep the script usable
    torchdiffeq = None
try:
    import torchsde
except ImportError:  # pragma: no cover
    torchsde = None

from benchmarks import common
from benchmarks.common import device_name, sync

_HERE = os.path.dirname(os.path.abspath(__file__))

RESULTS_DIR = os.path.join(_HERE, "results")

TARGETS = {
    "euler_ours_over_raw_max": 1.1,
    "em_torchsde_over_ours_min": 5.0,
    "graph_raw_over_graph_min": 3.0,
}


# --------------------------------------------------------------------------- fields
def make_net_field(net: nn.Module, batch: int) -> Callable:
    """``f(t, y) = net(y, t expanded to (B,))``; the same callable for every contender."""

    def f(t, y):
        return net(y, t.expand(batch))

    return f


def build_fields(args, device: torch.device, dtype=torch.float32):
    """(name, f, y0, description) for the fixed-step sections."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    MLP, UNet = ndmsolve.fields.MLP, ndmsolve.fields.UNet
    specs = {  # name: (batch, state shape, network, description)
        "mlp-small": (
            args.small_batch,
            (2,),
            lambda: MLP(2, hidden=32, depth=2, time_dim=16),
            "MLP(2, hidden=32, depth=2)",
        ),
        "mlp": (
            args.mlp_batch,
            (2,),
            lambda: MLP(2, hidden=128, depth=3, time_dim=32),
            "MLP(2, hidden=128, depth=3)",
        ),
        "conv": (
            args.conv_batch,
            (3, 32, 32),
            lambda: UNet(channels=3, base=args.conv_base, mults=(1, 2), time_dim=32),
            f"UNet(3, base={args.conv_base}, mults=(1,2)), 32x32x3",
        ),
    }
    out = []
    for name, (b, shape, make, what) in specs.items():
        if name in args.fields:
            net = make().to(device, dtype).eval()
            y0 = torch.randn(b, *shape, generator=gen, dtype=dtype).to(device)
            out.append((name, make_net_field(net, b), y0, f"{what}, batch {b}"))
    return out


# --------------------------------------------------------------------------- timing
def bench(contenders: dict, device: torch.device, repeats: int, warmup: int = 1) -> dict:
    """Median wall time (s) of each zero-argument callable, interleaved (order alternating).

    Returns ``{name: {"median_s", "min_s", "times_s", "result"}}`` with ``result`` the
    last return value (kept for NFE/sanity checks).
    """
    results = {k: None for k in contenders}
    times = {k: [] for k in contenders}
    for _ in range(warmup):
        for k, fn in contenders.items():
            results[k] = fn()
            sync(device)
    names = list(contenders)
    for rep in range(repeats):
        # Alternate the order (forward, reversed) so no contender always runs right after
        # the same other one: cancels order effects (allocator state, cache, CPU frequency).
        for k in names if rep % 2 == 0 else names[::-1]:
            fn = contenders[k]
            sync(device)
            t = time.perf_counter()
            results[k] = fn()
            sync(device)
            times[k].append(time.perf_counter() - t)
    return {
        k: {"median_s": statistics.median(v), "min_s": min(v), "times_s": v, "result": results[k]}
        for k, v in times.items()
    }


class _OpCounter(TorchDispatchMode):
    """Counts dispatched ATen ops: a load-independent measure of per-step overhead."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn) -> int:
    with _OpCounter() as m:
        fn()
    return m.n


def progress(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf


# --------------------------------------------------------------------------- section 1: Euler
def uniform_grid(steps: int, y0: torch.Tensor):
    """The grid 0..1 in ``steps`` steps (y0's dtype and device), its points as 0-dim
    tensors (as torchdiffeq passes t) and its step sizes as floats."""
    grid = torch.linspace(0.0, 1.0, steps + 1, dtype=y0.dtype, device=y0.device)
    return grid, list(grid.unbind()), (grid[1:].double() - grid[:-1].double()).tolist()


def raw_euler(f, y0, grid_list, hs):
    y = y0
    for i in range(len(hs)):
        y = y + hs[i] * f(grid_list[i], y)
    return y


def section_euler(fields, args, device):
    steps = args.steps
    rows = {}
    for name, f, y0, desc in fields:
        grid, grid_list, hs = uniform_grid(steps, y0)
        contenders = {
            # cuda_graph=False: this section measures the eager loop (graphs: section 4).
            "ours": lambda: solve(f, y0, 0.0, 1.0, "euler", steps=steps, cuda_graph=False),
            "raw": lambda: raw_euler(f, y0, grid_list, hs),
        }
        if torchdiffeq is not None:
            opts = {"grid_constructor": lambda func, y, t: grid}
            contenders["torchdiffeq"] = lambda: torchdiffeq.odeint(
                f, y0, grid[[0, -1]], method="euler", options=opts
            )[-1]
        r = bench(contenders, device, args.repeats)
        ours_y = r["ours"]["result"].y
        diff = float((ours_y - r["raw"]["result"]).abs().max())
        row = {
            "field": desc,
            "steps": steps,
            "ours_s": r["ours"]["median_s"],
            "raw_s": r["raw"]["median_s"],
            "ours_nfe": r["ours"]["result"].nfe,
            "max_abs_diff_ours_vs_raw": diff,
            "ours_over_raw": _ratio(r["ours"]["median_s"], r["raw"]["median_s"]),
            # Ratio of the fastest runs: less sensitive to background load than medians.
            "ours_over_raw_min": _ratio(r["ours"]["min_s"], r["raw"]["min_s"]),
            "per_step_overhead_us": 1e6 * (r["ours"]["median_s"] - r["raw"]["median_s"]) / steps,
        }
        if "torchdiffeq" in r:
            # the same torchdiffeq Euler on the same grid, its calls counted by the backend
            tdq = solve(f, y0, 0.0, 1.0, "torchdiffeq:euler", steps=steps)
            row.update(
                torchdiffeq_s=r["torchdiffeq"]["median_s"],
                torchdiffeq_nfe=tdq.nfe,
                torchdiffeq_over_raw=_ratio(r["torchdiffeq"]["median_s"], r["raw"]["median_s"]),
            )
        row.update(_op_counts(contenders, steps))
        row["target_ours_over_raw"] = TARGETS["euler_ours_over_raw_max"]
        row["target_met"] = row["ours_over_raw"] <= TARGETS["euler_ours_over_raw_max"]
        rows[name] = row
        progress(f"euler {name}: ours/raw {row['ours_over_raw']:.2f}")
    return rows


# --------------------------------------------------------------------------- section 2: EM
def raw_em(f, g, y0, grid_list, hs, gen):
    y = y0
    for i in range(len(hs)):
        t = grid_list[i]
        dw = torch.randn(y.shape, generator=gen, dtype=y.dtype, device=y.device) * math.sqrt(
            abs(hs[i])
        )
        y = y + hs[i] * f(t, y) + g(t, y) * dw
    return y


class _TorchsdeSDE(nn.Module):
    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, f, g, shape):
        super().__init__()
        self._f, self._g, self.shape = f, g, tuple(shape)

    def f(self, t, y):  # torchsde needs (batch, d) states: un/flatten around the field
        return self._f(t, y.view(self.shape)).flatten(1)

    def g(self, t, y):
        return self._g(t, y.view(self.shape)).flatten(1)


def section_em(fields, args, device):
    steps = args.steps
    rows = {}
    for name, f, y0, desc in fields:

        def g(t, y):
            return torch.full_like(y, 0.5)

        grid, grid_list, hs = uniform_grid(steps, y0)
        gen_ours = torch.Generator(device=device).manual_seed(1)
        gen_raw = torch.Generator(device=device).manual_seed(1)
        contenders = {
            "raw": lambda: raw_em(f, g, y0, grid_list, hs, gen_raw),
            "ours": lambda: solve(
                f, y0, 0.0, 1.0, "euler_maruyama", steps=steps, g=g, generator=gen_ours
            ),
        }
        if torchsde is not None:
            sde = _TorchsdeSDE(f, g, y0.shape)
            ts = grid[[0, -1]]
            y0_flat = y0.flatten(1)
            # 1/steps accumulated in float32 falls short of t1 and torchsde then takes an
            # extra tiny step; a hair larger dt gives exactly `steps` steps (last one clipped).
            dt = (1.0 / steps) * (1 + 1e-5)
            # Default Brownian motion: sdeint builds a BrownianInterval over [t0, t1].
            contenders["torchsde"] = lambda: torchsde.sdeint(
                sde, y0_flat, ts, method="euler", dt=dt
            )[-1]
        r = bench(contenders, device, args.repeats)
        row = {
            "field": desc,
            "steps": steps,
            "raw_s": r["raw"]["median_s"],
            "ours_s": r["ours"]["median_s"],
            "ours_nfe": r["ours"]["result"].nfe,
            "ours_over_raw": _ratio(r["ours"]["median_s"], r["raw"]["median_s"]),
        }
        row.update(_op_counts(contenders, steps))
        row["target_met"] = None
        if torchsde is not None:
            # torchsde's Euler on the same grid, its drift calls counted by the backend
            sde_sol = solve(f, y0, 0.0, 1.0, "torchsde:euler", steps=steps, g=g, generator=1)
            row.update(
                torchsde_s=r["torchsde"]["median_s"],
                torchsde_nfe=sde_sol.nfe,
                torchsde_over_raw=_ratio(r["torchsde"]["median_s"], r["raw"]["median_s"]),
                torchsde_over_ours=_ratio(r["torchsde"]["median_s"], r["ours"]["median_s"]),
                target_torchsde_over_ours=TARGETS["em_torchsde_over_ours_min"],
            )
            row["target_met"] = row["torchsde_over_ours"] >= TARGETS["em_torchsde_over_ours_min"]
        rows[name] = row
        progress(f"euler_maruyama {name} done")
    return rows


def _op_counts(contenders: dict, steps: int) -> dict:
    """Dispatched ATen ops of ours and of the raw loop, and the extra ones per step."""
    ops_ours, ops_raw = count_ops(contenders["ours"]), count_ops(contenders["raw"])
    return dict(
        aten_ops_ours=ops_ours,
        aten_ops_raw=ops_raw,
        extra_aten_ops_per_step=(ops_ours - ops_raw) / steps,
    )


# --------------------------------------------------------------------------- section 3: dopri5
def build_adaptive_fields(args, device):
    """(name, make_f(dtype) -> f, y0 (float32), t0, t1, description)."""
    out = []
    b = args.adaptive_batch

    # (a) A random MLP with fixed, scaled weights: strong, oscillating t-dependence
    # (Fourier features up to 16 rad/unit time, amplified) and a nonlinear, non-trivial flow.
    torch.manual_seed(1)
    net = ndmsolve.fields.MLP(2, hidden=64, depth=3, time_dim=32, max_freq=16.0)
    with torch.no_grad():
        for p in net.time_proj.parameters():
            p.mul_(3.0)
        net.out.weight.mul_(4.0)
    net.eval()
    y0 = torch.randn(b, 2, generator=torch.Generator().manual_seed(2))

    def make_mlp(dtype, net=net):
        n = type(net)(2, hidden=64, depth=3, time_dim=32, max_freq=16.0).to(
            device=device, dtype=dtype
        )
        n.load_state_dict({k: v.to(dtype) for k, v in net.state_dict().items()})
        n.eval()
        return make_net_field(n, b)

    out.append(
        (
            "mlp-t",
            make_mlp,
            y0.to(device),
            0.0,
            1.0,
            f"scaled random MLP(2, 64, depth 3, max_freq 16), batch {b}, t 0->1",
        )
    )

    # (b) The PF-ODE of a small random NDM (identity transform), integrated from t = 1 to
    # t = 1e-3: near t = 0 the log-SNR reaches ~12 and the field gets stiff-ish, the case
    # adaptive sampling has to handle.
    torch.manual_seed(3)
    pred = ndmsolve.fields.MLP(2, hidden=64, depth=2, time_dim=16)
    pred.eval()
    z1 = torch.randn(b, 2, generator=torch.Generator().manual_seed(4))

    def make_ndm(dtype, pred=pred):
        p = ndmsolve.fields.MLP(2, hidden=64, depth=2, time_dim=16).to(device=device, dtype=dtype)
        p.load_state_dict({k: v.to(dtype) for k, v in pred.state_dict().items()})
        p.eval()
        model = ndmsolve.NDM(p, schedule=ndmsolve.LinearLogSNR(), check=False).to(
            device=device, dtype=dtype
        )

        def f(t, z):
            # torchdiffeq's dopri5 steps past t1 and interpolates back, so it evaluates
            # the field slightly beyond [0, 1]; clamp t (NDM checks t lies in [0, 1]).
            return model.velocity(z, t.clamp(0.0, 1.0).expand(b))

        return f

    out.append(
        (
            "ndm-pfode",
            make_ndm,
            z1.to(device),
            1.0,
            1e-3,
            f"PF-ODE of NDM(MLP(2, 64, depth 2), LinearLogSNR), batch {b}, t 1->1e-3",
        )
    )
    return out


def _errors(y: torch.Tensor, ref: torch.Tensor) -> dict:
    d = (y.double() - ref).flatten(1)
    return {"rms_err": float(d.square().mean().sqrt()), "max_err": float(d.abs().max())}


def section_dopri5(args, device):
    rows = {}
    for name, make_f, y0, t0, t1, desc in build_adaptive_fields(args, device):
        f32, f64 = make_f(torch.float32), make_f(torch.float64)
        y064 = y0.double()
        tt64 = torch.tensor([t0, t1], dtype=torch.float64, device=device)
        tt32 = tt64.float()
        ref_tol = args.ref_tol
        ref = None
        ref_info = {"ref_tol": ref_tol}
        if torchdiffeq is not None:
            ref = torchdiffeq.odeint(f64, y064, tt64, method="dopri5", rtol=ref_tol, atol=ref_tol)[
                -1
            ]
            ref_info["ref_method"] = f"torchdiffeq dopri5 float64 rtol=atol={ref_tol:g}"
            if not args.quick:
                ref_ours = solve(
                    f64, y064, t0, t1, "dopri5", rtol=ref_tol, atol=ref_tol, max_steps=100_000
                ).y
                ref_info["ref_crosscheck_max_diff_vs_ours"] = float((ref - ref_ours).abs().max())
        else:
            ref = solve(
                f64, y064, t0, t1, "dopri5", rtol=ref_tol, atol=ref_tol, max_steps=100_000
            ).y
            ref_info["ref_method"] = f"ndmsolve dopri5 float64 rtol=atol={ref_tol:g}"
        per_tol = {}
        for tol in args.tols:
            contenders = {"ours": lambda: solve(f32, y0, t0, t1, "dopri5", rtol=tol, atol=tol)}
            if torchdiffeq is not None:
                contenders["torchdiffeq"] = lambda: torchdiffeq.odeint(
                    f32, y0, tt32, method="dopri5", rtol=tol, atol=tol
                )[-1]
            r = bench(contenders, device, args.adaptive_repeats)
            sol = r["ours"]["result"]
            row = {
                "rtol": tol,
                "atol": tol,
                "ours_s": r["ours"]["median_s"],
                "ours_nfe": sol.nfe,
                "ours_accepted": sol.n_accepted,
                "ours_rejected": sol.n_rejected,
            }
            row.update({f"ours_{k}": v for k, v in _errors(sol.y, ref).items()})
            if torchdiffeq is not None:
                # the same torchdiffeq call, its field calls counted by the backend
                tdq = solve(f32, y0, t0, t1, "torchdiffeq:dopri5", rtol=tol, atol=tol)
                row.update(torchdiffeq_s=r["torchdiffeq"]["median_s"], torchdiffeq_nfe=tdq.nfe)
                row.update({f"torchdiffeq_{k}": v for k, v in _errors(tdq.y, ref).items()})
                row["nfe_ratio_ours_over_torchdiffeq"] = sol.nfe / tdq.nfe
                row["time_ratio_ours_over_torchdiffeq"] = _ratio(
                    row["ours_s"], row["torchdiffeq_s"]
                )
                row["target_met"] = (
                    sol.nfe <= tdq.nfe and row["ours_rms_err"] <= row["torchdiffeq_rms_err"]
                )
                # Error-efficiency view: NFE needed is what matters, equal error is not
                # guaranteed by equal tolerances (different controllers).
            else:
                row["target_met"] = None
            per_tol[f"{tol:g}"] = row
            progress(f"dopri5 {name} tol {tol:g} done")
        rows[name] = {"field": desc, **ref_info, "tolerances": per_tol}
    return rows


# --------------------------------------------------------------------------- section 4: graphs
def section_graph(fields, args, device):
    if not torch.cuda.is_available():
        return {"status": "n/a (no CUDA)"}
    if device.type != "cuda":
        return {"status": "n/a (--device cpu)"}
    steps = args.steps
    rows = {}
    for name, f, y0, desc in fields:
        grid, grid_list, hs = uniform_grid(steps, y0)
        contenders = {
            "raw": lambda: raw_euler(f, y0, grid_list, hs),
            "graph": lambda: solve(f, y0, 0.0, 1.0, "euler", steps=steps, cuda_graph=True),
            "graph_auto": lambda: solve(f, y0, 0.0, 1.0, "euler", steps=steps, cuda_graph="auto"),
        }
        r = bench(contenders, device, args.repeats, warmup=2)  # warm-up includes capture
        used = bool(r["graph"]["result"].stats.get("cuda_graph", False))
        row = {
            "field": desc,
            "steps": steps,
            "raw_s": r["raw"]["median_s"],
            "graph_s": r["graph"]["median_s"],
            "graph_auto_s": r["graph_auto"]["median_s"],
            "graph_used": used,
            "raw_over_graph": _ratio(r["raw"]["median_s"], r["graph"]["median_s"]),
            "target_raw_over_graph": TARGETS["graph_raw_over_graph_min"],
        }
        row["target_met"] = used and row["raw_over_graph"] >= TARGETS["graph_raw_over_graph_min"]
        rows[name] = row
    return rows


# --------------------------------------------------------------------------- output
def _fmt_s(x) -> str:
    if not isinstance(x, (int, float)):
        return "n/a"
    return f"{x * 1e3:9.2f}ms" if x < 10 else f"{x:9.2f}s "


def _fmt_r(x) -> str:
    return f"{x:6.2f}" if isinstance(x, (int, float)) else "   n/a"


def _ok(x) -> str:
    return {True: "yes", False: "NO", None: "n/a"}[x]


def print_tables(res: dict) -> None:
    m = res["meta"]
    print(
        f"\nndmsolve solver overhead — {m['device']} ({m['device_type']}), torch {m['torch']}, "
        f"torchdiffeq {m['torchdiffeq']}, torchsde {m['torchsde']}, threads {m['threads']}"
    )
    print(
        f"timing: median of {res['config']['repeats']} interleaved repeats after warm-up, torch.no_grad()"
    )

    print(
        f"\n[1] Euler, {res['config']['steps']} steps         ours        raw  torchdiffeq  ours/raw  tdq/raw  overhead/step  target ours/raw<=1.1"
    )
    for k, r in res["euler"].items():
        print(
            f"  {k:<24} {_fmt_s(r['ours_s'])} {_fmt_s(r['raw_s'])} {_fmt_s(r.get('torchdiffeq_s'))}"
            f"    {_fmt_r(r['ours_over_raw'])}   {_fmt_r(r.get('torchdiffeq_over_raw'))}"
            f"  {r['per_step_overhead_us']:9.1f} us    {_ok(r['target_met'])}"
            f"   (min-time ratio {r['ours_over_raw_min']:.2f})"
            f"   (aten ops/step ours-raw: {r['extra_aten_ops_per_step']:+.2f})"
        )

    print(
        f"\n[2] Euler-Maruyama, {res['config']['steps']} steps ours        raw     torchsde  ours/raw  sde/raw  sde/ours  target sde/ours>=5"
    )
    for k, r in res["euler_maruyama"].items():
        print(
            f"  {k:<24} {_fmt_s(r.get('ours_s'))} {_fmt_s(r['raw_s'])} {_fmt_s(r.get('torchsde_s'))}"
            f"    {_fmt_r(r.get('ours_over_raw'))}   {_fmt_r(r.get('torchsde_over_raw'))}"
            f"   {_fmt_r(r.get('torchsde_over_ours'))}   {_ok(r['target_met'])}"
            + (
                f"   (aten ops/step ours-raw: {r['extra_aten_ops_per_step']:+.2f})"
                if "extra_aten_ops_per_step" in r
                else ""
            )
        )

    print(
        "\n[3] dopri5 vs torchdiffeq        tol   NFE ours/tdq (acc/rej)   time ours / tdq        "
        "RMS err ours / tdq       max err ours / tdq     target"
    )
    for k, blk in res["dopri5"].items():
        print(
            f"  {k}: {blk['field']}; ref: {blk['ref_method']}"
            + (
                f" (vs ours@ref_tol: {blk['ref_crosscheck_max_diff_vs_ours']:.1e})"
                if "ref_crosscheck_max_diff_vs_ours" in blk
                else ""
            )
        )
        for tol, r in blk["tolerances"].items():
            print(
                f"  {'':<28} {tol:>6}  {r['ours_nfe']:5d} / {r.get('torchdiffeq_nfe', 'n/a'):<5}"
                f" ({r['ours_accepted']}/{r['ours_rejected']})  "
                f"{_fmt_s(r['ours_s'])} / {_fmt_s(r.get('torchdiffeq_s'))}  "
                f"{r['ours_rms_err']:.2e} / {r.get('torchdiffeq_rms_err', float('nan')):.2e}  "
                f"{r['ours_max_err']:.2e} / {r.get('torchdiffeq_max_err', float('nan')):.2e}  "
                f"{_ok(r['target_met'])}"
            )

    print(
        "\n[4] CUDA graph (Euler)           raw eager   graph   graph(auto)  raw/graph  target>=3"
    )
    g = res["cuda_graph"]
    if "status" in g:
        print(f"  {g['status']}")
    else:
        for k, r in g.items():
            print(
                f"  {k:<24} {_fmt_s(r['raw_s'])} {_fmt_s(r['graph_s'])} {_fmt_s(r['graph_auto_s'])}"
                f"   {_fmt_r(r['raw_over_graph'])}   {_ok(r['target_met'])}"
                + ("" if r["graph_used"] else "  (graph NOT used: fell back to eager)")
            )
    print(
        "\ntargets met:",
        ", ".join(f"{k}={_ok(v)}" for k, v in res["targets_met"].items() if k != "per_field"),
    )


def _strip(obj):
    """JSON-safe copy: drop tensors/Solutions, map inf/nan to strings."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k != "result"}
    if isinstance(obj, (list, tuple)):
        return [_strip(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def write_json_atomic(path: str, data: dict) -> None:
    common.write_json_atomic(
        os.path.abspath(path),
        _strip(data),
        prefix=".solver_overhead.",
        suffix=".json.tmp",
        sort_keys=False,
        file_mode=0o644,
    )  # mkstemp: 0600


def _summary(res: dict) -> dict:
    def agg(rows):
        vals = [r["target_met"] for r in rows if r.get("target_met") is not None]
        return None if not vals else all(vals)

    tm = {
        "euler_ours_over_raw<=1.1": agg(res["euler"].values()),
        "em_torchsde_over_ours>=5": agg(res["euler_maruyama"].values()),
        "dopri5_nfe_and_error<=torchdiffeq": agg(
            [r for blk in res["dopri5"].values() for r in blk["tolerances"].values()]
        ),
        "cuda_graph_raw_over_graph>=3": (
            None if "status" in res["cuda_graph"] else agg(res["cuda_graph"].values())
        ),
    }
    # Per-field breakdown, so a miss on the cheap field is not hidden by the aggregate.
    tm["per_field"] = {
        "euler": {k: r["target_met"] for k, r in res["euler"].items()},
        "euler_maruyama": {k: r["target_met"] for k, r in res["euler_maruyama"].items()},
        "dopri5": {
            f"{k}@{t}": r["target_met"]
            for k, blk in res["dopri5"].items()
            for t, r in blk["tolerances"].items()
        },
    }
    return tm


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument(
        "--out",
        default=None,
        help="JSON path (default benchmarks/results/solver_overhead_<device>.json)",
    )
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--adaptive-repeats", type=int, default=None)
    p.add_argument("--mlp-batch", type=int, default=None)
    p.add_argument("--conv-batch", type=int, default=None)
    p.add_argument("--conv-base", type=int, default=None)
    p.add_argument("--small-batch", type=int, default=None)
    p.add_argument("--adaptive-batch", type=int, default=None)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads on CPU (default 2; 1 with --quick: tiny ops "
        "with 2 OpenMP threads on a busy 2-core machine are 10-30x slower)",
    )
    p.add_argument(
        "--fields",
        default="mlp-small,mlp,conv",
        help="comma-separated subset of mlp-small,mlp,conv",
    )
    p.add_argument("--no-json", action="store_true")
    a = p.parse_args(argv)
    cuda = a.device == "cuda"
    if a.quick:
        defaults = dict(
            steps=10,
            repeats=2,
            adaptive_repeats=1,
            mlp_batch=64,
            conv_batch=2,
            conv_base=4,
            small_batch=16,
            adaptive_batch=16,
            threads=1,
        )
        a.tols = [1e-3]
        a.ref_tol = 1e-6
    else:
        defaults = dict(
            steps=200,
            repeats=7,
            adaptive_repeats=5,
            mlp_batch=8192 if cuda else 2048,
            conv_batch=128 if cuda else 8,
            conv_base=16 if cuda else 8,
            small_batch=256,
            adaptive_batch=8192 if cuda else 1024,
            threads=2,
        )
        a.tols = [1e-5, 1e-3]
        a.ref_tol = 1e-10
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.repeats < 1 or a.steps < 1:
        p.error("--repeats and --steps must be >= 1")
    a.fields = [s.strip() for s in a.fields.split(",") if s.strip()]
    bad = set(a.fields) - {"mlp-small", "mlp", "conv"}
    if bad:
        p.error(f"unknown fields {sorted(bad)}")
    return a


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda requested but CUDA is not available", file=sys.stderr)
        raise SystemExit(2)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    res = {
        "meta": {
            "device": device_name(device),
            "device_type": device.type,
            "torch": torch.__version__,
            "torchdiffeq": common.version(torchdiffeq),
            "torchsde": common.version(torchsde),
            "python": platform.python_version(),
            "ndmsolve_methods": list(all_methods()),
            "threads": torch.get_num_threads(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "config": {k: v for k, v in vars(args).items() if k not in ("no_json", "out")},
        "targets": TARGETS,
    }
    with torch.no_grad():
        fields = build_fields(args, device)
        res["config"]["field_descriptions"] = {n: d for n, _, _, d in fields}
        res["euler"] = section_euler(fields, args, device)
        res["euler_maruyama"] = section_em(fields, args, device)
        res["dopri5"] = section_dopri5(args, device)
        res["cuda_graph"] = section_graph(fields, args, device)
    res["targets_met"] = _summary(res)
    res["meta"]["wall_s"] = time.perf_counter() - t_start
    if hasattr(os, "getloadavg"):
        res["meta"]["load_avg_at_end"] = list(os.getloadavg())
    print_tables(res)
    if not args.no_json:
        out = args.out or os.path.join(RESULTS_DIR, f"solver_overhead_{device.type}.json")
        write_json_atomic(out, res)
        print(f"\nwrote {out}")
    return res


if __name__ == "__main__":
    main()
