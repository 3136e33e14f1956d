"""NFE-vs-quality sweep: which sampler reaches a given sample quality with the fewest NFE.

For every model, every method and every setting of its grid (a step count for fixed-step
ODE/SDE and discrete methods, a tolerance rtol = atol for adaptive ones), and every seed,
``sweep`` draws ``n`` samples with ``nd.sample``, records the NFE and the wall time, and
scores the samples against the model's *truth*:

* a closed-form model (predictor ``ndmsolve.analytic.ExactPredictor``; see
  ``closed_form_models``) is scored against exact draws of its own marginal q(z_0) (the
  data pushed through q(z_0 | x)), and ``"nll"`` is available: −mean log q_0(z) of the
  samples under the exact closed-form density;
* any other model is scored against ``reference(n, generator)``, draws of the data.

Two-sample metrics come from ``ndmsolve.metrics.SAMPLE_METRICS`` (``energy_distance``,
``sliced_wasserstein``). Each metric comes with its floor (``ndmsolve.metrics.floor``): its
value for truth-vs-truth sets of the same sizes, below which no sampler can be told apart.
``"nll"`` is a cross-entropy, not a divergence: its floor is the truth's entropy
(the value of exact samples); a sampler that collapses onto the modes can go below it.

Seeds: seed s draws the prior and the sampler's noise from ``Generator().manual_seed(s)``,
the truth set from seed ``REF_SEED + s`` and the metric's own randomness (SW directions)
from ``METRIC_SEED + s``: for one seed every method is scored against the same truth set,
so differences between methods are paired.

The result (``SweepResult``) holds one row per (model, method, setting) with the columns
``COLUMNS`` (and, for each metric m, ``m`` = mean over seeds and ``m_se`` = its standard
error), the floors, and, for quality levels, the method reaching each with the fewest NFE.
``SweepResult.write_json`` / ``ndmsolve.viz.plot_sweep`` write the table and the figure.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..analytic import ExactPredictor
from ..io import atomic_write
from ..metrics import SAMPLE_METRICS, as_seeds, call_metric, floor, mean_se
from ..solvers.base import SolverError
from ..solvers.registry import get_method, method_names
from .recipes import Recipe, as_recipe

__all__ = [
    "sweep",
    "SweepResult",
    "COLUMNS",
    "METRICS",
    "DEFAULT_STEPS",
    "DEFAULT_TOLS",
    "DEFAULT_FLOOR_SEEDS",
    "method_kind",
    "default_methods",
    "closed_form_models",
    "best_methods",
    "best_rows",
    "load_models",
]

#: per-row columns; each metric m adds ``m`` (mean over seeds) and ``m_se``
COLUMNS = (
    "model",
    "method",
    "options",
    "kind",
    "steps",
    "tol",
    "nfe",
    "nfe_se",
    "wall_s",
    "n",
    "seeds",
    "error",
)
#: metric names ``sweep`` accepts: the two-sample metrics, and "nll" for closed-form models
METRICS = tuple(sorted(SAMPLE_METRICS)) + ("nll",)
#: step counts for fixed-step ODE/SDE and discrete methods, when not given
DEFAULT_STEPS = (2, 4, 8, 16, 32, 64)
#: tolerances (rtol = atol) for adaptive methods by kind, when not given. ODE: 1e-1 and
#: looser let the embedded pair accept one or two steps on a closed-form DDPM (measured: the
#: same 8 NFE from 1 to 1e-2); SDE: the EM/Heun pair needs ~1e3 NFE at 1e-3.
DEFAULT_TOLS = {"ode_adaptive": (1e-2, 1e-3, 1e-4, 1e-5), "sde_adaptive": (1.0, 0.3, 0.1, 0.03)}
#: seed offsets of the truth sets and of the metrics' randomness (see the module docstring)
REF_SEED, METRIC_SEED = 1_000_003, 2_000_003
#: quality levels, when not given: these multiples of the first metric's floor. Not closer:
#: exact samples' energy distance spreads over seeds by about the floor itself (16 seeds of
#: the closed-form DDPM at n = 1000: floor 0.0050 ± 0.0015, exact PF-ODE 0.0077 ± 0.0014), so
#: below ~2x the floor a level separates seeds, not samplers.
DEFAULT_FLOOR_MULTIPLES = (10.0, 3.0, 2.0)
#: seeds of each metric's floor, when not given (independent of the sweep's seeds): with
#: 2 seeds the closed-form DDPM's energy-distance floor came out 0.0177 ± 0.0051, with 20
#: 0.0086 ± 0.0008, so every converged method sat "below the floor"
DEFAULT_FLOOR_SEEDS = 10


# --------------------------------------------------------------------------- methods
def method_kind(method: str) -> str:
    """``"ode_fixed"``, ``"ode_adaptive"``, ``"sde_fixed"``, ``"sde_adaptive"`` or
    ``"discrete"``, read from the method registry (``nd.solvers.METHODS``; backends by their
    family and stepping too); an unknown name gets the registry's error listing the valid ones."""
    info = get_method(method, caller="the sweep")
    return "discrete" if info.family == "model" else f"{info.family}_{info.stepping}"


