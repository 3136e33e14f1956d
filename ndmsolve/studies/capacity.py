"""NDM vs DDPM across predictor capacity: held-out −ELBO at equal steps, equal parameter count
and equal CPU time, on 2-D toy sets and the 8x8 digits (issue 20; results in
docs/results/capacity.md, driven by notebooks/capacity.py).

Per (data set, predictor size, seed) the models are

* ``ndm``: predictor + F(x, t) = x + t·net(x, t) (general transform, fixed size);
* ``ndm_small``: the same with a smaller transform (toys only);
* ``ndm_tb``: F(x, t) = x + Σ_k b_k(t) h_k(x), the time-basis transform at half width;
* ``ddpm``: F = identity, the same predictor and steps (the equal-steps baseline);
* ``ddpm_params``: F = identity, the predictor widened until its parameter count matches
  the ``ndm``'s total;
* ``ddpm_cpu_<kind>``: the ``ddpm`` run continued until it has used the CPU time of the
  ``<kind>`` NDM (one run, resumed from its checkpoint; constant learning rate after a
  warm-up, so a run stopped at step k is the run of k steps).

Every model of a seed starts from the same predictor weights (the transform starts at the
identity) and is evaluated on the same held-out points with the same (t, ε) draws, so
differences are paired. Each finished run's numbers go to a JSON file in ``cache`` (atomic
writes): a rerun skips what is there.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import ndmsolve as nd
from ndmsolve.data import checkerboard, eight_gaussians, load_digits, to_model_range
from ndmsolve.fields import MLP, EpsilonPredictor, UNet
from ndmsolve.io import atomic_write
from ndmsolve.metrics import mean_se
from ndmsolve.objectives import continuous_loss, held_out_nelbo
from ndmsolve.time_proposal import AdaptiveTimeProposal
from ndmsolve.train import FolderLockedError, train

__all__ = [
    "NDM_KINDS",
    "build_model",
    "load_data",
    "evaluate",
    "n_params",
    "equal_param_size",
    "transform_departure",
    "toy_entropy",
    "independent_pixel_nats",
    "paired_gap",
    "within_seed_gap",
    "run_cell",
    "warm_up",
    "read_cell",
    "run_cells",
    "restrict",
    "summarize",
]

TOY_SETS: dict[str, Callable] = {"checkerboard": checkerboard, "eight_gaussians": eight_gaussians}
NDM_KINDS = ("ndm", "ndm_small", "ndm_tb")
N_BASIS = 8  # K of the time-basis transform
DIGIT_BINS = 17


def n_params(model: nn.Module) -> int:
    """Parameters of ``model`` (frozen ones too: an EMA copy is frozen)."""
    return sum(p.numel() for p in model.parameters())


def _transform(kind: str, image: bool, cfg: dict) -> nn.Module | None:
    """F of a model kind: None (identity) for the DDPMs; widths from ``cfg``."""
    if kind.startswith("ddpm"):
        return None
    if kind not in NDM_KINDS:
        raise ValueError(f"kind must be 'ddpm...' or one of {NDM_KINDS}, got {kind!r}")
    width = cfg["transform_small"] if kind == "ndm_small" else cfg["transform"]
    if image:
        if kind == "ndm_tb":
            net = UNet(1, base=max(1, width // 2), mults=(1,), out_channels=N_BASIS, zero_init=True)
            return nd.TimeBasisTransform(net, N_BASIS)
        return nd.ResidualTransform(UNet(1, base=width, mults=(1,), zero_init=True))
    if kind == "ndm_tb":
        net = MLP(2, hidden=max(1, width // 2), depth=2, out_dim=2 * N_BASIS, zero_init=True)
        return nd.TimeBasisTransform(net, N_BASIS)
    return nd.ResidualTransform(MLP(2, hidden=width, depth=2, zero_init=True))


def build_model(kind: str, size: int, image: bool, cfg: dict, seed: int) -> nd.NDM:
    """The model ``kind`` with predictor size ``size`` (MLP width, or U-Net base channels).

    The predictor is built first from ``seed``, so models of one seed and size share their
    initial predictor weights; ε-parametrised, linear log-SNR schedule (−12, 12).
    """
    torch.manual_seed(seed)
    sched = nd.LinearLogSNR(-12.0, 12.0)
    if image:
        net = UNet(1, base=size, mults=(1, 2))
        shape = (1, 8, 8)
    else:
        net = MLP(2, hidden=size, depth=3, x_features=cfg.get("x_features", 0))
        shape = (2,)
    predictor = EpsilonPredictor(net, sched)
    transform = _transform(kind, image, cfg)
    return nd.NDM(predictor, transform=transform, schedule=sched, data_shape=shape).float()


def equal_param_size(target: int, count: Callable[[int], int], start: int) -> int:
    """The size s >= ``start`` whose ``count(s)`` (increasing in s) is closest to ``target``."""
    lo, hi = start, start
    while count(hi) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda s: abs(count(s) - target))


@torch.no_grad()
def transform_departure(model: nd.NDM, x: torch.Tensor, ts=(0.1, 0.25, 0.5, 0.75, 1.0)) -> float:
    """RMS per coordinate of F(x, t) − x over the points ``x`` (n, *shape) and the t grid
    ``ts``: how far the learned transform moved from the DDPM's identity (0 for a DDPM)."""
    sq = [((model.transform(x, torch.full((x.shape[0],), t)) - x) ** 2).mean().item() for t in ts]
    return math.sqrt(sum(sq) / len(sq))


