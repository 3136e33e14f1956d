"""SDE solvers: strong and weak convergence on closed forms, adaptive stepping, errors, properties."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ndmsolve.solvers.base import NonFiniteError, StepLimitError
from ndmsolve.solvers.brownian import BrownianPath
from ndmsolve.solvers.registry import METHODS, method_names
from ndmsolve.solvers.sde import NOISE_TYPES, adaptive_heun_sde, euler_maruyama, heun_sde, sra1

DT = torch.float64
# The registry's SDE methods by stepping: name -> implementation.
SDE_FIXED = {m: METHODS[m].run for m in method_names("sde", "fixed", backends=False)}
SDE_ADAPTIVE = {m: METHODS[m].run for m in method_names("sde", "adaptive", backends=False)}
ADDITIVE_ONLY = [m for m in SDE_FIXED if "diagonal" not in METHODS[m].noise]


def grid(t0, t1, n, dtype=DT):
    return torch.linspace(t0, t1, n + 1, dtype=dtype)


def slope(hs, errs):
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


# --------------------------------------------------------------------------- problems
# Linear additive SDE dX = (a t + b X) dt + c (1 + t) dW: time-dependent drift and noise.
A_, B_, C_ = 1.0, -1.5, 0.7


def f_lin(t, y):
    return A_ * t + B_ * y


def g_lin(t, y):
    return C_ * (1.0 + t)  # 0-dim: broadcasts (additive, diagonal)


def f_ou(t, y, th=2.0):
    return -th * y


# --------------------------------------------------------------------------- strong order
def test_euler_maruyama_strong_order_half_on_geometric_bm():
    """dX = μX dt + σX dW, X(1) = X0 exp((μ − σ²/2) + σ W(1)); same path for every step."""
    mu, sig, n_paths = 0.5, 1.0, 2000
    bm = BrownianPath(0.0, 1.0, (n_paths,), DT, generator=torch.Generator().manual_seed(3))
    y0 = torch.ones(n_paths, dtype=DT)
    exact = torch.exp((mu - 0.5 * sig**2) + sig * bm.increment(0.0, 1.0))
    ns = [8, 16, 32, 64, 128]
    errs = []
    for n in ns:
        sol = euler_maruyama(
            lambda t, y: mu * y, lambda t, y: sig * y, y0, grid(0.0, 1.0, n), bm=bm
        )
        errs.append(float((sol.y - exact).abs().mean()))
    p = slope([1 / n for n in ns], errs)
    assert 0.35 < p < 0.7, (p, errs)


@pytest.mark.parametrize("t0,t1", [(0.0, 1.0), (1.0, 0.0)])
def test_additive_strong_orders_both_directions(t0, t1):
    """EM and stochastic Heun are strong order 1 for additive noise, SRA1 at least 1.5
    (here 2: with a linear drift and noise linear in t its stochastic terms are exact)."""
    n_paths = 300
    bm = BrownianPath(t0, t1, (n_paths,), DT, generator=torch.Generator().manual_seed(11))
    y0 = torch.full((n_paths,), 0.5, dtype=DT)
    ref = sra1(f_lin, g_lin, y0, grid(t0, t1, 256), bm=bm).y
    # The reference is sane: a second scheme on the same path agrees with it (to its O(h)).
    ref2 = heun_sde(f_lin, g_lin, y0, grid(t0, t1, 256), bm=bm).y
    assert float((ref - ref2).abs().mean()) < 1e-2
    ns = [8, 16, 32, 64]
    hs = [1 / n for n in ns]
    expected = {"euler_maruyama": (0.8, 1.25), "heun_sde": (0.8, 1.3), "sra1": (1.3, 2.3)}
    for name, (lo, hi) in expected.items():
        errs = [
            float(
                (
                    SDE_FIXED[name](f_lin, g_lin, y0, grid(t0, t1, n), bm=bm, noise="additive").y
                    - ref
                )
                .abs()
                .mean()
            )
            for n in ns
        ]
        p = slope(hs, errs)
        assert lo < p < hi, (name, p, errs)


# --------------------------------------------------------------------------- weak errors
def test_euler_maruyama_weak_moments_ou():
    """EM's own mean/variance recursions hold, and its weak error shrinks with the step."""
    th, sig, n_paths = 2.0, 0.5, 40000
    y0 = torch.ones(n_paths, dtype=DT)
    m_exact = math.exp(-th)
    v_exact = sig**2 / (2 * th) * (1 - math.exp(-2 * th))
    errs = []
    for n in (4, 32):
        h = 1.0 / n
        sol = euler_maruyama(
            f_ou,
            lambda t, y: torch.full_like(y, sig),
            y0,
            grid(0.0, 1.0, n),
            generator=torch.Generator().manual_seed(n),
        )
        m, v = float(sol.y.mean()), float(sol.y.var())
        m_em = (1 - th * h) ** n
        v_em = sig**2 * h * sum((1 - th * h) ** (2 * k) for k in range(n))
        assert abs(m - m_em) < 5 * math.sqrt(v_em / n_paths)
        assert abs(v - v_em) < 5 * v_em * math.sqrt(2 / n_paths)
        errs.append((abs(m - m_exact), abs(v - v_exact)))
        assert sol.nfe == n and sol.stats["nfe_g"] == n
    assert errs[1][0] < errs[0][0] / 4 and errs[1][1] < errs[0][1] / 4