def default_methods() -> tuple[str, ...]:
    """Every registered method (``nd.solvers.METHODS``), backends aside."""
    return method_names(backends=False)


def _method_grid(methods, steps, tols) -> list[tuple[Recipe, str, list]]:
    """[(recipe, kind, settings)]; settings are step counts or tolerances by kind."""
    if methods is None:
        methods = default_methods()
    if isinstance(methods, (str, Recipe)):
        methods = [methods]
    if isinstance(methods, Mapping):  # a value None: the shared steps/tols
        items = [(_recipe(m), v) for m, v in methods.items()]
    else:
        items = [(_recipe(m), None) for m in methods]
    if not items:
        raise ValueError(
            "methods must name at least one method (see nd.sampling.sampling_methods())"
        )
    names = [r.name for r, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"methods must not repeat a name, got {names}")
    grid = []
    for recipe, own in items:
        m = recipe.method
        kind = method_kind(m)
        adaptive = kind.endswith("adaptive")
        if own is not None:
            settings = own  # its own grid
        elif adaptive:
            settings = DEFAULT_TOLS[kind] if tols is None else tols
        else:
            settings = steps
        what = "tolerances (tols)" if adaptive else "step counts (steps)"
        settings = _check_settings(settings, adaptive, f"{what} for {recipe.name!r}")
        if not adaptive:
            low = get_method(m).min_steps
            if own is None:  # shared step counts: skip those m cannot take
                settings = [s for s in settings if s >= low] or settings
            elif min(settings) < low:
                raise ValueError(
                    f"{what} for {recipe.name!r} must be >= its history length {low}, "
                    f"got {min(settings)}"
                )
        grid.append((recipe, kind, settings))
    return grid


def _recipe(item) -> Recipe:
    try:
        return as_recipe(item)
    except ValueError as e:
        raise ValueError(f"methods: {e}") from None


def _check_settings(settings, adaptive: bool, what: str) -> list:
    if settings is None or isinstance(settings, (str, bytes)) or not isinstance(settings, Sequence):
        raise TypeError(f"{what} must be a sequence, got {settings!r}")
    if len(settings) == 0:
        raise ValueError(f"{what} must not be empty")
    out = []
    for v in settings:
        if adaptive:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < math.inf):
                raise ValueError(f"{what} must be positive finite numbers, got {v!r}")
            out.append(float(v))
        else:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{what} must be positive ints, got {v!r}")
            out.append(v)
    if len(set(out)) != len(out):
        raise ValueError(f"{what} must not repeat a value, got {list(settings)}")
    return sorted(out, reverse=adaptive)  # cheapest first: large tolerances, few steps


