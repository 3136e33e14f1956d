"""nd.log_likelihood's default step control holds the tolerance for every point: on a
closed-form NDM batch the worst point's log-density error stays within WORST_FACTOR x tol,
against scipy's DOP853 at a tight tolerance (which our tight solve also matches)."""

import numpy as np
import pytest
import torch
from helpers import one_thread_fixture
from scipy.integrate import solve_ivp

import ndmsolve as nd
from ndmsolve.likelihood import AugmentedField, Divergence, standard_normal_logp

F64 = torch.float64
_one_thread = one_thread_fixture(F64)
#: the stated bound: worst-point |log p error| <= WORST_FACTOR * tol (rtol = atol = tol).
#: The design goal is 10 (met on three 512-point sets, benchmarks/work_precision.py); this
#: 128-point batch reaches 11.2 x tol at 1e-3, so the bound stated here is 15. The batch RMS
#: norm is at 100 x tol and beyond on the same batch.
WORST_FACTOR = 15.0


def _t(*v):
    return torch.tensor(v, dtype=F64)


@pytest.fixture(scope="module")
def case():
    covs = torch.tensor(
        [[[0.20, 0.05], [0.05, 0.10]], [[0.10, 0.0], [0.0, 0.25]], [[0.15, -0.05], [-0.05, 0.10]]],
        dtype=F64,
    )
    data = nd.GaussianMixture(_t(0.5, 0.3, 0.2), _t([-1.5, 0.0], [1.0, 1.0], [1.0, -1.5]), covs)
    tr = nd.AffineTimeTransform(_t(0.6, -0.4), _t(0.3, 0.2), _t(1.0, -0.6), _t(-0.4, 0.5))
    sched = nd.LinearLogSNR(-10.0, 10.0)
    model = nd.NDM(nd.ExactPredictor(data, sched, tr), tr, sched, data_shape=(2,))
    z0 = data.sample(128, torch.Generator().manual_seed(0))
    field = AugmentedField(Divergence(model.velocity, "exact", None), (2,), 128)

    def fun(t, y):
        with torch.no_grad():
            return (
                field(torch.tensor(t, dtype=F64), torch.from_numpy(y).reshape(128, 3))
                .reshape(-1)
                .numpy()
            )

    y0 = np.concatenate([z0.numpy(), np.zeros((128, 1))], 1).reshape(-1)
    out = solve_ivp(fun, (0.0, 1.0), y0, method="DOP853", rtol=1e-10, atol=1e-10)
    y1 = torch.from_numpy(out.y[:, -1]).reshape(128, 3)
    ref = standard_normal_logp(y1[:, :2]) + y1[:, 2]
    return model, z0, ref


def test_tight_solve_agrees_with_scipy_dop853(case):
    model, z0, ref = case
    res = nd.log_likelihood(model, z0, trace="exact", rtol=1e-9, atol=1e-9)
    assert (res.logp - ref).abs().max().item() < 1e-7


@pytest.mark.parametrize("tol", [1e-3, 1e-4])
def test_default_worst_point_error_within_stated_multiple_of_tol(case, tol):
    model, z0, ref = case
    res = nd.log_likelihood(model, z0, trace="exact", rtol=tol, atol=tol)
    worst = (res.logp - ref).abs().max().item()
    assert worst <= WORST_FACTOR * tol, worst
    # the batch RMS norm, same method and tolerance: cheaper, and its worst point is worse
    rms = nd.log_likelihood(
        model, z0, trace="exact", rtol=tol, atol=tol, norm="rms", pi_coeffs=(0.2, 0.4)
    )
    assert rms.nfe < res.nfe
    assert (rms.logp - ref).abs().max().item() > worst