@pytest.mark.parametrize("name", ADDITIVE_ONLY)
def test_higher_order_weak_moments_reverse_time(name):
    """Integrating t: 1 -> 0 the OU drift −θy grows: mean e^θ y0, var σ²(e^{2θ} − 1)/(2θ)."""
    th, sig, n_paths = 1.0, 0.5, 20000
    y0 = torch.ones(n_paths, dtype=DT)
    m_exact = math.exp(th)
    v_exact = sig**2 / (2 * th) * (math.exp(2 * th) - 1)
    errs = []
    for n in (4, 64):
        sol = SDE_FIXED[name](
            lambda t, y: -th * y,
            lambda t, y: torch.tensor(sig, dtype=DT),
            y0,
            grid(1.0, 0.0, n),
            generator=torch.Generator().manual_seed(5 + n),
            noise="additive",
        )
        errs.append((abs(float(sol.y.mean()) - m_exact), abs(float(sol.y.var()) - v_exact)))
    tol_m = 5 * math.sqrt(v_exact / n_paths)
    tol_v = 5 * v_exact * math.sqrt(2 / n_paths)
    assert errs[1][0] < tol_m + 2e-3 and errs[1][1] < tol_v + 5e-3, errs
    assert errs[0][0] > errs[1][0] and errs[0][1] > errs[1][1], errs


# --------------------------------------------------------------------------- adaptive
def test_adaptive_matches_fine_solve_on_same_path():
    n_paths = 200
    bm = BrownianPath(0.0, 1.0, (n_paths,), DT, generator=torch.Generator().manual_seed(7))
    y0 = torch.linspace(-1, 1, n_paths, dtype=DT)

    def f(t, y):
        return -3.0 * y + torch.sin(8 * t) * 2.0

    def g(t, y):
        return 0.6 * (1 + t)

    ref = sra1(f, g, y0, grid(0.0, 1.0, 1024), bm=bm).y
    errs, rejected = [], 0
    for tol in (1e-1, 1e-2, 1e-3):
        calls = {"f": 0, "g": 0}

        def fw(t, y):
            calls["f"] += 1
            return f(t, y)

        def gw(t, y):
            calls["g"] += 1
            return g(t, y)

        sol = adaptive_heun_sde(fw, gw, y0, 0.0, 1.0, rtol=tol, atol=tol, h0=0.5, bm=bm)
        assert sol.nfe == calls["f"] and sol.stats["nfe_g"] == calls["g"]
        assert sol.nfe == 2 * sol.n_accepted + sol.n_rejected  # f(t, y) is reused on rejection
        assert calls["g"] == sol.n_accepted + sol.n_rejected + 2
        assert sol.n_accepted > 0 and sol.t == 1.0
        rejected += sol.n_rejected
        errs.append(float((sol.y - ref).abs().mean()))
    assert rejected > 0
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 5e-3, errs