def toy_entropy(name: str, n: int = 400_000, seed: int = 0) -> tuple[float, float]:
    """(differential entropy in nats, its SE) of a toy set: exact for the checkerboard
    (uniform on 8 squares of side 2: log 32), Monte Carlo −E log p for the eight Gaussians
    (its exact mixture density; SE from ``n`` draws)."""
    if name == "checkerboard":
        return math.log(32.0), 0.0
    if name != "eight_gaussians":
        raise ValueError(f"name must be one of {sorted(TOY_SETS)}, got {name!r}")
    x = eight_gaussians(n, torch.Generator().manual_seed(seed), dtype=torch.float64)
    angle = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centers = 4.0 * torch.stack([angle.cos(), angle.sin()], 1) / math.sqrt(2)
    var = (0.5 / math.sqrt(2)) ** 2
    d2 = ((x[:, None, :] - centers[None]) ** 2).sum(-1)  # (n, 8)
    logp = torch.logsumexp(-d2 / (2 * var), 1) - math.log(8 * 2 * math.pi * var)
    return mean_se(-logp)


def independent_pixel_nats(train_px: torch.Tensor, test_px: torch.Tensor) -> torch.Tensor:
    """Per test image (n,): −log p in nats under independent per-pixel categoricals over the
    17 levels fitted on ``train_px`` (add-one smoothing); images as integer levels (n, 1, 8, 8)."""
    tr, te = train_px.long().flatten(1), test_px.long().flatten(1)
    counts = torch.nn.functional.one_hot(tr, DIGIT_BINS).sum(0).double() + 1.0  # (64, 17)
    logp = (counts / counts.sum(1, keepdim=True)).log()
    return -logp.gather(1, te.T).T.sum(1)