# --------------------------------------------------------------------------- models
def closed_form_models(data=None, schedule=None, transform=None, *, shared_time=False) -> dict:
    """A closed-form NDM and DDPM on one Gaussian mixture: ``{"NDM": ..., "DDPM": ...}``.

    Both use the exact predictor x̂ = E[x | z_t] (``ndmsolve.analytic.ExactPredictor``), so
    their PF-ODE and reverse SDE are the exact ones of their forward processes: every
    difference between samplers is discretisation error. The NDM's transform is affine in
    x (default: F(x, t) = (1 − 0.6 t, 1 − 0.3 t) ⊙ x + t (0.5, −0.5)); the DDPM's is the
    identity. Default data: 8 Gaussians of std 0.15 on the circle of radius 2, 2D;
    default schedule ``LinearLogSNR(-12, 12)``. ``shared_time``: passed to
    ``ExactPredictor`` (a batch at one time factorises the covariances once).
    """
    from .. import LinearLogSNR
    from ..analytic import AffineTimeTransform, GaussianMixture
    from ..process import NDM

    if data is None:
        ang = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
        means = 2.0 * torch.stack([torch.cos(ang), torch.sin(ang)], dim=1)
        f64 = torch.float64
        covs = 0.15**2 * torch.eye(2, dtype=f64).expand(8, 2, 2)
        data = GaussianMixture(torch.ones(8, dtype=f64), means, covs)
    if not isinstance(data, GaussianMixture):
        raise TypeError(
            f"data must be an ndmsolve.analytic.GaussianMixture, got {type(data).__name__}"
        )
    if transform is None:
        z = torch.zeros(data.d, dtype=torch.float64)
        a1 = torch.tensor([-0.6, -0.3], dtype=torch.float64) if data.d == 2 else z - 0.5
        b1 = torch.tensor([0.5, -0.5], dtype=torch.float64) if data.d == 2 else z + 0.5
        transform = AffineTimeTransform(a1, z.clone(), b1, z.clone())
    sched_ndm = LinearLogSNR(-12.0, 12.0) if schedule is None else schedule
    models = {}
    for name, tr in (("NDM", transform), ("DDPM", None)):
        pred = ExactPredictor(data, sched_ndm, tr, shared_time=shared_time)
        models[name] = NDM(pred, transform=tr, schedule=sched_ndm, data_shape=(data.d,))
    return models


def load_models(models) -> dict:
    """``{name: NDM}`` from a mapping of names to NDMs or checkpoint paths (a single NDM is
    named ``"model"``); paths are read with ``ndmsolve.load_model``."""
    from pathlib import PurePath

    from torch import nn

    if isinstance(models, nn.Module):
        models = {"model": models}
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty mapping {name: NDM or checkpoint path}")
    out = {}
    for name, m in models.items():
        if isinstance(m, (str, PurePath)):
            from ..checkpoint import load_model

            m = load_model(m)
        for attr in ("velocity", "schedule", "data_shape"):
            if not hasattr(m, attr):
                raise TypeError(
                    f"models[{name!r}] must be an NDM or a checkpoint path, got {type(m).__name__}"
                )
        if m.data_shape is None:
            raise ValueError(f"models[{name!r}] has no data_shape: build it with data_shape=(...)")
        out[str(name)] = m
    return out


def _is_closed_form(model) -> bool:
    return isinstance(getattr(model, "predictor", None), ExactPredictor)


class _ClosedFormTruth:
    """Exact draws of q(z_0) = ∫ q(z_0 | x) p(x) dx and the exact log q_0, of a closed-form NDM."""

    def __init__(self, model, t_min: float):
        self.model, self.t_min = model, t_min
        self.data = model.predictor.data.to(dtype=torch.float64)

    def __call__(self, n: int, generator: torch.Generator) -> Tensor:
        """z_0 = α F(x, t_min) + σ ε with x from the data, float64 (n, d)."""
        x = self.data.sample(n, generator)
        t = torch.full((n,), self.t_min, dtype=x.dtype)
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        with torch.no_grad():
            alpha, sigma = self.model.schedule(t)
            F = self.model.transform(x, t)
            return alpha.to(x.dtype).unsqueeze(1) * F + sigma.to(x.dtype).unsqueeze(1) * eps

    def log_prob(self, z: Tensor) -> Tensor:
        z = z.to(torch.float64).reshape(z.shape[0], -1)
        t = torch.full((z.shape[0],), self.t_min, dtype=z.dtype)
        return self.data.marginal_log_prob(z, t, self.model.schedule, self.model.transform)