def test_adaptive_save_at_and_reverse_direction():
    y0 = torch.zeros(3, 2, dtype=DT)
    bm = BrownianPath(1.0, 0.0, y0.shape, DT, generator=torch.Generator().manual_seed(1))
    save = torch.tensor([1.0, 0.7, 0.25, 0.0], dtype=DT)
    # f = 0, g = 1: y(t) − y0 = W(t) − W(1) exactly, whatever the steps.
    sol = adaptive_heun_sde(
        lambda t, y: torch.zeros_like(y),
        lambda t, y: torch.ones_like(y),
        y0,
        1.0,
        0.0,
        rtol=1e-3,
        atol=1e-3,
        save_at=save,
        bm=bm,
    )
    assert torch.equal(sol.ts, save)
    for s, y in zip(save.tolist(), sol.ys):
        assert torch.allclose(y, bm.increment(1.0, s), atol=1e-12)


def test_adaptive_step_limit():
    y0 = torch.ones(8, dtype=DT)
    with pytest.raises(StepLimitError) as ei:
        adaptive_heun_sde(
            f_lin,
            g_lin,
            y0,
            0.0,
            1.0,
            rtol=1e-6,
            atol=1e-6,
            max_steps=3,
            generator=torch.Generator().manual_seed(0),
        )
    err = ei.value
    assert err.partial is not None and err.partial.y.shape == y0.shape
    assert err.partial.n_accepted + err.partial.n_rejected == 3
    assert 0.0 <= err.t < 1.0


# --------------------------------------------------------------------------- errors
def test_nonfinite_names_step_and_time():
    def f(t, y):
        return torch.where(t > 0.5, torch.full_like(y, math.inf), -y)

    y0 = torch.ones(4, dtype=DT)
    with pytest.raises(NonFiniteError, match="step 5") as ei:
        euler_maruyama(
            f,
            lambda t, y: torch.ones_like(y),
            y0,
            grid(0.0, 1.0, 8),
            save_idx=[0, 2, 8],
            generator=torch.Generator().manual_seed(0),
        )
    assert ei.value.step == 5 and ei.value.t == pytest.approx(0.625)
    part = ei.value.partial
    assert (
        part.t == pytest.approx(0.25) and torch.isfinite(part.y).all() and part.ys.shape == (2, 4)
    )


@pytest.mark.parametrize("name", ADDITIVE_ONLY + list(SDE_ADAPTIVE))
def test_additive_methods_refuse_multiplicative_noise(name):
    y0 = torch.ones(4, dtype=DT)
    args = (grid(0.0, 1.0, 4),) if name in SDE_FIXED else (0.0, 1.0)
    fn = SDE_FIXED.get(name) or SDE_ADAPTIVE[name]
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="changes with y"):
        fn(f_ou, lambda t, y: 0.3 * y, y0, *args, generator=gen, noise="additive")
    with pytest.raises(ValueError, match="additive"):
        fn(f_ou, g_lin, y0, *args, generator=gen, noise="diagonal")


def test_bad_arguments_name_themselves():
    y0 = torch.ones(4, 2, dtype=DT)
    g = lambda t, y: torch.ones_like(y)  # noqa: E731
    gr = grid(0.0, 1.0, 4)
    with pytest.raises(ValueError, match="noise"):
        euler_maruyama(f_ou, g, y0, gr, noise="scalar")
    with pytest.raises(ValueError, match="g\\(t, y\\) must return"):
        euler_maruyama(f_ou, lambda t, y: torch.ones(3), y0, gr)
    with pytest.raises(ValueError, match="bm has shape"):
        euler_maruyama(f_ou, g, y0, gr, bm=BrownianPath(0.0, 1.0, (4,), DT, entropy=0))
    with pytest.raises(ValueError, match="bm spans"):
        euler_maruyama(f_ou, g, y0, gr, bm=BrownianPath(0.0, 0.5, (4, 2), DT, entropy=0))
    with pytest.raises(ValueError, match="grid must be strictly monotone"):
        euler_maruyama(f_ou, g, y0, torch.tensor([0.0, 0.5, 0.5, 1.0], dtype=DT))
    with pytest.raises(TypeError, match="generator"):
        euler_maruyama(f_ou, g, y0, gr, generator=0)
    with pytest.raises(ValueError, match="Lévy area"):
        sra1(
            f_ou,
            g,
            y0,
            gr,
            noise="additive",
            bm=BrownianPath(0.0, 1.0, (4, 2), DT, entropy=0, levy_area=False),
        )
    assert set(NOISE_TYPES) == {"diagonal", "additive"}