def paired_gap(a: dict, b: dict) -> tuple[float, float, list[int]]:
    """Mean over the seeds both hold of a[seed] − b[seed] (per-seed −ELBO means, same points
    and draws), its SE over seeds (training noise included), and those seeds."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("a and b share no seed")
    m, se = mean_se([a[s] - b[s] for s in seeds])
    return m, (se if len(seeds) > 1 else float("nan")), seeds


def within_seed_gap(a: dict, b: dict) -> list[float]:
    """[mean, SE] over the held-out points of a's − b's per-point −ELBO (two records of one
    seed: same points and draws), the evaluation noise alone."""
    d = torch.tensor(a["per_point"], dtype=torch.float64) - torch.tensor(
        b["per_point"], dtype=torch.float64
    )
    return list(mean_se(d))


# ----------------------------------------------------------------- one (set, size, seed) cell
def load_data(dataset: str, seed: int, cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(train (N, *shape), held-out test (n_eval, *shape)) of ``dataset`` ("checkerboard",
    "eight_gaussians" or "digits", in the model's range); the test set is the same for every
    seed."""
    if dataset == "digits":
        rng = functools.partial(to_model_range, n_bins=DIGIT_BINS)
        return rng(load_digits("train")[0]), rng(load_digits("test")[0][: cfg["n_eval"]])
    fn = TOY_SETS[dataset]
    return fn(cfg["n_train"], torch.Generator().manual_seed(seed)), fn(
        cfg["n_eval"], torch.Generator().manual_seed(10_000)
    )


def _loss_kw(image: bool) -> dict:
    if image:  # discrete pixels: discretised decoder over the 17 levels
        return {"loss": functools.partial(continuous_loss, decoder="discretized", n_bins=17)}
    return {"time_proposal": AdaptiveTimeProposal()}


def evaluate(model, x, image: bool, cfg: dict, seed: int) -> torch.Tensor:
    """Per-point −ELBO (nats) with the low-variance estimator; one seed per training seed, so
    every model of a seed sees the same pilot, t and ε draws (paired)."""
    g = torch.Generator().manual_seed(1_000 + seed)
    kw = {"decoder": "discretized", "n_bins": DIGIT_BINS} if image else {}
    return held_out_nelbo(
        model, x, draws=cfg["draws"], generator=g, pilot_rows=cfg.get("pilot_rows", 20_000), **kw
    )


def _train(
    model, x, steps: int, image: bool, cfg: dict, seed: int, **kw
) -> tuple[nn.Module, float]:
    """Train in this process; returns (EMA model, process CPU seconds of the training)."""
    c0 = time.process_time()
    res = train(
        model,
        x,
        steps=steps,
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        lr_schedule="constant",  # a run stopped at step k is the k-step run (resumed chains)
        warmup_steps=cfg["warmup_steps"],
        ema_decay=cfg["ema_decay"],
        generator=torch.Generator().manual_seed(seed + 1),
        progress=False,
        **_loss_kw(image),
        **kw,
    )
    return res.ema_model, time.process_time() - c0


def _record(model, per_point, cpu_s: float, steps: int, size: int, x_eval) -> dict:
    m, se = mean_se(per_point)
    return {
        "nelbo": m,
        "se": se,
        "steps": steps,
        "size": size,
        "params": n_params(model),
        "cpu_s": cpu_s,
        "f_departure": transform_departure(model, x_eval[:500]),
        "per_point": [round(float(v), 5) for v in per_point],
    }


def _cached(path: Path, make: Callable[[], dict]) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    rec = make()
    atomic_write(path, lambda f: json.dump(rec, f), binary=False)
    return rec


def _cell_dir(cache: Path, dataset: str, size: int, seed: int) -> Path:
    return Path(cache) / dataset / f"size{size}" / f"seed{seed}"


def read_cell(dataset: str, size: int, seed: int, cache: Path) -> dict:
    """The records of one cell that ``cache`` holds, {kind: record} (possibly empty)."""
    cell = _cell_dir(cache, dataset, size, seed)
    return {p.stem: json.loads(p.read_text()) for p in sorted(cell.glob("*.json"))}


