"""Cost of the NDM drift relative to a plain forward pass, side by side in one run.

One drift evaluation is what ``NDM.fields`` does: x̂ = x̂_θ(z, t), F(x̂, t) and
∂_t F(x̂, t). We divide its time by one forward of predictor and transform
(x̂ then F, no derivative) and report the ratio for each way of getting ∂_t F:

    func        torch.func.jvp (forward mode)
    autograd    torch.autograd.functional.jvp (double-backward trick)
    fd          central finite differences (two extra transform calls)
    time_basis  TimeBasisTransform: ∂_t F analytic from the same pass (its own baseline)

and a few attempts at a cheaper general (neural-transform) drift:

    forward_ad      the same JVP through torch.autograd.forward_ad dual tensors directly
    fd_stacked      both finite-difference evaluations in one call on a 2B batch,
                    F taken as their mean (O(h²) error, fine for comparison)
    func_compiled   torch.compile of the JVP function
    fused_compiled  torch.compile of predictor + JVP + drift arithmetic in one function

Everything runs under ``torch.no_grad()`` as sampling does. Timings are interleaved
(variant after variant, round after round) so a change of machine load hits all
variants alike; we report the median over rounds.

    python -m benchmarks.drift_cost [--device cpu|cuda] [--quick] [--threads 2]

Writes ``benchmarks/results/drift_cost_<device>.json`` (atomically).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from collections.abc import Callable

import torch
import torch.autograd.forward_ad as fwAD

import ndmsolve as nd
from benchmarks import common
from ndmsolve.fields import MLP, UNet

_HERE = os.path.dirname(os.path.abspath(__file__))

RESULTS = os.path.join(_HERE, "results")

# Sizes: the full run (2-D toy data, 32×32×3 images) and a --quick one for smoke tests.
CASES = {
    "mlp": dict(
        full=dict(batch=8192, hidden=128, depth=3), quick=dict(batch=64, hidden=16, depth=1)
    ),
    "conv": dict(full=dict(batch=128, size=32, base=16), quick=dict(batch=2, size=8, base=4)),
}
N_BASIS = 4


def build(case: str, cfg: dict, device: torch.device):
    """Predictor, residual transform, time-basis transform and a batch (z, t)."""
    torch.manual_seed(0)
    if case == "mlp":
        d, b = 2, cfg["batch"]
        mk = lambda out=None: MLP(d, hidden=cfg["hidden"], depth=cfg["depth"], out_dim=out)  # noqa: E731
        pred, tnet, hnet = mk(), mk(), mk(N_BASIS * d)
        z = torch.randn(b, d)
    else:
        b, s, c = cfg["batch"], cfg["size"], 3
        mk = lambda out=None: UNet(c, base=cfg["base"], mults=(1, 2), out_channels=out)  # noqa: E731
        pred, tnet, hnet = mk(), mk(), mk(N_BASIS * c)
        z = torch.randn(b, c, s, s)
    # Non-zero last layers everywhere, so ∂_t F is not trivially 0.
    residual = nd.ResidualTransform(tnet)
    basis = nd.TimeBasisTransform(hnet, N_BASIS, "sine")
    mods = [m.to(device).eval() for m in (pred, residual, basis)]
    t = torch.rand(z.shape[0]).mul(0.9).add(0.05)
    return (*mods, z.to(device), t.to(device))


def _bc(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return a.reshape(a.shape + (1,) * (x.ndim - 1))


def _drift_from(model: nd.NDM, z, t, x_hat, F, dF):
    """score and forward drift from x̂, F, ∂_t F: the arithmetic of NDM.fields."""
    sched = model.schedule
    # alpha_sigma2 skips the value check on t (a host sync, and a graph break under compile).
    alpha2, sigma2 = sched.alpha_sigma2(t)
    alpha = alpha2.sqrt()
    score = -(z - _bc(alpha, z) * F) / _bc(sigma2, z)
    drift = _bc(0.5 * sigma2 * sched.dlog_snr(t), z) * z + _bc(alpha, z) * dF
    return drift, score


def variants(pred, residual, basis, z, t, compile_ok: bool):
    """name -> (callable, baseline name). Attempts are checked against NDM.fields."""
    models = {m: nd.NDM(pred, residual, dF=m, check=False) for m in ("func", "autograd", "fd")}
    model_tb = nd.NDM(pred, basis, dF="analytic", check=False)
    ref = models["func"]
    out: dict[str, tuple[Callable, str]] = {
        "base_residual": (lambda: residual(pred(z, t), t), None),
        "base_time_basis": (lambda: basis(pred(z, t), t), None),
        "func": (lambda: models["func"].fields(z, t), "base_residual"),
        "autograd": (lambda: models["autograd"].fields(z, t), "base_residual"),
        "fd": (lambda: models["fd"].fields(z, t), "base_residual"),
        "time_basis_analytic": (lambda: model_tb.fields(z, t), "base_time_basis"),
    }

    h = torch.finfo(z.dtype).eps ** (1 / 3)

    def fd_stacked():
        # One transform call on [x̂; x̂] at [t + h; t − h]: better batching than two calls.
        x_hat = pred(z, t)
        both = residual(torch.cat([x_hat, x_hat]), torch.cat([t + h, t - h]))
        up, down = both.chunk(2)
        return _drift_from(ref, z, t, x_hat, 0.5 * (up + down), (up - down) / (2 * h))

    out["fd_stacked"] = (fd_stacked, "base_residual")

    def forward_ad():
        # The same forward-mode JVP as torch.func.jvp, through the C++ dual-number API
        # directly: no functorch wrapping of every op.
        x_hat = pred(z, t)
        with fwAD.dual_level():
            out_t = residual(x_hat, fwAD.make_dual(t, torch.ones_like(t)))
            F, dF = fwAD.unpack_dual(out_t)
        return _drift_from(ref, z, t, x_hat, F, dF)

    out["forward_ad"] = (forward_ad, "base_residual")

    if compile_ok:

        def jvp(x_hat, tt):
            return torch.func.jvp(lambda s: residual(x_hat, s), (tt,), (torch.ones_like(tt),))

        jvp_c = torch.compile(jvp, dynamic=False)

        def func_compiled():
            x_hat = pred(z, t)
            F, dF = jvp_c(x_hat, t)
            return _drift_from(ref, z, t, x_hat, F, dF)

        def fused(zz, tt):
            x_hat = pred(zz, tt)
            F, dF = torch.func.jvp(lambda s: residual(x_hat, s), (tt,), (torch.ones_like(tt),))
            return _drift_from(ref, zz, tt, x_hat, F, dF)

        fused_c = torch.compile(fused, dynamic=False)
        base_c = torch.compile(lambda zz, tt: residual(pred(zz, tt), tt), dynamic=False)
        out["func_compiled"] = (func_compiled, "base_residual")
        out["fused_compiled"] = (lambda: fused_c(z, t), "base_residual")
        # The fair baseline for a compiled drift is a compiled forward.
        out["base_residual_compiled"] = (lambda: base_c(z, t), None)
        out["fused_compiled_vs_compiled_base"] = (
            out["fused_compiled"][0],
            "base_residual_compiled",
        )
    return out


def _check_attempt(name: str, fn: Callable, ref_drift: torch.Tensor) -> None:
    """An attempt must give NDM.fields' drift (fd variants only approximately)."""
    res = fn()
    drift = res.drift if hasattr(res, "drift") else res[0]
    scale = ref_drift.abs().max().item() + 1e-12
    err = (drift - ref_drift).abs().max().item() / scale
    tol = 1e-2 if "fd" in name else 1e-4
    if not err < tol:
        raise RuntimeError(f"{name}: drift differs from NDM.fields by {err:.2e} (relative)")


