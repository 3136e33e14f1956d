"""A network that turns NaN mid-run: every method's error names the time, the step and what
went non-finite, for nd.sample and nd.log_likelihood (issue 17, item 7)."""

import re

import pytest
import torch

import ndmsolve as nd
from ndmsolve.solvers import METHODS

T_BAD = 0.3  # the predictor returns NaN for t < T_BAD
F64 = torch.float64


class NaNBelow(torch.nn.Module):
    """x̂(z, t) = w z, NaN where t < T_BAD."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5, dtype=F64))

    def forward(self, z, t):
        bad = (t < T_BAD).reshape(-1, *[1] * (z.ndim - 1))
        return torch.where(bad, torch.full_like(z, float("nan")), self.w * z)


def _model(check=True):
    return nd.NDM(NaNBelow(), schedule=nd.LinearLogSNR(), data_shape=(2,), check=check)


def _steps(method):
    return {} if METHODS[method].adaptive else {"steps": 10}


ALL = sorted(METHODS)
ODE = [m for m in ALL if METHODS[m].family == "ode"]


def _assert_located(err, quantity):
    assert isinstance(err, nd.NonFiniteError)
    msg = str(err)
    assert isinstance(err.step, int) and err.step >= 0
    assert re.search(rf"(step|field evaluation) {err.step}\b", msg), msg
    assert -1e-12 <= err.t <= T_BAD + 1e-6, (err.t, msg)
    times = [float(x) for x in re.findall(r"t=(-?[0-9.]+(?:e-?\d+)?)", msg)]
    assert any(abs(x - err.t) <= 1e-5 for x in times), (err.t, msg)
    assert quantity in msg, msg


def test_registry_is_covered():
    kinds = nd.sampling_methods()
    assert set(ALL) == {m for names in kinds.values() for m in names}


@pytest.mark.parametrize("method", ALL)
def test_sample_names_t_step_and_x_hat(method):
    with pytest.raises(nd.NonFiniteError) as info:
        nd.sample(_model(), 8, method, generator=0, **_steps(method))
    _assert_located(info.value, "x_hat (the output of predictor (NaNBelow))")
    assert info.value.quantity.startswith("x_hat")


@pytest.mark.parametrize("method", ODE)
def test_log_likelihood_names_t_step_and_x_hat(method):
    z0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    with pytest.raises(nd.NonFiniteError) as info:
        nd.log_likelihood(_model(), z0, method=method, **_steps(method))
    _assert_located(info.value, "x_hat (the output of predictor (NaNBelow))")
    assert info.value.t == 0.0  # the solve starts at t0 = 0, already below T_BAD


@pytest.mark.parametrize(
    "method",
    ["euler", "heun", "rk4", "dopri5", "tsit5", "ddim", "ancestral", "unipc_2m", "dpmpp_3m"]
    + ["euler_maruyama", "sra1", "adaptive_heun_sde", "torchsde:euler"],
)
def test_unchecked_model_nan_state_names_t_and_step(method):
    # check=False: NaN flows into the state and the solver's own check reports it
    with pytest.raises(nd.NonFiniteError) as info:
        nd.sample(_model(check=False), 8, method, generator=0, **_steps(method))
    _assert_located(info.value, "state")
    assert info.value.quantity == "the state"


def test_adaptive_collapse_pins_the_boundary():
    # dopri5 rejects the NaN trials and shrinks onto t = T_BAD
    with pytest.raises(nd.NonFiniteError, match="collapsed") as info:
        nd.sample(_model(), 8, "dopri5")
    assert T_BAD - 1e-9 < info.value.t < T_BAD
    assert info.value.partial.t == pytest.approx(T_BAD, abs=1e-9)


def test_solve_field_fault_gets_its_step():
    # any field may report its own NaN with step -1; the solver fills in its step
    from ndmsolve.solvers.base import NonFiniteError

    def f(t, y):
        if float(t) > 0.55:
            raise NonFiniteError("custom", t=float(t), step=-1, quantity="my quantity")
        return -y

    with pytest.raises(NonFiniteError, match=r"rk4: my quantity is NaN/inf at t=0\.6, in step 5"):
        nd.solve(f, torch.ones(3, dtype=F64), 0.0, 1.0, "rk4", steps=10)