# --------------------------------------------------------------------------- properties
shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)
hyp = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@hyp
@given(
    shape=shapes,
    dtype=st.sampled_from([torch.float32, torch.float64]),
    name=st.sampled_from(list(SDE_FIXED)),
    seed=st.integers(0, 2**20),
)
def test_shapes_dtypes_and_seeded_reproducibility(shape, dtype, name, seed):
    y0 = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))

    def run(s):
        return SDE_FIXED[name](
            lambda t, y: -y + t,
            lambda t, y: torch.tensor(0.5, dtype=dtype),
            y0,
            grid(0.0, 1.0, 5, dtype),
            save_idx=[0, 3, 5],
            generator=torch.Generator().manual_seed(s),
            noise="additive",
        )

    a, b, c = run(seed), run(seed), run(seed + 1)
    assert a.y.shape == y0.shape and a.y.dtype == dtype
    assert a.ys.shape == (3, *shape) and torch.equal(a.ys[0], y0) and torch.equal(a.ys[-1], a.y)
    assert torch.equal(a.y, b.y)
    assert not torch.equal(a.y, c.y)


@hyp
@given(
    name=st.sampled_from(list(SDE_FIXED)),
    reverse=st.booleans(),
    n=st.integers(1, 12),
    seed=st.integers(0, 2**20),
)
def test_pure_noise_is_the_path_increment_either_direction(name, reverse, n, seed):
    """f = 0, g = 2: every scheme gives y(t1) − y0 = 2 (W(t1) − W(t0)) exactly, either direction."""
    t0, t1 = (0.9, 0.1) if reverse else (0.1, 0.9)
    y0 = torch.zeros(2, 3, dtype=DT)
    bm = BrownianPath(0.0, 1.0, y0.shape, DT, entropy=seed)
    sol = SDE_FIXED[name](
        lambda t, y: torch.zeros_like(y),
        lambda t, y: torch.full_like(y, 2.0),
        y0,
        grid(t0, t1, n),
        bm=bm,
        noise="additive",
    )
    assert torch.allclose(sol.y, 2 * bm.increment(t0, t1), atol=1e-12)


@hyp
@given(name=st.sampled_from(list(SDE_FIXED)), seed=st.integers(0, 2**20))
def test_batch_independence_with_shared_path(name, seed):
    """Changing one batch row's initial state leaves the other rows untouched."""
    y0 = torch.randn(4, 3, dtype=DT, generator=torch.Generator().manual_seed(seed))
    bm = BrownianPath(1.0, 0.0, y0.shape, DT, entropy=seed)
    y0b = y0.clone()
    y0b[0] += 1.0

    def f(t, y):
        return 2.0 * torch.tanh(y) + torch.sin(3 * t)  # nonlinear, bounded in reverse time

    def run(y):
        return SDE_FIXED[name](
            f, lambda t, y: 0.4 * (1 + t), y, grid(1.0, 0.0, 7), bm=bm, noise="additive"
        ).y

    a, b = run(y0), run(y0b)
    assert torch.equal(a[1:], b[1:])
    assert not torch.equal(a[0], b[0])


def test_bm_and_fast_path_agree_in_distribution():
    """Plain increments and path increments give the same law (EM's mean and variance)."""
    n_paths, n = 20000, 8
    y0 = torch.zeros(n_paths, dtype=DT)
    bm = BrownianPath(0.0, 1.0, y0.shape, DT, generator=torch.Generator().manual_seed(2))
    g = lambda t, y: torch.ones_like(y)  # noqa: E731
    a = euler_maruyama(f_ou, g, y0, grid(0.0, 1.0, n), bm=bm).y
    b = euler_maruyama(f_ou, g, y0, grid(0.0, 1.0, n), generator=torch.Generator().manual_seed(2)).y
    h = 1.0 / n
    v_em = h * sum((1 - 2 * h) ** (2 * k) for k in range(n))
    for y in (a, b):
        assert abs(float(y.mean())) < 5 * math.sqrt(v_em / n_paths)
        assert abs(float(y.var()) - v_em) < 5 * v_em * math.sqrt(2 / n_paths)