def run_case(case: str, cfg: dict, device, rounds: int, min_time: float, try_compile: bool) -> dict:
    pred, residual, basis, z, t = build(case, cfg, device)
    result: dict = {
        "config": dict(cfg, data_shape=list(z.shape[1:]), n_basis=N_BASIS),
        "attempts": {},
    }
    with torch.no_grad():
        vs = variants(pred, residual, basis, z, t, try_compile)
        ref_drift = nd.NDM(pred, residual, dF="func").fields(z, t).drift
        usable = {}
        for name, (fn, base) in vs.items():
            try:
                if base is not None and name not in (
                    "func",
                    "autograd",
                    "fd",
                    "time_basis_analytic",
                ):
                    _check_attempt(name, fn, ref_drift)
                else:
                    fn()
                usable[name] = fn
            except (
                Exception
            ) as e:  # an attempt that fails (e.g. no compiler) is reported, not fatal
                msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
                result["attempts"][name] = {"error": msg}
                print(f"  [{case}] {name} failed: {msg}", file=sys.stderr)
                if os.environ.get("NDM_BENCH_TRACE"):
                    traceback.print_exc()
        # Deduplicate callables timed twice (fused vs two baselines).
        times = common.time_all(
            {n: f for n, f in usable.items() if n != "fused_compiled_vs_compiled_base"},
            device,
            rounds,
            min_time,
            warmup=2,
        )
    if "fused_compiled" in times:
        times["fused_compiled_vs_compiled_base"] = times["fused_compiled"]
    result["ms"] = {n: 1e3 * s for n, s in times.items()}
    ratios = {}
    for name, (_, base) in vs.items():
        if base is None or name not in times or base not in times:
            continue
        ratios[name] = times[name] / times[base]
    main_keys = ("func", "autograd", "fd", "time_basis_analytic")
    result["ratios"] = {k: ratios[k] for k in main_keys if k in ratios}
    for k, r in ratios.items():
        if k not in main_keys:
            result["attempts"][k] = {"ratio": r, "ms": result["ms"][k]}
    return result


