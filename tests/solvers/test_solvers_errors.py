"""Failures of ``solve``: NaN/inf located in time and step, and input validation that
names the offending argument."""

import math

import pytest
import torch

from ndmsolve.solvers import METHODS, NonFiniteError, SolverError, method_names, solve, tableaus

ODE_FIXED = method_names("ode", "fixed", backends=False)
ODE_ADAPTIVE = method_names("ode", "adaptive", backends=False)

F64 = torch.float64


def nan_after(t_bad):
    """-y, but NaN once t reaches t_bad (in either direction's sense: t >= t_bad)."""

    def f(t, y):
        return -y * (math.nan if float(t) >= t_bad else 1.0)

    return f


def nan_before(t_bad):
    def f(t, y):
        return -y * (math.nan if float(t) <= t_bad else 1.0)

    return f


# ----------------------------------------------------------------------------- NaN/inf


@pytest.mark.parametrize("name", ODE_FIXED)
def test_fixed_nan_is_located(name):
    save = torch.tensor([0.2, 0.4, 0.8], dtype=F64)
    with pytest.raises(NonFiniteError, match="NaN/inf") as info:
        solve(nan_after(0.5), torch.ones(3, dtype=F64), 0.0, 1.0, name, steps=10, save_at=save)
    e = info.value
    # The first step that touches t >= 0.5: step 5 (from t=0.5) for methods whose stages
    # stay inside [t, t+h); step 4 (from 0.4) for those evaluating at the step's end.
    touches_end = tableaus.TABLEAUS[name].c[-1] == 1.0
    assert e.step == (4 if touches_end else 5)
    assert e.t == pytest.approx(0.1 * e.step)
    assert e.t <= 0.5 < e.t + 0.1 + 1e-12
    # the partial result holds the saved states up to the failure, all finite
    assert torch.allclose(e.partial.ts, save[:2]) and e.partial.t == pytest.approx(0.4)
    assert torch.isfinite(e.partial.ys).all() and torch.equal(e.partial.y, e.partial.ys[-1])


def test_fixed_nan_is_located_backwards():
    with pytest.raises(NonFiniteError) as info:
        solve(nan_before(0.3 + 1e-9), torch.ones(2, 2, dtype=F64), 1.0, 0.0, "euler", steps=20)
    e = info.value
    assert e.step == 14 and e.t == pytest.approx(0.3)  # grid 1.0, 0.95, ..., 0.3 is index 14
    assert e.partial.t == 1.0 and torch.equal(e.partial.y, torch.ones(2, 2, dtype=F64))


def test_inf_is_caught_too():
    f = lambda t, y: y * (math.inf if float(t) >= 0.25 else 1.0)
    with pytest.raises(NonFiniteError) as info:
        solve(f, torch.ones(3), 0.0, 1.0, "euler", steps=4)
    assert info.value.step == 1


@pytest.mark.parametrize("name", ODE_ADAPTIVE)
@pytest.mark.parametrize("t0,t1,t_bad", [(0.0, 1.0, 0.5), (1.0, 0.0, 0.3)])
def test_adaptive_nan_is_located(name, t0, t1, t_bad):
    f = nan_after(t_bad) if t1 > t0 else nan_before(t_bad)
    with pytest.raises(NonFiniteError, match="collapsed") as info:
        solve(
            f,
            torch.ones(3, dtype=F64),
            t0,
            t1,
            name,
            save_at=torch.tensor([0.5 * (t0 + t_bad)], dtype=F64),
        )
    e = info.value
    assert abs(e.t - t_bad) < 1e-6 and e.step > 0
    assert e.partial.t == e.t and torch.isfinite(e.partial.y).all()
    assert e.partial.ys.shape == (1, 3)
    assert torch.allclose(e.partial.y, torch.ones(3, dtype=F64) * math.exp(-(e.t - t0)), rtol=1e-4)


def test_adaptive_rejects_a_transient_nan_and_recovers():
    calls = {"bad": 0}

    def f(t, y):  # NaN on the first evaluation past t = 0.5 only
        if float(t) > 0.5 and calls["bad"] == 0:
            calls["bad"] += 1
            return torch.full_like(y, math.nan)
        return -y

    sol = solve(f, torch.ones(2, dtype=F64), 0.0, 1.0, "dopri5", rtol=1e-8, atol=1e-8)
    assert calls["bad"] == 1 and sol.n_rejected >= 1
    assert torch.allclose(sol.y, torch.full((2,), math.exp(-1.0), dtype=F64), rtol=1e-6)


def test_adaptive_nan_at_start():
    with pytest.raises(NonFiniteError, match="initial") as info:
        solve(nan_after(0.0), torch.ones(3), 0.0, 1.0, "tsit5")
    assert info.value.step == 0 and info.value.t == 0.0


def test_blow_up_collapses_with_solver_error():
    # y' = y^2 from y(0)=1 blows up at t=1: the step collapses before t1=2
    with pytest.raises(SolverError) as info:
        solve(lambda t, y: y**2, torch.ones(1, dtype=F64), 0.0, 2.0, "dopri5", max_steps=100_000)
    assert 0.99 < info.value.t < 1.01
    assert "collapsed" in str(info.value) and not isinstance(info.value, NonFiniteError)