# --------------------------------------------------------------------------- result
@dataclass
class SweepResult:
    """Rows (one per model, method and setting; columns ``COLUMNS`` plus, for each metric m,
    ``m`` and ``m_se``), floors ``{model: {metric: FloorResult.to_dict()}}``, ``best`` (see
    ``best_methods``), the metrics and the configuration."""

    rows: list
    floors: dict
    metrics: tuple
    config: dict
    best: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "columns": list(COLUMNS) + [c for m in self.metrics for c in (m, f"{m}_se")],
            "rows": self.rows,
            "floors": self.floors,
            "best": self.best,
            "metrics": list(self.metrics),
            "config": self.config,
        }

    def write_json(self, path) -> Path:
        """Write ``to_dict()`` as JSON, atomically (NaN written as null)."""
        text = json.dumps(_nan_to_none(self.to_dict()), indent=1, allow_nan=False)
        return atomic_write(path, lambda f: f.write(text), binary=False)

    def save(self, folder) -> None:
        """Write ``sweep.json`` (``write_json``) and ``sweep.png`` (``ndmsolve.viz.plot_sweep``)
        into ``folder``."""
        from ..viz import plot_sweep

        self.write_json(Path(folder) / "sweep.json")
        plot_sweep(self, Path(folder) / "sweep.png")

    def summary(self) -> str:
        """The table and the best methods, as text."""
        ms = self.metrics
        lines = [
            f"{'model':<6} {'method':<18} {'setting':>9} {'NFE':>7} "
            + " ".join(f"{m + ' ± se':>28}" for m in ms)
            + f" {'wall s':>8}"
        ]
        for r in self.rows:
            setting = f"{r['steps']} st" if r["steps"] is not None else f"tol {r['tol']:.0e}"
            if r["error"]:
                lines.append(
                    f"{r['model']:<6} {r['method']:<18} {setting:>9}   failed: {r['error']}"
                )
                continue
            vals = " ".join(f"{r[m]:>16.5g} ± {r[m + '_se']:<9.2g}" for m in ms)
            lines.append(
                f"{r['model']:<6} {r['method']:<18} {setting:>9} {r['nfe']:>7.1f} {vals} "
                f"{r['wall_s']:>8.3f}"
            )
        for name, fl in self.floors.items():
            lines.append(
                f"floor {name}: "
                + ", ".join(f"{m} {f['mean']:.5g} ± {f['se']:.2g}" for m, f in fl.items())
            )
        for name, levels in self.best.items():
            for lv in levels:
                who = (
                    f"{lv['method']} ({lv['nfe']:.0f} NFE, {lv['metric']} {lv['value']:.4g} "
                    f"± {lv['se']:.2g})"
                    if lv["method"]
                    else "no method"
                )
                lines.append(f"best {name}: {lv['metric']} <= {lv['quality']:.4g}: {who}")
        return "\n".join(lines)


def _nan_to_none(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def best_rows(rows: Sequence[dict], key: str, by: str | None = None) -> dict:
    """The row with the smallest ``key`` in each group of rows sharing ``row[by]`` (one
    group ``None`` when ``by`` is None): ``{group: row}``, groups in first-seen order.
    Rows with a truthy ``"error"`` are skipped; of equal values the first row wins.

    The one selection both readings of a table use: ``best_methods`` (the fewest NFE
    reaching a quality) and the few-step benchmark (the best quality at a fixed NFE).
    """
    best: dict = {}
    for r in rows:
        if r.get("error"):
            continue
        g = None if by is None else r[by]
        if g not in best or r[key] < best[g][key]:
            best[g] = r
    return best


def best_methods(rows: Sequence[dict], metric: str, quality: Sequence[float]) -> dict:
    """For each model and each quality level q: the (method, setting) with the fewest mean
    NFE among the rows whose mean ``metric`` is ≤ q, and each method's own fewest NFE
    (``None``: never reached). ``{model: [{quality, metric, method, steps, tol, nfe, value,
    se, per_method}]}``."""
    out: dict = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model and not r["error"]]
        levels = []
        for q in quality:
            ok = [r for r in mine if r[metric] <= q]
            win = best_rows(ok, "nfe").get(None)
            per_method = {m: r["nfe"] for m, r in best_rows(ok, "nfe", "method").items()}
            levels.append(
                dict(
                    quality=float(q),
                    metric=metric,
                    method=win["method"] if win else None,
                    steps=win["steps"] if win else None,
                    tol=win["tol"] if win else None,
                    nfe=win["nfe"] if win else None,
                    value=win[metric] if win else None,
                    se=win[f"{metric}_se"] if win else None,
                    per_method={
                        m: per_method.get(m) for m in dict.fromkeys(r["method"] for r in mine)
                    },
                )
            )
        out[model] = levels
    return out


