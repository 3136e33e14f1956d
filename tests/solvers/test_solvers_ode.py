"""ODE solvers: tableau order conditions, convergence orders, adaptive accuracy against
scipy, honest NFE, step limits, saving, shapes/dtypes and a CUDA-graph check."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from ndmsolve.solvers import NonFiniteError, StepLimitError, fixed, method_names, solve, tableaus
from ndmsolve.solvers.adaptive import PIController

F64 = torch.float64
ODE_FIXED = method_names("ode", "fixed", backends=False)
ODE_ADAPTIVE = method_names("ode", "adaptive", backends=False)
A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=F64)  # harmonic oscillator y'' = -y


def oscillator(t, y):
    return y @ A.T


def exact(y0, t0, t1):
    return y0 @ torch.linalg.matrix_exp(A * (t1 - t0)).T


# ----------------------------------------------------------------------------- tableaus


def _order_conditions(b, A_, c, order):
    """Residuals of the RK order conditions up to order 4 (b, A, c as numpy)."""
    res = [b.sum() - 1]
    if order >= 2:
        res += [b @ c - 1 / 2]
    if order >= 3:
        res += [b @ c**2 - 1 / 3, b @ A_ @ c - 1 / 6]
    if order >= 4:
        res += [
            b @ c**3 - 1 / 4,
            b @ (c * (A_ @ c)) - 1 / 8,
            b @ A_ @ c**2 - 1 / 12,
            b @ A_ @ A_ @ c - 1 / 24,
        ]
    return np.abs(res)


@pytest.mark.parametrize("name", list(tableaus.TABLEAUS))
def test_tableau_order_conditions(name):
    tab = tableaus.TABLEAUS[name]
    s = tab.stages
    A_ = np.zeros((s, s))
    for i, row in enumerate(tab.a):
        A_[i, :i] = row
    c, b = np.array(tab.c), np.array(tab.b)
    assert _order_conditions(b, A_, c, min(tab.order, 4)).max() < 1e-12
    if tab.adaptive:
        bhat = b - np.array(tab.b_err)
        assert _order_conditions(bhat, A_, c, tab.error_order - 1).max() < 1e-12
        if tab.error_order <= 4:  # conditions are written out to order 4 only
            # the embedded solution is of strictly lower order: it fails the next conditions
            assert _order_conditions(bhat, A_, c, tab.error_order).max() > 1e-6


# ----------------------------------------------------------------------------- fixed step


@pytest.mark.parametrize("name,order", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)])
@pytest.mark.parametrize("t0,t1", [(0.0, 2.0), (2.0, 0.0)])
def test_fixed_convergence_order(name, order, t0, t1):
    y0 = torch.tensor([[1.0, 0.5], [-0.3, 2.0]], dtype=F64)
    steps = [16, 32, 64, 128]
    errs = [
        (solve(oscillator, y0, t0, t1, name, steps=n).y - exact(y0, t0, t1)).abs().max().item()
        for n in steps
    ]
    slope = np.polyfit(np.log([abs(t1 - t0) / n for n in steps]), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.25, (name, slope, errs)


def test_fixed_grid_matches_steps():
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    a = solve(oscillator, y0, 0.0, 1.0, "rk4", steps=8)
    b = solve(oscillator, y0, 0.0, 1.0, "rk4", grid=torch.linspace(0, 1, 9, dtype=F64))
    assert torch.allclose(a.y, b.y, atol=1e-14, rtol=0)
    # a non-uniform grid still converges
    g = torch.linspace(0, 1, 33, dtype=F64) ** 2
    c = solve(oscillator, y0, 0.0, 1.0, "rk4", grid=g)
    assert (c.y - exact(y0, 0.0, 1.0)).abs().max() < 1e-6


# ----------------------------------------------------------------------------- adaptive


@pytest.mark.parametrize("name", ODE_ADAPTIVE)
def test_adaptive_error_shrinks_with_tolerance(name):
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    errs, nfes = [], []
    for tol in (1e-4, 1e-6, 1e-8):
        sol = solve(oscillator, y0, 0.0, 5.0, name, rtol=tol, atol=tol)
        errs.append((sol.y - exact(y0, 0.0, 5.0)).abs().max().item())
        nfes.append(sol.nfe)
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 1e-6 and errs[0] < 1e-2
    assert nfes[0] < nfes[1] < nfes[2]


def van_der_pol(t, y):
    x, v = y[..., 0], y[..., 1]
    return torch.stack([v, (1 - x**2) * v - x], -1)


@pytest.mark.parametrize("name", ODE_ADAPTIVE)
@pytest.mark.parametrize("t0,t1", [(0.0, 6.0), (6.0, 0.0)])
def test_adaptive_matches_scipy_on_van_der_pol(name, t0, t1):
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    ts = torch.linspace(t0, t1, 7, dtype=F64)[1:]
    ref = solve_ivp(
        lambda t, y: van_der_pol(t, torch.from_numpy(y)).numpy(),
        (t0, t1),
        y0.numpy(),
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
        t_eval=ts.numpy(),
    )
    sol = solve(van_der_pol, y0, t0, t1, name, rtol=1e-8, atol=1e-8, save_at=ts)
    assert torch.allclose(sol.ts, ts)
    assert np.abs(sol.ys.numpy() - ref.y.T).max() < 2e-5
    assert np.abs(sol.y.numpy() - ref.y[:, -1]).max() < 2e-5
    assert sol.t == t1 and sol.n_accepted > 0


class Counter:
    def __init__(self, f):
        self.f, self.calls = f, 0

    def __call__(self, t, y):
        self.calls += 1
        assert t.ndim == 0 and t.dtype == y.dtype
        return self.f(t, y)


@pytest.mark.parametrize("name", ODE_FIXED + ODE_ADAPTIVE)
@pytest.mark.parametrize("save", [False, True])
def test_nfe_is_honest(name, save):
    f = Counter(van_der_pol)
    kw = {"steps": 13} if name in ODE_FIXED else {"rtol": 1e-7, "atol": 1e-7}
    if save:
        kw["save_at"] = torch.tensor([3.0, 2.5, 0.1], dtype=F64)
    sol = solve(f, torch.tensor([2.0, 0.0], dtype=F64), 3.0, 0.0, name, **kw)
    assert sol.nfe == f.calls > 0
    if name in ODE_ADAPTIVE:
        assert sol.n_accepted + sol.n_rejected <= f.calls


def test_adaptive_rejects_and_counts_on_a_sharp_field():
    # a sharp pulse forces rejections; NFE must still equal the calls made
    f = Counter(lambda t, y: -y + 50 * torch.exp(-(((t - 0.5) / 0.01) ** 2)) * torch.ones_like(y))
    sol = solve(f, torch.ones(3, dtype=F64), 0.0, 1.0, "dopri5", rtol=1e-6, atol=1e-6)
    assert sol.n_rejected > 0 and sol.nfe == f.calls
    assert torch.isfinite(sol.y).all()


def test_step_limit_error_carries_partial():
    f = lambda t, y: -1e5 * (y - torch.cos(t))  # stiff: explicit methods crawl
    with pytest.raises(StepLimitError, match="max_steps") as info:
        solve(f, torch.zeros(4, dtype=F64), 0.0, 1.0, "dopri5", max_steps=50)
    err = info.value
    assert 0.0 < err.t < 1.0 and 0.0 < err.partial.t < 1.0
    assert err.partial.n_accepted + err.partial.n_rejected == 50
    assert torch.isfinite(err.partial.y).all() and err.partial.y.shape == (4,)


def test_pi_controller_bounds():
    c = PIController(5, pcoeff=0.2, icoeff=0.4, factormin=0.2, factormax=10.0, safety=0.9)
    s0 = c.init()
    assert c.adapt(1e-12, 1.0, s0)[:2] == (True, 10.0)  # tiny error: capped growth
    assert c.adapt(0.99, 1.0, s0)[1] >= 1.0  # accepted: never shrinks
    accept, h, _ = c.adapt(2.0, 1.0, s0)
    assert not accept and 0.2 <= h <= 0.9  # rejected: always shrinks
    assert c.adapt(1e12, 1.0, s0)[:2] == (False, 0.2)  # capped shrink
    assert c.adapt(math.inf, -1.0, s0) == (False, -0.2, s0)  # non-finite: shrink, keep sign
    # the P term reacts to the trend: at the same current error, an error that is rising
    # (small previous error) gives a smaller step than one that is falling
    c = PIController(5, pcoeff=0.4, icoeff=0.3)
    _, _, rising = c.adapt(0.9, 1.0, c.init())
    _, _, falling = c.adapt(0.01, 1.0, c.init())
    assert c.adapt(0.1, 1.0, rising)[1] > c.adapt(0.1, 1.0, falling)[1]


def test_power_and_constant_controllers():
    """The SDE controller: h·min(factormax, safety·r^-exponent) either way; the constant
    one accepts everything and keeps h."""
    from ndmsolve.solvers.controllers import ConstantController, PowerController

    c = PowerController(safety=0.9, exponent=0.9, factormax=10.0)
    accept, h, _ = c.adapt(0.5, -0.1, c.init())
    assert accept and h == pytest.approx(-0.1 * 0.9 * 0.5**-0.9)
    assert c.adapt(4.0, 0.1, None)[:2] == (False, pytest.approx(0.1 * 0.9 * 4.0**-0.9))
    assert c.adapt(0.0, 0.1, None)[:2] == (True, 1.0)  # zero error: factormax
    assert c.adapt(math.nan, 0.1, None)[:2] == (False, pytest.approx(0.02))
    k = ConstantController()
    assert k.adapt(1e9, 0.25, k.init()) == (True, 0.25, None)


# ----------------------------------------------------------------------------- saving


@pytest.mark.parametrize("name", ["rk4", "tsit5", "dopri5", "bosh3"])
def test_save_at_matches_exact(name):
    y0 = torch.tensor([[1.0, 0.0], [0.2, -1.0]], dtype=F64)
    ts = torch.tensor([0.0, 0.33, 1.0, 1.7, 2.0], dtype=F64)  # 0.33, 1.7 are off the rk4 grid
    kw = {"steps": 40} if name == "rk4" else {"rtol": 1e-9, "atol": 1e-9}
    sol = solve(oscillator, y0, 0.0, 2.0, name, save_at=ts, **kw)
    assert sol.ys.shape == (5, 2, 2) and torch.equal(sol.ts, ts)
    want = torch.stack([exact(y0, 0.0, float(t)) for t in ts])
    assert (sol.ys - want).abs().max() < 1e-6
    assert torch.equal(sol.ys[-1], sol.y)


def test_save_at_on_grid_adds_no_steps():
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    a = solve(oscillator, y0, 1.0, 0.0, "heun", steps=10)
    b = solve(
        oscillator, y0, 1.0, 0.0, "heun", steps=10, save_at=torch.tensor([0.5, 0.2], dtype=F64)
    )
    c = solve(oscillator, y0, 1.0, 0.0, "heun", steps=10, save_at=torch.tensor([0.55], dtype=F64))
    assert b.nfe == a.nfe and torch.equal(a.y, b.y)
    assert c.nfe == a.nfe + 2  # one inserted point: one more heun step


@pytest.mark.parametrize("name", ["euler", "rk4", "dopri5", "tsit5"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_image_shaped_state_and_dtype(name, dtype):
    gen = torch.Generator().manual_seed(0)
    y0 = torch.randn(2, 3, 4, 5, generator=gen, dtype=dtype)
    kw = {"steps": 20} if name in ODE_FIXED else {}
    sol = solve(
        lambda t, y: -y * (1 + t),
        y0,
        1.0,
        0.0,
        name,
        save_at=torch.tensor([0.5, 0.0], dtype=dtype),
        **kw,
    )
    want = y0 * math.exp(1.5)  # y' = -(1+t) y backwards from 1 to 0
    assert sol.y.shape == y0.shape and sol.y.dtype == dtype
    assert sol.ys.shape == (2, 2, 3, 4, 5) and sol.ys.dtype == dtype
    tol = 5e-2 if name == "euler" else 1e-3
    assert ((sol.y - want).abs() / want.abs().clamp_min(1)).max() < tol


# ----------------------------------------------------------------------------- properties


def rowwise(t, y):
    return torch.sin(y) * t - 0.5 * y**3 / (1 + y**2)


@settings(max_examples=20, deadline=None)
@given(
    b=st.integers(1, 5),
    d=st.integers(1, 4),
    name=st.sampled_from(ODE_FIXED),
    steps=st.integers(1, 12),
    seed=st.integers(0, 1000),
    reverse=st.booleans(),
)
def test_batch_independence(b, d, name, steps, seed, reverse):
    y0 = torch.randn(b, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    t0, t1 = (1.0, 0.0) if reverse else (0.0, 1.0)
    together = solve(rowwise, y0, t0, t1, name, steps=steps).y
    apart = torch.cat(
        [solve(rowwise, y0[i : i + 1], t0, t1, name, steps=steps).y for i in range(b)]
    )
    assert torch.allclose(together, apart, rtol=1e-13, atol=1e-13)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 1000),
    t0=st.floats(-2, 2),
    span=st.floats(0.1, 2),
    sign=st.sampled_from([-1, 1]),
)
def test_time_reversal_rk4(seed, t0, span, sign):
    y0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)
    t1 = t0 + sign * span
    fwd = solve(rowwise, y0, t0, t1, "rk4", steps=100).y
    back = solve(rowwise, fwd, t1, t0, "rk4", steps=100).y
    assert torch.allclose(back, y0, atol=1e-6, rtol=0)
    # and it is a real round trip: the state moved in between
    assert (fwd - y0).abs().max() > 1e-3


@settings(max_examples=20, deadline=None)
@given(
    shape=st.lists(st.integers(1, 3), min_size=0, max_size=4),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    name=st.sampled_from(ODE_FIXED + ODE_ADAPTIVE),
)
def test_shape_and_dtype_preserved(shape, dtype, name):
    y0 = torch.ones(shape, dtype=dtype)
    kw = {"steps": 50} if name in ODE_FIXED else {"rtol": 1e-3, "atol": 1e-3}
    sol = solve(lambda t, y: -y, y0, 0.0, 0.5, name, **kw)
    assert sol.y.shape == y0.shape and sol.y.dtype == dtype
    assert torch.allclose(sol.y, y0 * math.exp(-0.5), rtol=1e-2)


# ----------------------------------------------------------------------------- CUDA graphs

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("name", ODE_FIXED)
def test_cuda_graph_matches_eager(name):
    from ndmsolve.solvers import cudagraph

    cudagraph.clear_cache()
    W = torch.randn(8, 8, device="cuda", dtype=F64) / 3
    f = lambda t, y: torch.tanh(y @ W) * (1 + t)
    y0 = torch.randn(16, 8, device="cuda", dtype=F64)
    save = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    eager = solve(f, y0, 0.0, 1.0, name, steps=25, save_at=save, cuda_graph=False)
    with torch.no_grad():
        graphed = solve(f, y0, 0.0, 1.0, name, steps=25, save_at=save)
        again = solve(f, 2 * y0, 0.0, 1.0, name, steps=25, save_at=save)  # cache hit, new input
    assert graphed.stats.get("cuda_graph") and len(cudagraph._CACHE) == 1
    assert torch.allclose(graphed.y, eager.y, atol=1e-12) and torch.allclose(
        graphed.ys, eager.ys, atol=1e-12
    )
    ref2 = solve(f, 2 * y0, 0.0, 1.0, name, steps=25, cuda_graph=False)
    assert torch.allclose(again.y, ref2.y, atol=1e-12)
    assert graphed.nfe == eager.nfe


@pytest.mark.cuda
@cuda
def test_cuda_graph_falls_back_with_warning():
    from ndmsolve.solvers import cudagraph

    cudagraph.clear_cache()

    def syncing(t, y):
        _ = y.sum().item()  # a host sync: cannot be captured
        return -y

    y0 = torch.ones(4, device="cuda")
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="CUDA-graph capture"):
        sol = solve(syncing, y0, 0.0, 1.0, "rk4", steps=10)
    assert torch.allclose(sol.y, y0 * math.exp(-1.0), atol=1e-5)
    assert "cuda_graph" not in sol.stats


def _eager_graphs(monkeypatch) -> list:
    """Replace CUDA-graph capture by 'replay = run the body again'; returns the capture log."""
    from ndmsolve.solvers import cudagraph

    captures = []

    def eager_capture(warmup, body, device):
        captures.append(device)
        warmup()
        body()
        return body

    monkeypatch.setattr(cudagraph, "_capture_fn", eager_capture)
    cudagraph.clear_cache()
    return captures


def test_graph_path_plumbing_with_eager_replay(monkeypatch):
    """The CUDA-graph path's caching, replay, saving and failure handling, on CPU: the
    capture is replaced by 'replay = run the captured body again'."""
    from ndmsolve.solvers import cudagraph
    from ndmsolve.solvers.fixed import solve_fixed
    from ndmsolve.solvers.grids import make_grid

    captures = _eager_graphs(monkeypatch)

    class Field:
        def __init__(self):
            self.W = torch.randn(4, 4, generator=torch.Generator().manual_seed(1), dtype=F64) / 2

        def __call__(self, t, y):
            return self.forward(t, y)

        def forward(self, t, y):
            return torch.tanh(y @ self.W) * (1 + t)

    net = Field()
    grid = make_grid(1.0, 0.0, 12, None, F64, "cpu")
    y0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    idx = [0, 5, 12]
    a = fixed.solve_fixed_graphed(net.forward, y0, grid, tableaus.rk4, save_idx=idx)
    b = fixed.solve_fixed_graphed(net.forward, 2 * y0, grid, tableaus.rk4, save_idx=idx)
    assert len(captures) == 1  # a new bound-method object still hits the cache
    for sol, y in ((a, y0), (b, 2 * y0)):
        ref = solve_fixed(net.forward, y, grid, tableaus.rk4, save_idx=idx)
        assert torch.allclose(sol.y, ref.y, atol=1e-14) and torch.allclose(
            sol.ys, ref.ys, atol=1e-14
        )
        assert sol.nfe == ref.nfe and torch.equal(sol.ts, ref.ts)
    assert not torch.allclose(a.y, b.y)  # a's outputs were copied out, not overwritten

    # a different grid is a different graph
    fixed.solve_fixed_graphed(
        net.forward, y0, make_grid(1.0, 0.0, 6, None, F64, "cpu"), tableaus.rk4
    )
    assert len(captures) == 2

    # NaN in a replay is located exactly as in the eager loop
    def nan_late(t, y):
        return -y * (math.nan if float(t) <= 0.5 else 1.0)

    for _ in range(2):  # the capture, then a cached replay
        with pytest.raises(NonFiniteError) as info:
            fixed.solve_fixed_graphed(nan_late, torch.ones(2, dtype=F64), grid, tableaus.euler)
        assert info.value.step == 6 and info.value.t == pytest.approx(0.5)
    assert len(captures) == 3

    # a failed capture warns once and then runs eagerly without retrying
    def failing_capture(warmup, body, device):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cudagraph, "_capture_fn", failing_capture)
    with pytest.warns(RuntimeWarning, match="CUDA-graph capture of the heun loop failed"):
        assert fixed.solve_fixed_graphed(net, y0, grid, tableaus.heun) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fixed.solve_fixed_graphed(net, y0, grid, tableaus.heun) is None
    cudagraph.clear_cache()


def test_graph_key_names_a_rebuilt_field(monkeypatch):
    """Field wrappers rebuilt per call (as nd.sample does) replay one graph via graph_key."""
    from ndmsolve.solvers import cudagraph
    from ndmsolve.solvers.grids import make_grid

    captures = _eager_graphs(monkeypatch)

    class Wrapper:
        def __init__(self, key):
            self.graph_key = ("decay", key)

        def __call__(self, t, y):
            return -y

    grid = make_grid(0.0, 1.0, 8, None, F64, "cpu")
    y0 = torch.ones(3, dtype=F64)
    sols = [fixed.solve_fixed_graphed(Wrapper(1), y0, grid, tableaus.heun) for _ in range(3)]
    assert len(captures) == 1
    fixed.solve_fixed_graphed(Wrapper(2), y0, grid, tableaus.heun)
    assert len(captures) == 2
    exact = torch.exp(torch.tensor(-1.0, dtype=F64))
    assert all(abs(float(s.y[0]) - exact) < 3e-3 for s in sols)  # heun, h = 1/8
    cudagraph.clear_cache()
