"""Few-step sampling: ndmsolve's samplers against k-diffusion's at 5/10/20/40 NFE.

Models (2D, so the sliced Wasserstein distance to data is a sharp quality measure):

* ``mixture``: a closed-form 5-component Gaussian mixture, ``LinearLogSNR(-10, 10)``, the
  exact predictor x̂ = E[x | z_t] (``ndmsolve.analytic``), identity transform: a classical
  diffusion, so k-diffusion's samplers apply exactly (as a denoiser D(x, σ) with
  x = z/α, σ = σ_t/α_t). Every difference is discretisation error.
* ``mixture-affine``: the same data under the time-varying affine transform
  F(x, t) = (1 − 0.6 t, 1 − 0.3 t) ⊙ x + t (0.5, −0.5) (an NDM; no peer can sample it).
* ``demo-DDPM``, ``demo-NDM``: the demo's models (checkerboard, ε-parametrised MLP; the
  NDM with a learned residual transform), trained here briefly or loaded with
  ``--checkpoints``. Their error includes the model's own; the DDPM is also sampled by
  k-diffusion.

Ours: ``euler``, ``heun`` (PF-ODE), ``ddim`` and the multistep samplers of
``ndmsolve.solvers.multistep`` on three grids (``uniform`` in t, ``logsnr``, ``karras``),
each ending at t = 0 either with z (``final=z``) or with one last evaluation returning
x̂_θ(z, 0) (``final=x_hat``, k-diffusion's final step to σ = 0). k-diffusion: Euler, Heun,
DPM-2, LMS, DPM-Solver++(2M) and (3M, η = 0) on its ``karras`` (ρ = 7) and ``exponential``
σ grids over the same σ range, ending at σ = 0 as it does. Budgets are exact predictor
counts (counted by a wrapper, not inferred).

Quality: sliced W1 (256 random directions) between ``--n`` samples and as many fresh data
draws; its floor is the same distance between two independent data draws. Mean ± standard
error over ``--seeds`` seeds (each seed: its own z1, data draw and directions). Wall time:
median over seeds of one whole sampling call, and per NFE.

k-diffusion's ``sampling.py`` is loaded alone from its file (``import k_diffusion`` pulls
torchvision and more): a stub parent package supplies the one helper it uses
(``utils.append_dims``). Without k-diffusion the comparison columns are empty.

Run: ``python benchmarks/fewstep.py`` (4000 samples, 3 seeds); the committed results used
``--n 2000 --seeds 2`` per model group (about 20 minutes per closed-form model on a
heavily shared 2-core machine; the demo group with ``--train-steps 400`` about 4);
``--quick`` for the smoke test. Writes ``benchmarks/results/fewstep_<device>.json`` and
``.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import ndmsolve as nd  # noqa: E402
from ndmsolve.metrics import random_directions, sliced_wasserstein  # noqa: E402
from ndmsolve.solvers import METHODS  # noqa: E402

OURS = ("euler", "heun", "ddim", "dpmpp_2m", "dpmpp_3m", "ei_3m", "unipc_2m", "unipc_3m")
BASELINES = ("euler", "heun", "ddim")
OUR_GRIDS = ("uniform", "logsnr", "karras")
KD_SAMPLERS = ("euler", "heun", "dpm_2", "lms", "dpmpp_2m", "dpmpp_3m")
KD_GRIDS = ("karras", "exponential")
TWO_EVAL = {"heun", "dpm_2"}  # k-diffusion samplers with 2 evaluations per step (last: 1)

#: (library, method, grid, final) scanned by default: the baselines on uniform and logsnr
#: grids, the multistep samplers on logsnr and karras grids ending with z at t = 0, and
#: the k-diffusion pairs (same arithmetic when F = identity: ours on karras ending with x̂)
SCAN = (
    [("ndmsolve", m, g, "z") for m in BASELINES for g in ("uniform", "logsnr")]
    + [("ndmsolve", m, g, "z") for m in OURS if m not in BASELINES for g in ("logsnr", "karras")]
    + [("ndmsolve", m, "karras", "x_hat") for m in ("ddim", "dpmpp_2m", "dpmpp_3m")]
    + [("k-diffusion", m, g, "x_hat") for m in ("dpmpp_2m", "dpmpp_3m") for g in KD_GRIDS]
    + [("k-diffusion", m, "karras", "x_hat") for m in ("euler", "heun", "lms", "dpm_2")]
)
#: every combination (--all-configs)
SCAN_ALL = [
    ("ndmsolve", m, g, f)
    for m in OURS
    for g in OUR_GRIDS
    for f in (("z", "x_hat") if m not in ("euler", "heun") else ("z",))
] + [("k-diffusion", m, g, "x_hat") for m in KD_SAMPLERS for g in KD_GRIDS]


# --------------------------------------------------------------------------- k-diffusion
def load_kdiffusion():
    """k-diffusion's sampling module loaded alone, or (None, reason)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None, "k-diffusion is not installed (pip install --no-deps k-diffusion)"
    path = Path(list(spec.submodule_search_locations)[0]) / "sampling.py"
    pkg = types.ModuleType("_kdiffusion")
    pkg.__path__ = []  # a package, so "from . import utils" resolves to the stub below
    utils = types.ModuleType("_kdiffusion.utils")

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    pkg.utils = utils
    sys.modules.setdefault("_kdiffusion", pkg)
    sys.modules.setdefault("_kdiffusion.utils", utils)
    try:
        mspec = importlib.util.spec_from_file_location("_kdiffusion.sampling", path)
        mod = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - report why and go on without it
        return None, f"loading {path} failed: {type(e).__name__}: {e}"
    version = None
    try:
        from importlib.metadata import version as _v

        version = _v("k-diffusion")
    except Exception:  # noqa: BLE001
        pass
    return mod, version