def _fmt(v):
    return f"{v:8.2f}" if isinstance(v, (int, float)) and math.isfinite(v) else f"{'-':>8}"


def print_table(res: dict) -> None:
    cases = list(res["cases"])
    print(
        f"\nNDM drift cost / forward (x̂ + F) cost — {res['device_name']} ({res['device']}), "
        f"torch {res['torch']}, threads {res['threads']}{', QUICK' if res['quick'] else ''}"
    )
    print(f"{'':40}" + "".join(f"{c:>18}" for c in cases))
    print(f"{'config':40}" + "".join(f"{_cfg(res['cases'][c]['config']):>18}" for c in cases))
    rows = ["func", "autograd", "fd", "time_basis_analytic"]
    extra = sorted({k for c in cases for k in res["cases"][c]["attempts"]})
    print(
        f"{'base forward ms (residual F)':40}"
        + "".join(f"{_fmt(res['cases'][c]['ms'].get('base_residual')):>18}" for c in cases)
    )
    print(
        f"{'base forward ms (time-basis F)':40}"
        + "".join(f"{_fmt(res['cases'][c]['ms'].get('base_time_basis')):>18}" for c in cases)
    )
    for r in rows:
        print(
            f"{'ratio ' + r:40}"
            + "".join(f"{_fmt(res['cases'][c]['ratios'].get(r)):>18}" for c in cases)
        )
    for r in extra:
        cells = []
        for c in cases:
            a = res["cases"][c]["attempts"].get(r, {})
            cells.append(f"{'failed':>18}" if "error" in a else f"{_fmt(a.get('ratio')):>18}")
        print(f"{'attempt ' + r:40}" + "".join(cells))
    print()


def _cfg(cfg: dict) -> str:
    return f"B={cfg['batch']} " + "x".join(map(str, cfg["data_shape"]))


def write_json(res: dict, out_dir: str) -> str:
    path = os.path.join(out_dir, f"drift_cost_{res['device']}.json")
    common.write_json_atomic(path, res, prefix=".drift_cost_", suffix=".json")
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_run_args(p, rounds_help="timing rounds (default 7; quick 3)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile attempts")
    common.add_cases_args(p, CASES, RESULTS)
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device available")
    device = torch.device(a.device)
    old_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(a.threads)
    rounds = a.rounds or (3 if a.quick else 7)
    min_time = a.min_time if a.min_time is not None else (0.005 if a.quick else 0.3)
    try_compile = not (a.no_compile or a.quick)
    res = dict(common.run_meta("drift_cost", a, device, rounds), cases={})
    try:
        for case in a.cases.split(","):
            cfg = CASES[case]["quick" if a.quick else "full"]
            print(f"running {case} {cfg} ...", file=sys.stderr, flush=True)
            res["cases"][case] = run_case(case, cfg, device, rounds, min_time, try_compile)
    finally:
        torch.set_num_threads(old_threads)
    path = write_json(res, a.out_dir)
    print_table(res)
    print(f"wrote {path}")
    return res


if __name__ == "__main__":
    main()