# --------------------------------------------------------------------------- through solve()
def test_front_door_dispatches_sde_methods():
    solve = pytest.importorskip("ndmsolve.solvers.api").solve
    y0 = torch.ones(5, 2, dtype=DT)
    g = lambda t, y: torch.full_like(y, 0.3)  # noqa: E731
    a = solve(
        f_ou,
        y0,
        1.0,
        0.0,
        "euler_maruyama",
        steps=20,
        g=g,
        generator=torch.Generator().manual_seed(4),
    )
    b = euler_maruyama(f_ou, g, y0, grid(1.0, 0.0, 20), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.y, b.y) and a.nfe == 20
    s = solve(
        f_lin,
        y0,
        0.0,
        1.0,
        "sra1",
        steps=10,
        g=g_lin,
        noise="additive",
        generator=torch.Generator().manual_seed(0),
        save_at=torch.tensor([0.25, 0.5, 1.0], dtype=DT),
    )
    assert s.ys.shape == (3, 5, 2) and torch.allclose(
        s.ts, torch.tensor([0.25, 0.5, 1.0], dtype=DT)
    )
    assert s.nfe == 2 * 11  # 0.25 is inserted into the uniform grid: 11 steps
    ad = solve(
        f_lin,
        y0,
        0.0,
        1.0,
        "adaptive_heun_sde",
        g=g_lin,
        noise="additive",
        rtol=1e-2,
        atol=1e-2,
        generator=torch.Generator().manual_seed(0),
    )
    assert ad.y.shape == y0.shape and ad.nfe > 0 and ad.t == 1.0


def test_solve_default_tolerances_depend_on_family():
    """Omitted rtol/atol: 1e-2 for the adaptive SDE pair, 1e-5 for ODE methods."""
    from ndmsolve.solvers.api import DEFAULT_TOL, solve

    y0 = torch.ones(64, 2, dtype=torch.float64)

    def drift(t, y):
        return -y

    def diff(t, y):
        return torch.full_like(y, 0.5)

    def run(**kw):
        gen = torch.Generator().manual_seed(3)
        return solve(
            drift, y0, 0.0, 1.0, "adaptive_heun_sde", g=diff, noise="additive", generator=gen, **kw
        )

    default, explicit = run(), run(rtol=DEFAULT_TOL["sde"], atol=DEFAULT_TOL["sde"])
    assert default.nfe == explicit.nfe and torch.equal(default.y, explicit.y)
    assert run(rtol=1e-3, atol=1e-3).nfe > default.nfe
    ode_default = solve(drift, y0, 0.0, 1.0, "dopri5")
    ode_explicit = solve(
        drift, y0, 0.0, 1.0, "dopri5", rtol=DEFAULT_TOL["ode"], atol=DEFAULT_TOL["ode"]
    )
    assert ode_default.nfe == ode_explicit.nfe


def test_adaptive_sde_closing_in_on_nan_reports_it(tmp_path):
    """A drift that is NaN past t = 0.5: the steps shrink towards 0.5 until the step size
    collapses, and the solve says so. torchsde's Brownian tree once refined itself to the
    last (1e-13) query's length there and never returned: run in a subprocess, bounded."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "crawl.py"
    script.write_text(
        "import torch, ndmsolve as nd\n"
        "f = lambda t, y: -y + (float('nan') if float(t.flatten()[0]) < 0.5 else 0.0)\n"
        "g = lambda t, y: 0.3 * torch.ones_like(y)\n"
        "try:\n"
        "    nd.solve(f, torch.ones(4, 2, dtype=torch.float64), 1.0, 0.0,\n"
        "             method='adaptive_heun_sde', g=g, noise='additive', generator=0)\n"
        "except nd.solvers.NonFiniteError as e:\n"
        "    print('NonFiniteError', e.t, e.step)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=root
    )
    assert out.returncode == 0, out.stderr
    name, t, step = out.stdout.split()
    assert name == "NonFiniteError" and abs(float(t) - 0.5) < 1e-6 and int(step) > 0