# ----------------------------------------------------------------------------- validation


def f0(t, y):
    return -y


Y = torch.ones(3)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(method="rk5"), ValueError, r"unknown method 'rk5'.*euler.*rk4.*dopri5.*tsit5"),
        (dict(method=3), TypeError, "method"),
        (dict(t0=float("nan")), ValueError, "t0 must be finite"),
        (dict(t1="1"), TypeError, "t1 must be"),
        (dict(t1=torch.ones(2)), ValueError, "t1 must be a scalar"),
        (dict(y0=torch.ones(0, 3)), ValueError, "y0 must not be empty"),
        (dict(y0=torch.ones(3, dtype=torch.int64)), TypeError, "y0 must be a floating"),
        (dict(y0=[1.0, 2.0]), TypeError, "y0 must be a torch.Tensor"),
        (dict(y0=torch.tensor([1.0, math.nan])), ValueError, "y0 must be finite"),
        (dict(f=3), TypeError, "f must be callable"),
        (dict(method="rk4", steps=0), ValueError, "steps must be >= 1"),
        (dict(method="rk4", steps=2.5), TypeError, "steps must be an int"),
        (dict(method="rk4"), ValueError, "exactly one of steps= .* and grid=.*neither"),
        (
            dict(method="rk4", steps=4, grid=torch.linspace(0, 1, 5)),
            ValueError,
            "exactly one of steps=.*both",
        ),
        (
            dict(method="euler", grid=torch.tensor([0.0, 0.6, 0.5, 1.0])),
            ValueError,
            "grid must be strictly increasing",
        ),
        (
            dict(method="euler", grid=torch.tensor([0.0, 0.5, 0.9])),
            ValueError,
            "grid must start at t0=0.0 and end at t1=1.0",
        ),
        (
            dict(method="euler", grid=torch.tensor([0.0, 0.5, 1.0]), t0=1.0, t1=0.0),
            ValueError,
            "grid must be strictly decreasing",
        ),
        (dict(method="euler", grid=torch.ones(2, 2)), ValueError, "grid must be a 1-D"),
        (dict(method="euler", steps=4, h0=0.1), ValueError, "h0 applies to adaptive"),
        (dict(method="dopri5", steps=4), ValueError, "steps/grid apply to fixed-step"),
        (dict(rtol=0.0, atol=0.0), ValueError, "rtol and atol must not both be 0"),
        (dict(rtol=-1e-3), ValueError, "rtol must be finite and >= 0"),
        (dict(atol=math.inf), ValueError, "atol must be finite and >= 0"),
        (dict(atol=math.nan), ValueError, "atol must be finite and >= 0"),
        (dict(rtol="small"), TypeError, "rtol must be a real number"),
        (dict(max_steps=0), ValueError, "max_steps must be >= 1"),
        (dict(max_steps=10.0), TypeError, "max_steps must be an int"),
        (dict(h0=-0.1), ValueError, "h0 must be finite and > 0"),
        (dict(g=f0), ValueError, "g is given but 'dopri5' is an ODE method"),
        (dict(method="rk4", steps=3, g=f0), ValueError, "g is given but 'rk4' is an ODE method"),
        (dict(bm=object()), ValueError, "bm is given"),
        (dict(save_at=torch.tensor([0.5, 1.5])), ValueError, r"save_at must lie within \[t0, t1\]"),
        (dict(save_at=torch.tensor([0.7, 0.5])), ValueError, "save_at must be strictly increasing"),
        (
            dict(save_at=torch.tensor([0.2, 0.5]), t0=1.0, t1=0.0),
            ValueError,
            "save_at must be strictly decreasing",
        ),
        (dict(save_at=torch.tensor([])), ValueError, "save_at must be a non-empty 1-D"),
        (dict(save_at=0.5), TypeError, "save_at must be a 1-D tensor"),
        (dict(cuda_graph="yes"), ValueError, "cuda_graph must be"),
    ],
)
def test_validation_names_the_argument(kwargs, exc, match):
    args = dict(f=f0, y0=Y, t0=0.0, t1=1.0, method="dopri5")
    args.update(kwargs)
    f, y0, t0, t1, method = (args.pop(k) for k in ("f", "y0", "t0", "t1", "method"))
    with pytest.raises(exc, match=match):
        solve(f, y0, t0, t1, method, **args)


@pytest.mark.parametrize("name", method_names("sde", backends=False))
def test_sde_method_needs_g(name):
    kw = {} if METHODS[name].adaptive else {"steps": 4}
    with pytest.raises(ValueError, match="SDE method and needs the diffusion g"):
        solve(f0, Y, 0.0, 1.0, name, **kw)


def test_methods_lists_every_ode_method():
    assert set(ODE_FIXED + ODE_ADAPTIVE) <= set(METHODS)
    for m in ODE_FIXED + ODE_ADAPTIVE:  # each listed name is accepted
        kw = {"steps": 2} if m in ODE_FIXED else {}
        assert solve(f0, Y, 0.0, 1.0, m, **kw).y.shape == Y.shape