class KDDenoiser(torch.nn.Module):
    """k-diffusion's D(x, σ) for a classical (F = identity) NDM: x = z/α, σ = σ_t/α_t."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x, sigma):
        self.calls += 1
        lam = -2.0 * torch.log(sigma)
        t = _t_of_lambda(self.model.schedule, lam).clamp(0.0, 1.0).to(x.dtype)
        alpha, _ = self.model.schedule(t)
        return self.model.x_hat(x * alpha[:, None], t)


def _t_of_lambda(schedule, lam):
    if isinstance(schedule, nd.LinearLogSNR):
        return (lam - schedule.logsnr_max) / (schedule.logsnr_min - schedule.logsnr_max)
    from ndmsolve.sampling import _invert_log_snr

    return _invert_log_snr(schedule, lam.double(), 0.0, 1.0).to(lam.dtype)


def kd_sample(kd, model, z1, sampler: str, grid: str, nfe: int):
    """Run a k-diffusion sampler with ``nfe`` evaluations; returns (x, counted NFE, steps)."""
    n = (nfe + 1) // 2 if sampler in TWO_EVAL else nfe
    if sampler in TWO_EVAL and 2 * n - 1 != nfe:
        return None  # 2n − 1 evaluations: odd budgets only
    lam = model.schedule.log_snr(torch.tensor([1.0, 0.0], dtype=torch.float64))
    s_max, s_min = (torch.exp(-0.5 * lam)).tolist()
    if grid == "karras":
        sigmas = kd.get_sigmas_karras(n, s_min, s_max, rho=7.0)
    else:
        sigmas = kd.get_sigmas_exponential(n, s_min, s_max)
    sigmas = sigmas.to(z1.dtype)
    den = KDDenoiser(model)
    alpha1, _ = model.schedule(torch.ones(1, dtype=z1.dtype))
    x = z1 / alpha1  # z_1 = α_1 x at σ_max
    fn = getattr(kd, "sample_dpmpp_3m_sde" if sampler == "dpmpp_3m" else f"sample_{sampler}")
    kwargs = {"eta": 0.0} if sampler == "dpmpp_3m" else {}
    with torch.no_grad():
        out = fn(den, x, sigmas, disable=True, **kwargs)
    return out, den.calls, n


# --------------------------------------------------------------------------- models
class SharedTimeExactPredictor(torch.nn.Module):
    """``ExactPredictor`` for a batch evaluated at one time (every sampler here): the K
    component covariances are factorised once per call, not once per sample (~50x faster
    for 4000 samples); mixed times fall back to ``ExactPredictor``."""

    def __init__(self, data, schedule, transform=None):
        super().__init__()
        self.exact = nd.ExactPredictor(data, schedule, transform)
        self.data, self.schedule, self.transform = data, schedule, transform

    def forward(self, z, t):
        if bool(t.min() != t.max()):
            return self.exact(z, t)
        data = self.data.to(dtype=z.dtype, device=z.device)
        mu, cov, A = data._components_at(t[:1], self.schedule, self.transform)  # (1, K, ...)
        L = torch.linalg.cholesky(cov[0])  # (K, d, d)
        diff = z.unsqueeze(1) - mu  # (B, K, d)
        sol = torch.cholesky_solve(diff.permute(1, 2, 0), L).permute(2, 0, 1)  # C_k^{-1} diff
        maha = (diff * sol).sum(-1)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        r = torch.softmax(torch.log(data.weights) - 0.5 * (maha + logdet), dim=1)
        # E[x | z, k] = m_k + S_k A C_k^{-1} (z − μ_k)
        cond = data.means + torch.einsum("kij,bkj->bki", data.covs, A[0] * sol)
        return (r.unsqueeze(-1) * cond).sum(1)


def mixture_models():
    f64 = torch.float64
    ang = torch.arange(5, dtype=f64) * (2 * math.pi / 5)
    means = torch.stack([2.0 * torch.cos(ang), 2.0 * torch.sin(ang)], 1)
    rot = torch.stack(
        [
            torch.stack([torch.cos(ang), -torch.sin(ang)], -1),
            torch.stack([torch.sin(ang), torch.cos(ang)], -1),
        ],
        -2,
    )  # (5, 2, 2)
    diag = torch.diag_embed(torch.tensor([[0.35, 0.08]], dtype=f64).expand(5, 2) ** 2)
    covs = rot @ diag @ rot.transpose(1, 2)
    data = nd.GaussianMixture(torch.tensor([0.3, 0.2, 0.2, 0.15, 0.15], dtype=f64), means, covs)
    sched = nd.LinearLogSNR(-10.0, 10.0)
    z = torch.zeros(2, dtype=f64)
    affine = nd.AffineTimeTransform(
        torch.tensor([-0.6, -0.3], dtype=f64),
        z.clone(),
        torch.tensor([0.5, -0.5], dtype=f64),
        z.clone(),
    )
    models = {}
    for name, tr in (("mixture", None), ("mixture-affine", affine)):
        pred = SharedTimeExactPredictor(data, sched, tr)
        models[name] = nd.NDM(pred, transform=tr, schedule=sched, data_shape=(2,)).double()

    def draw(n, g):
        return data.sample(n, generator=g)

    return models, draw


def demo_models(train_steps: int, hidden: int, seed: int, checkpoints=None):
    from ndmsolve.cli import _demo_models
    from ndmsolve.data import checkerboard
    from ndmsolve.train import train

    if checkpoints:
        ndm, ddpm = (nd.load_model(p) for p in checkpoints)
        info = {"checkpoints": list(checkpoints)}
    else:
        ndm, ddpm = _demo_models(hidden)
        x = checkerboard(50_000, torch.Generator().manual_seed(seed))
        info = {"train_steps": train_steps, "hidden": hidden, "train_s": {}}
        for name, m in (("NDM", ndm), ("DDPM", ddpm)):
            t0 = time.perf_counter()
            res = train(
                m,
                x,
                steps=train_steps,
                batch_size=256,
                lr=2e-3,
                progress=False,
                generator=torch.Generator().manual_seed(seed + 1),
            )
            info["train_s"][name] = time.perf_counter() - t0
            if name == "NDM":
                ndm = res.ema_model
            else:
                ddpm = res.ema_model
    models = {"demo-DDPM": ddpm.float().eval(), "demo-NDM": ndm.float().eval()}

    def draw(n, g):
        return checkerboard(n, g)

    return models, draw, info


# --------------------------------------------------------------------------- runs
def our_sample(model, z1, method: str, grid: str, final: str, nfe: int):
    """Our sampler at ``nfe`` evaluations, or None when the budget does not fit."""
    per = METHODS[method].nfe_per_step
    steps = (nfe - (final == "x_hat")) // per
    if steps < METHODS[method].min_steps or steps * per + (final == "x_hat") != nfe:
        return None
    res = nd.sample(
        model, z1=z1, method=method, steps=steps, grid_kind=grid, denoise=final == "x_hat"
    )
    return res.samples, res.nfe, steps


def sw1(x, y, dirs):
    return float(sliced_wasserstein(x, y, directions=dirs, p=1.0))


def run(models, draw, nfes, seeds, n, kd, scan=None):
    """Rows {model, library, method, grid, final, nfe, steps, sw1 (per seed), wall_s}."""
    rows, floors = [], {}
    for mname, model in models.items():
        dtype = next(model.parameters(), torch.zeros((), dtype=torch.float64)).dtype
        dtype = torch.float64 if mname.startswith("mixture") else dtype
        per_seed = []
        for s in range(seeds):
            g = torch.Generator().manual_seed(1000 + s)
            z1 = torch.randn(n, 2, generator=g, dtype=dtype)
            data = draw(n, torch.Generator().manual_seed(2000 + s)).to(dtype)
            dirs = random_directions(
                256, 2, generator=torch.Generator().manual_seed(4000 + s), dtype=dtype
            )
            per_seed.append((z1, data, dirs))
        fl = [
            sw1(d, draw(n, torch.Generator().manual_seed(3000 + i)).to(d.dtype), dirs)
            for i, (_, d, dirs) in enumerate(per_seed)
        ]
        floors[mname] = _stats(fl)
        classical = type(model.transform).__name__ == "IdentityTransform"
        configs = [c for c in (scan or SCAN) if c[0] == "ndmsolve" or classical]
        if kd is None:
            configs = [c for c in configs if c[0] == "ndmsolve"]
        for nfe in nfes:
            for lib, m, grid, final in configs:
                vals, walls, got = [], [], None
                for z1, data, dirs in per_seed:
                    t0 = time.perf_counter()
                    if lib == "ndmsolve":
                        out = our_sample(model, z1.clone(), m, grid, final, nfe)
                    else:
                        out = kd_sample(kd, model, z1.clone(), m, grid, nfe)
                    walls.append(time.perf_counter() - t0)
                    if out is None:
                        break
                    x, got, steps = out
                    vals.append(
                        sw1(x.to(data.dtype), data, dirs)
                        if bool(torch.isfinite(x).all())
                        else math.inf
                    )
                if not vals:
                    continue
                st = _stats(vals)
                wall = statistics.median(walls)
                rows.append(
                    dict(
                        model=mname,
                        library=lib,
                        method=m,
                        grid=grid,
                        final=final,
                        nfe=got,
                        steps=steps,
                        sw1=st["mean"],
                        sw1_se=st["se"],
                        sw1_seeds=vals,
                        wall_s=wall,
                        wall_per_nfe_s=wall / got,
                    )
                )
            print(f"  {mname}: {nfe} NFE done", flush=True)
    return rows, floors


def _stats(v):
    v = [float(x) for x in v]
    mean = statistics.fmean(v)
    finite = len(v) > 1 and all(map(math.isfinite, v))
    se = statistics.stdev(v) / math.sqrt(len(v)) if finite else 0.0
    return {"mean": mean, "se": se}


def best_table(rows, nfes):
    """{model: {nfe: {library: best row}}}, plus per-method best (over grids and finals)."""
    out = {}
    for r in rows:
        cell = out.setdefault(r["model"], {}).setdefault(str(r["nfe"]), {})
        for key in (r["library"], f"{r['library']}:{r['method']}"):
            if key not in cell or r["sw1"] < cell[key]["sw1"]:
                cell[key] = {
                    k: r[k]
                    for k in (
                        "method",
                        "grid",
                        "final",
                        "sw1",
                        "sw1_se",
                        "steps",
                        "wall_s",
                        "wall_per_nfe_s",
                    )
                }
    return out


def plot(path, table, floors, nfes):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ndmsolve._io import atomic_write

    names = list(table)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        keys = sorted({k for cell in table[name].values() for k in cell if ":" in k})
        for k in keys:
            xs = [int(nf) for nf in table[name] if k in table[name][nf]]
            ys = [table[name][str(nf)][k]["sw1"] for nf in xs]
            ax.plot(
                xs,
                ys,
                marker="o",
                ms=3,
                lw=1.2 if k.startswith("ndmsolve") else 0.9,
                ls="-" if k.startswith("ndmsolve") else "--",
                label=k.replace("ndmsolve:", ""),
            )
        ax.axhline(floors[name]["mean"], color="k", lw=0.8, ls=":", label="data-vs-data floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(nfes, [str(v) for v in nfes])
        ax.set_title(name)
        ax.set_xlabel("NFE (predictor evaluations)")
        ax.set_ylabel("sliced W1 to data (best grid)")
    axes[0][-1].legend(fontsize=6, loc="upper right", ncol=2)
    fig.tight_layout()
    atomic_write(
        path,
        lambda fh: fig.savefig(fh, format="png", dpi=110),
        binary=True,
        prefix=".fewstep.",
        suffix=".png",
    )
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--n", type=int, default=None, help="samples per run (default 4000; quick 300)")
    p.add_argument("--seeds", type=int, default=None, help="seeds (default 3; quick 2)")
    p.add_argument("--nfe", default=None, help="comma-separated budgets (default 5,10,20,40)")
    p.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="demo model training steps (default 1500; quick 20)",
    )
    p.add_argument(
        "--checkpoints",
        nargs=2,
        metavar=("NDM", "DDPM"),
        default=None,
        help="load the demo models instead of training them",
    )
    p.add_argument(
        "--models",
        default="mixture,mixture-affine,demo",
        help="comma-separated subset of mixture,mixture-affine,demo",
    )
    p.add_argument(
        "--all-configs",
        action="store_true",
        help="scan every method x grid x final (default: the SCAN subset)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (tiny 2D models: 1)")
    p.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--out", default=None, help="JSON path (default <out-dir>/fewstep_cpu.json)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    n = a.n or (300 if a.quick else 4000)
    seeds = a.seeds or (2 if a.quick else 3)
    nfes = [int(v) for v in (a.nfe or ("5,10" if a.quick else "5,10,20,40")).split(",")]
    train_steps = a.train_steps or (20 if a.quick else 1500)
    want = set(a.models.split(","))
    unknown = want - {"mixture", "mixture-affine", "demo"}
    if unknown:
        raise SystemExit(f"--models: unknown {sorted(unknown)}")

    kd, kd_info = load_kdiffusion()
    print(f"k-diffusion: {'loaded ' + str(kd_info) if kd is not None else kd_info}", flush=True)
    models, info = {}, {}
    mix, draw_mix = mixture_models()
    draws = {}
    for k, v in mix.items():
        if k in want:
            models[k], draws[k] = v, draw_mix
    if "demo" in want:
        dm, draw_demo, info = demo_models(train_steps, 16 if a.quick else 128, 0, a.checkpoints)
        for k, v in dm.items():
            models[k], draws[k] = v, draw_demo
    out = Path(a.out) if a.out else Path(a.out_dir) / "fewstep_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, floors = [], {}
    for k, m in models.items():  # the JSON is rewritten after each model (partial results)
        r, f = run({k: m}, draws[k], nfes, seeds, n, kd, SCAN_ALL if a.all_configs else SCAN)
        rows += r
        floors.update(f)
        table = _write(out, a, rows, floors, nfes, n, seeds, kd, kd_info, info)
    _report(table, floors, nfes, n, seeds)
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


def _write(out, a, rows, floors, nfes, n, seeds, kd, kd_info, info):
    table = best_table(rows, nfes)
    device = torch.device("cpu")
    result = {
        "meta": {
            "benchmark": "fewstep",
            "device": "cpu",
            "device_name": _common.device_name(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "k_diffusion": kd_info if kd is not None else None,
            "k_diffusion_status": "loaded" if kd is not None else kd_info,
            "quick": a.quick,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "config": {
            "n": n,
            "seeds": seeds,
            "nfe": nfes,
            "n_proj": 256,
            "metric": "sliced W1",
            "demo": info,
            "ours": list(OURS),
            "our_grids": list(OUR_GRIDS),
            "scan": "all" if a.all_configs else "default (SCAN)",
        },
        "floors": floors,
        "best": table,
        "rows": rows,
    }
    _common.write_json_atomic(out, result, prefix=".fewstep.", suffix=".json")
    plot(out.with_suffix(".png"), table, floors, nfes)
    return table


def _report(table, floors, nfes, n, seeds):
    print(f"\nsliced W1 (mean ± s.e. over {seeds} seeds, {n} samples; floor = data vs data)")
    for name in table:
        print(f"\n{name}: floor {floors[name]['mean']:.4f} ± {floors[name]['se']:.4f}")
        print(f"{'NFE':>4} | {'ndmsolve best':<44} | {'k-diffusion best':<40} | euler    ddim")
        for nf in nfes:
            cell = table[name].get(str(nf), {})

            def fmt(key, width, cell=cell):
                if key not in cell:
                    return "-".ljust(width)
                c = cell[key]
                s = f"{c['sw1']:.4f}±{c['sw1_se']:.4f} {c['method']}/{c['grid']}/{c['final']}"
                return s.ljust(width)

            e = cell.get("ndmsolve:euler", {}).get("sw1", float("nan"))
            d = cell.get("ndmsolve:ddim", {}).get("sw1", float("nan"))
            print(f"{nf:>4} | {fmt('ndmsolve', 44)} | {fmt('k-diffusion', 40)} | {e:.4f}  {d:.4f}")


if __name__ == "__main__":
    raise SystemExit(main())
