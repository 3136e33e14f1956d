"""torchdiffeq / torchsde backends: closed forms, honest counts, shapes, seeding, time direction."""

import math

import pytest
import torch

pytest.importorskip("torchdiffeq")
pytest.importorskip("torchsde")

from ndmsolve.solvers.backends import (
    TORCHSDE_ITO,
    TORCHSDE_STRATONOVICH,  # noqa: E402
    solve_backend,
    torchdiffeq_methods,
)
from ndmsolve.solvers.brownian import BrownianPath  # noqa: E402
from ndmsolve.solvers.sde import euler_maruyama  # noqa: E402

DT = torch.float64
LAM = -1.5


def f_lin(t, y):
    return LAM * y + t


def exact_lin(t0, t1, y0):
    """y' = λy + t: y(t) = C e^{λt} − t/λ − 1/λ²."""
    c = (y0 + t0 / LAM + 1 / LAM**2) * math.exp(-LAM * t0)
    return c * math.exp(LAM * t1) - t1 / LAM - 1 / LAM**2


Y0 = torch.randn(4, 3, 4, dtype=DT, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- torchdiffeq
@pytest.mark.parametrize("t0,t1", [(0.0, 1.0), (1.0, 0.0)])
@pytest.mark.parametrize(
    "method,kw,tol",
    [
        ("dopri5", dict(rtol=1e-9, atol=1e-9), 1e-7),
        ("rk4", dict(steps=40), 1e-6),
        ("rk4", dict(grid=torch.tensor([0.0, 0.1, 0.3, 0.6, 1.0])), 1e-2),
    ],
)
def test_torchdiffeq_closed_form_any_shape(t0, t1, method, kw, tol):
    if "grid" in kw and t0 > t1:
        kw = dict(grid=kw["grid"].flip(0))
    calls = []

    def f(t, y):
        assert t.ndim == 0 and y.shape == Y0.shape
        calls.append(1)
        return f_lin(t, y)

    save = torch.tensor([t0, 0.5 * (t0 + t1), t1], dtype=DT)
    if "grid" in kw:
        save = torch.tensor([t0, 0.6 if t0 < t1 else 0.3, t1], dtype=DT)
    sol = solve_backend(f"torchdiffeq:{method}", f, Y0, t0, t1, save_at=save, **kw)
    assert sol.y.shape == Y0.shape and sol.y.dtype == DT
    assert (sol.y - exact_lin(t0, t1, Y0)).abs().max() < tol
    assert sol.nfe == len(calls) > 0
    assert torch.equal(sol.ts, save) and sol.ys.shape == (3, *Y0.shape)
    assert torch.equal(sol.ys[0], Y0)
    assert (sol.ys[1] - exact_lin(t0, float(save[1]), Y0)).abs().max() < tol
    if method == "rk4":
        assert sol.nfe == 4 * sol.n_accepted
        solve = pytest.importorskip("ndmsolve.solvers.api").solve
        ours = solve(f_lin, Y0, t0, t1, "rk4", save_at=save, **kw)
        assert torch.allclose(ours.y, sol.y, atol=1e-12)  # same scheme on the same grid


def test_torchdiffeq_agrees_with_our_dopri5():
    solve = pytest.importorskip("ndmsolve.solvers.api").solve
    ours = solve(f_lin, Y0, 1.0, 0.0, "dopri5", rtol=1e-8, atol=1e-8)
    theirs = solve(f_lin, Y0, 1.0, 0.0, "torchdiffeq:dopri5", rtol=1e-8, atol=1e-8)
    assert (ours.y - theirs.y).abs().max() < 1e-6
    assert theirs.method == "torchdiffeq:dopri5" and theirs.nfe > 0


def test_backend_errors_name_the_problem():
    for m in ("nope", "log_ode"):
        with pytest.raises(ValueError, match="valid: .*euler"):
            solve_backend(
                f"torchsde:{m}",
                f_lin,
                Y0,
                0.0,
                1.0,
                g=lambda t, y: 0.1 * torch.ones_like(y),
                steps=2,
            )
    with pytest.raises(ValueError, match="valid: .*dopri5"):
        solve_backend("torchdiffeq:nope", f_lin, Y0, 0.0, 1.0)
    with pytest.raises(ValueError, match="unknown backend"):
        solve_backend("scipy:rk45", f_lin, Y0, 0.0, 1.0)
    with pytest.raises(ValueError, match="ODEs"):
        solve_backend("torchdiffeq:rk4", f_lin, Y0, 0.0, 1.0, steps=2, g=lambda t, y: y)
    with pytest.raises(ValueError, match="adaptive"):
        solve_backend("torchdiffeq:dopri5", f_lin, Y0, 0.0, 1.0, steps=2)
    # Stratonovich schemes would silently solve a different SDE for y-dependent noise.
    with pytest.raises(ValueError, match="additive"):
        solve_backend(
            "torchsde:heun", f_lin, Y0, 0.0, 1.0, g=lambda t, y: 0.2 * y, steps=2, noise="additive"
        )
    assert set(torchdiffeq_methods()) >= {"dopri5", "bosh3", "rk4", "euler"}
    assert torchdiffeq_methods()["rk4"] and not torchdiffeq_methods()["dopri5"]


# --------------------------------------------------------------------------- torchsde
@pytest.mark.parametrize("t0,t1", [(0.0, 1.0), (1.0, 0.0)])
def test_torchsde_euler_weak_moments_ou(t0, t1):
    """torchsde:euler is Euler–Maruyama: its OU mean/variance recursions hold; near the closed form."""
    th, sig, n, n_paths = 2.0, 0.5, 32, 20000
    y0 = torch.ones(n_paths, 1, dtype=DT)
    h = abs(t1 - t0) / n
    a = 1 - th * h if t1 > t0 else 1 + th * h  # reverse time: the drift −θy grows the state
    sol = solve_backend(
        "torchsde:euler",
        lambda t, y: -th * y,
        y0,
        t0,
        t1,
        steps=n,
        g=lambda t, y: torch.full_like(y, sig),
        generator=torch.Generator().manual_seed(1),
    )
    m_em, v_em = a**n, sig**2 * h * sum(a ** (2 * k) for k in range(n))
    m, v = float(sol.y.mean()), float(sol.y.var())
    assert abs(m - m_em) < 5 * math.sqrt(v_em / n_paths)
    assert abs(v - v_em) < 5 * v_em * math.sqrt(2 / n_paths)
    e = -th if t1 > t0 else th
    m_exact, v_exact = math.exp(e), sig**2 / (2 * e) * (math.exp(2 * e) - 1)
    assert abs(m - m_exact) < 0.06 * abs(m_exact) and abs(v - v_exact) < 0.15 * v_exact
    assert sol.nfe == n and sol.n_accepted == n


def test_torchsde_seeded_reproducible_and_any_shape():
    g = lambda t, y: 0.3 * (1 + t) * torch.ones_like(y)  # noqa: E731

    def run(seed, method="euler"):
        return solve_backend(
            f"torchsde:{method}",
            f_lin,
            Y0,
            1.0,
            0.0,
            g=g,
            steps=6,
            noise="additive",
            generator=torch.Generator().manual_seed(seed),
            save_at=torch.tensor([0.5, 0.0], dtype=DT),
        )

    a, b, c = run(0), run(0), run(1)
    assert a.y.shape == Y0.shape and a.ys.shape == (2, *Y0.shape) and torch.equal(a.ys[-1], a.y)
    assert torch.equal(a.y, b.y) and not torch.equal(a.y, c.y)
    for m in TORCHSDE_ITO + TORCHSDE_STRATONOVICH:
        s = run(3, m)
        assert (
            s.y.shape == Y0.shape
            and torch.isfinite(s.y).all()
            and s.nfe > 0
            and s.stats["nfe_g"] > 0
        )


@pytest.mark.parametrize("t0,t1", [(0.0, 1.0), (1.0, 0.0)])
def test_torchsde_euler_equals_our_euler_maruyama_on_a_shared_path(t0, t1):
    """Same scheme, same path: equal to round-off, multiplicative noise, either direction."""
    y0 = torch.rand(3, 2, 2, dtype=DT, generator=torch.Generator().manual_seed(2)) + 0.5
    bm = BrownianPath(0.0, 1.0, y0.shape, DT, entropy=5)

    def f(t, y):
        return torch.sin(y) - t * y

    def g(t, y):
        return 0.5 * y + 0.1

    ours = euler_maruyama(f, g, y0, torch.linspace(t0, t1, 17, dtype=DT), bm=bm)
    theirs = solve_backend("torchsde:euler", f, y0, t0, t1, g=g, steps=16, bm=bm)
    assert torch.allclose(ours.y, theirs.y, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("method", ["euler", "srk", "heun", "reversible_heun"])
@pytest.mark.parametrize("t0,t1", [(0.2, 0.9), (0.9, 0.2)])
def test_torchsde_pure_noise_is_the_path_increment(method, t0, t1):
    """f = 0, g = 1 (additive): y(t1) − y0 = W(t1) − W(t0), which checks the reversal of W."""
    y0 = torch.zeros(2, 5, dtype=DT)
    bm = BrownianPath(0.0, 1.0, y0.shape, DT, entropy=9)
    sol = solve_backend(
        f"torchsde:{method}",
        lambda t, y: torch.zeros_like(y),
        y0,
        t0,
        t1,
        g=lambda t, y: torch.ones_like(y),
        steps=5,
        bm=bm,
        noise="additive",
    )
    assert torch.allclose(sol.y, bm.increment(t0, t1), atol=1e-12)


def test_torchsde_srk_converges_to_a_fine_solution_on_the_same_path():
    """The Lévy-area plumbing: srk on a shared path approaches a fine solve of the same path."""
    y0 = torch.full((200, 1), 0.5, dtype=DT)
    bm = BrownianPath(1.0, 0.0, y0.shape, DT, entropy=4)

    def g(t, y):
        return 0.7 * (1 + t) * torch.ones_like(y)

    ref = euler_maruyama(f_lin, g, y0, torch.linspace(1.0, 0.0, 1025, dtype=DT), bm=bm).y
    errs = [
        float(
            (solve_backend("torchsde:srk", f_lin, y0, 1.0, 0.0, g=g, steps=n, bm=bm).y - ref)
            .abs()
            .mean()
        )
        for n in (4, 16)
    ]
    assert errs[1] < errs[0] / 4 and errs[1] < 5e-3, errs


def test_torchdiffeq_failure_is_a_typed_error():
    """torchdiffeq asserts on step-size underflow (here: NaN past t = 0.5); we raise SolverError."""
    from ndmsolve.solvers.base import SolverError

    def f(t, y):
        return torch.where(t > 0.5, math.nan, 1.0) * y

    with pytest.raises(SolverError, match="torchdiffeq:dopri5 gave up") as ei:
        solve_backend(
            "torchdiffeq:dopri5", f, torch.ones(2, dtype=DT), 0.0, 1.0, rtol=1e-6, atol=1e-6
        )
    assert ei.value.partial.nfe > 0