def warm_up(dataset: str, cfg: dict) -> None:
    """A throwaway 3-step training and evaluation of every model kind of ``cfg``, so one-time
    costs of the process do not enter a measured run's CPU time."""
    image = dataset == "digits"
    x_tr, x_te = load_data(dataset, 0, cfg)
    small = cfg | {"steps": 3, "draws": 1, "pilot_rows": 64}
    for kind in ("ddpm", *[k for k in NDM_KINDS if k in cfg["kinds"]]):
        model = build_model(kind, cfg["sizes"][0], image, cfg, 0)
        ema, _ = _train(model, x_tr, 3, image, small, 0)
        evaluate(ema, x_te[:8], image, small, 0)


def run_cell(dataset: str, size: int, seed: int, cfg: dict, cache: Path, log=print) -> dict:
    """Train and evaluate every model of one (data set, predictor size, seed); returns
    {kind: record}. Records are read from / written to ``cache`` (one JSON per model)."""
    image = dataset == "digits"
    x_tr, x_te = load_data(dataset, seed, cfg)
    cell = _cell_dir(cache, dataset, size, seed)
    kinds = [k for k in NDM_KINDS if k in cfg["kinds"]]
    out = {}

    def fit(kind: str, msize: int) -> dict:
        model = build_model(kind, msize, image, cfg, seed)
        ema, cpu = _train(model, x_tr, cfg["steps"], image, cfg, seed)
        return _record(ema, evaluate(ema, x_te, image, cfg, seed), cpu, cfg["steps"], msize, x_te)

    chain = cell / "ddpm_chain.pt"

    def chain_to(steps: int, prev: float) -> Callable[[], dict]:
        def make() -> dict:
            model = build_model("ddpm", size, image, cfg, seed)
            kw = {"resume": True} if chain.is_file() else {"overwrite": True}
            ema, cpu = _train(model, x_tr, steps, image, cfg, seed, checkpoint=chain, **kw)
            per = evaluate(ema, x_te, image, cfg, seed)
            return _record(ema, per, prev + cpu, steps, size, x_te)

        return make

    out["ddpm"] = _cached(cell / "ddpm.json", chain_to(cfg["steps"], 0.0))
    for kind in kinds:
        out[kind] = _cached(cell / f"{kind}.json", lambda k=kind: fit(k, size))
        log(f"{dataset} size {size} seed {seed} {kind}: {out[kind]['nelbo']:.4f} nats")
    target = out["ndm"]["params"]
    wide = equal_param_size(
        target, lambda s: n_params(build_model("ddpm", s, image, cfg, seed)), size
    )
    out["ddpm_params"] = _cached(cell / "ddpm_params.json", lambda: fit("ddpm_params", wide))
    # The DDPM continued to each NDM's CPU time, shortest first (one resumed run).
    per_step = out["ddpm"]["cpu_s"] / cfg["steps"]
    matched = sorted((max(cfg["steps"], round(out[k]["cpu_s"] / per_step)), k) for k in kinds)
    prev = out["ddpm"]
    for steps, kind in matched:
        name = f"ddpm_cpu_{kind}"
        out[name] = _cached(cell / f"{name}.json", chain_to(steps, prev["cpu_s"]))
        prev = out[name]
    log(f"{dataset} size {size} seed {seed} ddpm: {out['ddpm']['nelbo']:.4f} nats")
    return out


def run_cells(
    cfg: dict, cache: Path, *, cached_only: bool = False, reverse: bool = False, log=print
) -> dict:
    """Every cell of ``cfg`` (``seeds``; ``sets[dataset]`` with its ``sizes``), seeds
    outermost so a run cut short still covers every data set and size: ``cells[dataset][size]
    [seed][kind]`` records. ``cached_only``: read the cache, train nothing; ``reverse``:
    largest size first (a second process meets the first midway). A cell another process is
    training (its folder locked) is read as far as the cache holds it."""
    if not cached_only:
        # One-time costs (lazy imports, allocator) would land in the first run's CPU time and
        # skew its equal-CPU step count: pay them on a throwaway run first.
        for ds, c in cfg["sets"].items():
            warm_up(ds, c)
    cells: dict = {}
    for seed in cfg["seeds"]:
        for ds, c in cfg["sets"].items():
            for size in c["sizes"][::-1] if reverse else c["sizes"]:
                if cached_only:
                    rec = read_cell(ds, size, seed, cache)
                else:
                    try:
                        rec = run_cell(ds, size, seed, c, cache, log=log)
                    except FolderLockedError as e:
                        log(f"{ds} size {size} seed {seed}: skipped ({e})")
                        rec = read_cell(ds, size, seed, cache)
                if rec:
                    cells.setdefault(ds, {}).setdefault(size, {})[seed] = rec
    return cells