# --------------------------------------------------------------------------- sweep
def sweep(
    models,
    methods=None,
    *,
    steps: Sequence[int] = DEFAULT_STEPS,
    tols: Sequence[float] | None = None,
    seeds=3,
    n: int = 1000,
    n_ref: int | None = None,
    metrics: Sequence[str] = ("energy_distance", "sliced_wasserstein"),
    reference: Callable | Mapping | None = None,
    quality: Sequence[float] | None = None,
    t_min: float = 0.0,
    max_steps: int = 10_000,
    floor_seeds=DEFAULT_FLOOR_SEEDS,
    out: str | Path | None = None,
    progress: bool = False,
) -> SweepResult:
    """Sample quality against NFE for a grid of models × methods × settings × seeds.

    Args:
        models: ``{name: NDM or checkpoint path}`` (or one NDM). Closed-form models
            (``closed_form_models()``) are scored against their exact marginal.
        methods: methods or recipes (default ``default_methods()``: every registered
            method but the backends): names, recipe specs such as
            ``"unipc_2m:grid_kind=logsnr,sigma_min=0.12,denoise=true"``, dicts or
            ``Recipe`` objects (``ndmsolve.studies.recipes``), or ``{method or recipe:
            settings}`` to give each its own grid (None: the shared ``steps``/``tols``).
            A recipe's options go to ``nd.sample`` as given; one that stops before t = 0
            (``sigma_min``/``t_min``) must end with ``denoise=true``.
            Rows are labelled by the recipe's name (default: its spec string).
        steps: step counts for fixed-step and discrete methods.
        tols: tolerances (rtol = atol) for adaptive methods (default ``DEFAULT_TOLS`` by
            kind).
        seeds: an int k (seeds 0..k−1) or a sequence of ints; at least 2.
        n: samples per (setting, seed); n_ref: truth samples they are scored against
            (default n).
        metrics: names from ``METRICS``; the first one decides ``best``.
        reference: ``reference(n, generator) -> (n, *shape)`` data draws for models that
            are not closed-form (or ``{model name: sampler}``).
        quality: levels of the first metric for ``best``; default ``DEFAULT_FLOOR_MULTIPLES``
            times each model's floor of that metric.
        t_min: the time sampled to (and the time of the closed-form truth), default 0.
        max_steps: adaptive methods' step limit; a solve that hits it (or NaN) is recorded
            as a row with ``error`` set and no values.
        floor_seeds: seeds of each metric's floor (an int k: k seeds, or a sequence; at
            least 2; default ``DEFAULT_FLOOR_SEEDS`` = 10), independent of ``seeds``: the
            floor's mean ± standard error over them.
        out: a folder: writes ``sweep.json`` and ``sweep.png`` there.
        progress: print one line per row.

    Returns:
        ``SweepResult``.
    """
    models = load_models(models)
    grid = _method_grid(methods, steps, tols)
    metrics = _check_metrics(metrics)
    seeds = as_seeds(seeds)
    floor_seeds = as_seeds(floor_seeds, "floor_seeds")
    n_ref, quality = _check_sizes_and_quality(grid, n, n_ref, quality)
    truths = {name: _truth(name, m, reference, t_min, metrics) for name, m in models.items()}
    rows, floors = [], {}
    for name, model in models.items():
        truth = truths[name]
        floors[name] = _floors(truth, metrics, n, n_ref, floor_seeds)
        refs = {s: truth(n_ref, torch.Generator().manual_seed(REF_SEED + s)) for s in seeds}
        run = _Run(model, truth, refs, metrics, seeds, n, t_min, max_steps)
        for recipe, kind, settings in grid:
            for setting in settings:
                rows.append(run.row(name, recipe, kind, setting))
                if progress:
                    print(_row_line(rows[-1], metrics), flush=True)
    best = _best(models, rows, floors, metrics[0], quality)
    config = _config(models, grid, seeds, floor_seeds, n, n_ref, metrics, t_min, max_steps, quality)
    result = SweepResult(rows=rows, floors=floors, metrics=tuple(metrics), config=config, best=best)
    if out is not None:
        result.save(out)
    return result


