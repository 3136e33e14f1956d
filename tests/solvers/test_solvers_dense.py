"""Dense output of the adaptive ODE solvers: the interpolants' identities and orders on a
closed form, and save_at that costs no step and no NFE."""

import math

import numpy as np
import pytest
import torch
from helpers import one_thread_fixture
from hypothesis import given, settings
from hypothesis import strategies as st

import ndmsolve as nd
from ndmsolve.solvers import solve, tableaus
from ndmsolve.solvers.adaptive import solve_adaptive
from ndmsolve.solvers.base import time_tensor
from ndmsolve.solvers.dense import dense_polynomials, interpolant_order, interpolate
from ndmsolve.solvers.rk import rk_step

F64 = torch.float64
_one_thread = one_thread_fixture()
ADAPTIVE = [tableaus.bosh3, tableaus.dopri5, tableaus.tsit5]


def _ev(p, th):
    return sum(c * th**k for k, c in enumerate(p))


@pytest.mark.parametrize("tab", ADAPTIVE, ids=lambda t: t.name)
@settings(max_examples=30, deadline=None)
@given(th=st.floats(0.0, 1.0))
def test_interpolant_weights_are_consistent(tab, th):
    P = dense_polynomials(tab)
    assert len(P) == tab.stages
    assert sum(_ev(p, th) for p in P) == pytest.approx(th, abs=1e-13)  # exact for y' = 1
    for p, b in zip(P, tab.b, strict=True):
        assert _ev(p, 0.0) == 0.0
        assert _ev(p, 1.0) == pytest.approx(b, abs=1e-13)  # θ = 1 is the step's y1


def _f(t, y):
    """Logistic y0' = y0 (1 - y0) and y1' = cos(t) y1: nonlinear and non-autonomous."""
    return torch.stack([y[..., 0] * (1 - y[..., 0]), torch.cos(t) * y[..., 1]], -1)


def _exact(t):
    t = torch.as_tensor(t, dtype=F64)
    return torch.stack([1 / (1 + 3 * torch.exp(-t)), torch.exp(torch.sin(t))], -1)


@pytest.mark.parametrize("tab", ADAPTIVE, ids=lambda t: t.name)
def test_interpolant_order_on_a_closed_form(tab):
    """One step of size h from the exact state; the interpolant inside the step has local
    error O(h^(q+1)), q = interpolant_order: the log-log slope over halvings of h."""
    t0, thetas = 0.3, (0.23, 0.5, 0.81)
    hs = [0.4 / 2**k for k in range(5)]
    errs = []
    for h in hs:
        y0 = _exact(t0)
        ts = [time_tensor(t0 + c * h, y0) for c in tab.c]
        _, ks, _ = rk_step(_f, tab, ts, h, y0)
        ys = interpolate(tab, y0, ks, h, thetas)
        errs.append(
            max(
                float((y - _exact(t0 + th * h)).abs().max())
                for y, th in zip(ys, thetas, strict=True)
            )
        )
    slopes = np.diff(np.log(errs)) / np.diff(np.log(hs))
    q = interpolant_order(tab)
    assert q is not None and q >= tab.order - 1
    assert slopes[-2:].mean() == pytest.approx(q + 1, abs=0.35), (slopes, errs)


@pytest.mark.parametrize("name", ["bosh3", "dopri5", "tsit5"])
def test_save_at_costs_no_extra_nfe(name):
    y0 = _exact(0.0).expand(3, 2).clone()
    save = torch.linspace(0.0, 4.0, 41, dtype=F64)
    tol = 1e-7
    plain = solve(_f, y0, 0.0, 4.0, name, rtol=tol, atol=tol)
    saved = solve(_f, y0, 0.0, 4.0, name, rtol=tol, atol=tol, save_at=save)
    assert saved.nfe == plain.nfe and saved.n_accepted == plain.n_accepted
    assert torch.equal(saved.y, plain.y)  # saving changed no step
    assert saved.ys.shape == (41, 3, 2) and torch.equal(saved.ts, save)
    assert torch.equal(saved.ys[0], y0) and torch.equal(saved.ys[-1], saved.y)
    err = (saved.ys - _exact(save)[:, None, :]).abs().max().item()
    assert err < 50 * tol, err
    clipped = solve_adaptive(
        _f, y0, 0.0, 4.0, getattr(tableaus, name), rtol=tol, atol=tol, save_at=save, dense=False
    )
    assert clipped.nfe > plain.nfe  # the old way: steps land on the 41 times
    torch.testing.assert_close(saved.ys, clipped.ys, atol=50 * tol, rtol=0)


def test_dense_output_backwards_and_between_steps():
    y0 = _exact(2.0)
    save = torch.tensor([1.999, 1.5, 1.2345, 0.5, 0.0], dtype=F64)
    sol = solve(_f, y0, 2.0, 0.0, "tsit5", rtol=1e-9, atol=1e-9, save_at=save)
    torch.testing.assert_close(sol.ys, _exact(save), atol=1e-7, rtol=0)
    assert sol.nfe == solve(_f, y0, 2.0, 0.0, "tsit5", rtol=1e-9, atol=1e-9).nfe


def test_sample_return_path_is_free_for_adaptive_methods():
    data = nd.GaussianMixture(
        torch.tensor([1.0], dtype=F64),
        torch.zeros(1, 2, dtype=F64),
        0.3 * torch.eye(2, dtype=F64)[None],
    )
    sched = nd.LinearLogSNR(-6.0, 6.0)
    model = nd.NDM(nd.ExactPredictor(data, sched), schedule=sched, data_shape=(2,))
    z1 = torch.randn(8, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    a = nd.sample(model, method="dopri5", z1=z1, rtol=1e-5, atol=1e-5)
    b = nd.sample(model, method="dopri5", z1=z1, rtol=1e-5, atol=1e-5, return_path=True)
    assert a.nfe == b.nfe and torch.equal(a.samples, b.samples)
    assert b.path.shape == (11, 8, 2) and math.isclose(float(b.path_ts[0]), 1.0)