def restrict(
    cfg: dict, sets: str | None = None, seeds: str | None = None, sizes: str | None = None
):
    """``cfg`` cut to comma-separated ``sets`` (names), ``seeds`` and ``sizes`` (ints), each
    ``None`` for all: how the notebooks split a run over processes."""
    if sets:
        names = sets.split(",")
        unknown = sorted(set(names) - set(cfg["sets"]))
        if unknown:
            raise ValueError(f"sets must name data sets in {sorted(cfg['sets'])}, got {unknown}")
        cfg = cfg | {"sets": {k: cfg["sets"][k] for k in names}}
    if seeds:
        cfg = cfg | {"seeds": tuple(int(s) for s in seeds.split(","))}
    if sizes:
        cut = tuple(int(s) for s in sizes.split(","))
        cfg = cfg | {"sets": {k: c | {"sizes": cut} for k, c in cfg["sets"].items()}}
    return cfg


# ----------------------------------------------------------------- the table
COMPARISONS = {
    "equal_steps": {"ndm": "ddpm", "ndm_small": "ddpm", "ndm_tb": "ddpm"},
    "equal_params": {"ndm": "ddpm_params"},
    "equal_cpu": {k: f"ddpm_cpu_{k}" for k in NDM_KINDS},
}


def summarize(cells: dict) -> dict:
    """``cells[dataset][size][seed][kind]`` (records) -> per data set and size: per model the
    −ELBO mean and SE over seeds, seeds, parameters, CPU seconds and F's departure from the
    identity; per comparison the paired NDM − DDPM gap (mean ± SE over seeds)."""
    table = {}
    for ds, by_size in cells.items():
        table[ds] = {}
        for size, by_seed in sorted(by_size.items()):
            kinds = sorted({k for rec in by_seed.values() for k in rec})
            models = {}
            for k in kinds:
                recs = {s: r[k] for s, r in by_seed.items() if k in r}
                m, se = mean_se([r["nelbo"] for r in recs.values()])
                models[k] = {
                    "nelbo": m,
                    "se": se if len(recs) > 1 else None,
                    "seeds": sorted(recs),
                    "params": next(iter(recs.values()))["params"],
                    "steps": mean_se([r["steps"] for r in recs.values()])[0],
                    "cpu_s": mean_se([r["cpu_s"] for r in recs.values()])[0],
                    "f_departure": mean_se([r["f_departure"] for r in recs.values()])[0],
                    "per_seed_nelbo": {str(s): r["nelbo"] for s, r in recs.items()},
                }
            gaps = {}
            for comp, pairs in COMPARISONS.items():
                for a, b in pairs.items():
                    both = [s for s, r in by_seed.items() if a in r and b in r]
                    if both:
                        av = {s: r[a]["nelbo"] for s, r in by_seed.items() if a in r}
                        bv = {s: r[b]["nelbo"] for s, r in by_seed.items() if b in r}
                        g, se, seeds = paired_gap(av, bv)
                        within = {
                            str(s): within_seed_gap(by_seed[s][a], by_seed[s][b]) for s in seeds
                        }
                        gaps[f"{comp}:{a}"] = {
                            "gap": g,
                            "se": se,
                            "seeds": seeds,
                            "vs": b,
                            "per_seed": within,
                        }
            table[ds][str(size)] = {"models": models, "gaps": gaps}
    return table