def _check_sizes_and_quality(grid, n, n_ref, quality) -> tuple[int, list | None]:
    """``n_ref`` (default ``n``) and the quality levels as floats, after checking them and
    that every recipe stopping before t = 0 denoises."""
    for recipe, _, _ in grid:
        if recipe.ends_early and recipe.options.get("denoise") is not True:
            raise ValueError(
                f"methods: {recipe.name!r} stops before t = 0 (sigma_min/t_min): add "
                "denoise=true (its z there is not a draw of the truth at t_min)"
            )
    for name, v in (("n", n), ("n_ref", n if n_ref is None else n_ref)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            raise ValueError(f"{name} must be an int >= 2, got {v!r}")
    if quality is not None:
        quality = [float(q) for q in quality]
        if not quality:
            raise ValueError("quality must hold at least one level (or be None)")
    return (n if n_ref is None else n_ref), quality


@dataclass
class _Run:
    """One model's sampling runs against its truth sets ``refs`` ({seed: (n_ref, d)})."""

    model: object
    truth: Callable
    refs: dict
    metrics: list
    seeds: list
    n: int
    t_min: float
    max_steps: int

    def row(self, name: str, recipe: Recipe, kind: str, setting) -> dict:
        """The row of one (method, setting): NFE, wall time and each metric, mean ± se over
        the seeds; a ``SolverError`` gives a row with ``error`` set and NaN values."""
        adaptive = kind.endswith("adaptive")
        row = dict(
            model=name,
            method=recipe.name,
            options=dict(recipe.options, method=recipe.method),
            kind=kind,
            steps=None if adaptive else setting,
            tol=setting if adaptive else None,
            n=self.n,
            seeds=list(self.seeds),
            error=None,
        )
        opts = dict(recipe.options)
        if not recipe.ends_early:
            opts["t_min"] = self.t_min
        kw = dict(rtol=setting, atol=setting, max_steps=self.max_steps) if adaptive else {}
        kw = kw or dict(steps=setting)
        try:
            nfes, walls, per_seed = self._draws(recipe.method, opts, kw)
        except SolverError as e:
            row["error"] = f"{type(e).__name__}: {e}"
            row.update(nfe=math.nan, nfe_se=math.nan, wall_s=math.nan)
            row.update({c: math.nan for m in self.metrics for c in (m, f"{m}_se")})
            return row
        row["nfe"], row["nfe_se"] = mean_se(nfes)
        row["wall_s"] = sum(walls) / len(walls)
        for m in self.metrics:
            row[m], row[f"{m}_se"] = mean_se(per_seed[m])
        return row

    def _draws(self, method: str, opts: dict, kw: dict) -> tuple[list, list, dict]:
        from ..sampling import sample

        per_seed = {m: [] for m in self.metrics}
        nfes, walls = [], []
        for s in self.seeds:
            t0 = time.perf_counter()
            g = torch.Generator().manual_seed(s)
            res = sample(self.model, self.n, method, generator=g, **opts, **kw)
            walls.append(time.perf_counter() - t0)
            nfes.append(res.nfe)
            x = res.samples.float()
            for m in self.metrics:
                per_seed[m].append(_score(m, x, self.refs[s], self.truth, s))
        return nfes, walls, per_seed


def _config(models, grid, seeds, floor_seeds, n, n_ref, metrics, t_min, max_steps, quality):
    """``SweepResult.config``: the sweep's arguments as run."""
    return dict(
        models=list(models),
        methods={r.name: s for r, _, s in grid},
        recipes={r.name: dict(r.options, method=r.method) for r, _, _ in grid},
        seeds=list(seeds),
        floor_seeds=list(floor_seeds),
        n=n,
        n_ref=n_ref,
        metrics=list(metrics),
        t_min=t_min,
        max_steps=max_steps,
        quality=quality,
        floor_multiples=None if quality is not None else list(DEFAULT_FLOOR_MULTIPLES),
        closed_form={k: _is_closed_form(m) for k, m in models.items()},
    )


def _best(models, rows, floors, primary: str, quality) -> dict:
    """``best_methods`` per model, at ``quality`` or at multiples of the model's floor."""
    best = {}
    for name in models:
        levels = (
            quality
            if quality is not None
            else [k * floors[name][primary]["mean"] for k in DEFAULT_FLOOR_MULTIPLES]
        )
        best.update(best_methods([r for r in rows if r["model"] == name], primary, levels))
    return best


def _check_metrics(metrics) -> list:
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics = list(metrics)
    if not metrics:
        raise ValueError(f"metrics must name at least one of {list(METRICS)}")
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"unknown metric {m!r}; metrics must be among {list(METRICS)}")
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"metrics must not repeat a name, got {metrics}")
    return metrics


def _truth(name: str, model, reference, t_min: float, metrics) -> Callable:
    if isinstance(reference, Mapping):
        reference = reference.get(name)
    if _is_closed_form(model):
        if reference is not None:
            raise ValueError(
                f"models[{name!r}] is closed-form and is scored against its exact "
                "marginal: do not pass a reference for it"
            )
        return _ClosedFormTruth(model, t_min)
    if "nll" in metrics:
        raise ValueError(
            f"metric 'nll' needs the exact density: models[{name!r}] is not a "
            "closed-form model (ExactPredictor)"
        )
    if reference is None or not callable(reference):
        raise ValueError(
            f"models[{name!r}] is not closed-form: pass reference=sampler(n, generator) "
            "drawing the data it is scored against"
        )
    return reference


def _floors(truth, metrics, n: int, n_ref: int, seeds) -> dict:
    out = {}
    for m in metrics:
        if m == "nll":  # the value of exact samples: the truth's entropy
            vals = [
                float(-truth.log_prob(truth(n, torch.Generator().manual_seed(REF_SEED + s))).mean())
                for s in seeds
            ]
            mu, se = mean_se(vals)
            out[m] = dict(mean=mu, se=se, values=vals, n=n, n_ref=n_ref, seeds=list(seeds))
        else:
            # floor() seeds one generator per seed for both sets and the metric
            out[m] = floor(
                m, truth, n, [METRIC_SEED + REF_SEED + s for s in seeds], n_ref=n_ref
            ).to_dict()
    return out


def _score(metric: str, x: Tensor, ref: Tensor, truth, seed: int) -> float:
    if metric == "nll":
        return float(-truth.log_prob(x).mean())
    return call_metric(
        metric, x, ref.to(x.dtype), generator=torch.Generator().manual_seed(METRIC_SEED + seed)
    )


def _row_line(row: dict, metrics) -> str:
    setting = f"steps={row['steps']}" if row["steps"] is not None else f"tol={row['tol']:.0e}"
    if row["error"]:
        return f"{row['model']} {row['method']} {setting}: {row['error']}"
    vals = ", ".join(f"{m} {row[m]:.4g} ± {row[m + '_se']:.2g}" for m in metrics)
    head = f"{row['model']} {row['method']} {setting}"
    return f"{head}: NFE {row['nfe']:.1f}, {vals}, {row['wall_s']:.3f} s"
