"""The method registry: every registered method is reachable through ``solve``/``sample``,
named by the unknown-method errors, and its declared NFE per step is what a solve costs."""

import pytest
import torch
from helpers import one_thread_fixture

import ndmsolve as nd
from ndmsolve.solvers import METHODS, get_method, method_names, register, registry, solve

F64 = torch.float64
_one_thread = one_thread_fixture()


def _ndm():
    data = nd.GaussianMixture(
        torch.tensor([0.6, 0.4], dtype=F64),
        torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=F64),
        0.2 * torch.eye(2, dtype=F64).expand(2, 2, 2).clone(),
    )
    sched = nd.LinearLogSNR(-6.0, 6.0)
    return nd.NDM(nd.ExactPredictor(data, sched), schedule=sched, data_shape=(2,))


def _solve_kwargs(m):
    kw = {} if m.adaptive else {"steps": 4}
    if m.adaptive:
        kw.update(rtol=1e-5, atol=1e-5) if m.family == "ode" else kw.update(rtol=0.3, atol=0.3)
    if m.family == "sde":
        kw.update(
            g=lambda t, y: torch.full_like(y, 0.1),
            noise="additive",
            generator=torch.Generator().manual_seed(0),
        )
    return kw


def test_listing_has_every_family():
    assert {m.kind for m in METHODS.values()} == {
        "ode_fixed",
        "ode_adaptive",
        "sde_fixed",
        "sde_adaptive",
        "discrete",
        "backends",
    }
    for m in METHODS.values():
        assert METHODS[m.name] is m and get_method(m.name) is m


@pytest.mark.parametrize("name", [n for n in METHODS if METHODS[n].family != "model"])
def test_every_ode_sde_method_is_reachable_through_solve(name):
    m = METHODS[name]
    y0 = torch.tensor([[1.0, -0.5], [0.3, 2.0]], dtype=F64)
    sol = solve(lambda t, y: -y, y0, 0.0, 1.0, name, **_solve_kwargs(m))
    assert sol.y.shape == y0.shape and bool(torch.isfinite(sol.y).all())
    if m.family == "ode":  # y' = -y: a loose check that the method actually integrated it
        assert torch.allclose(sol.y, y0 * torch.exp(torch.tensor(-1.0, dtype=F64)), rtol=0.2)
    if m.nfe_per_step is not None and not m.adaptive:
        assert sol.nfe == 4 * m.nfe_per_step
    if m.nfe_per_step is not None and m.adaptive and m.family == "ode":
        # accepted steps cost nfe_per_step each; rejected ones too; +1 first call, +1 h0 probe
        assert sol.nfe == (sol.n_accepted + sol.n_rejected) * m.nfe_per_step + 2


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_is_reachable_through_sample(name):
    m = METHODS[name]
    model = _ndm()
    z1 = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    kw = {"rtol": 1e-3, "atol": 1e-3} if m.adaptive and m.family == "ode" else {}
    if m.adaptive and m.family == "sde":
        kw = {"rtol": 0.3, "atol": 0.3}
    if not m.adaptive:
        kw["steps"] = 4
    out = nd.sample(model, method=name, z1=z1, generator=torch.Generator().manual_seed(0), **kw)
    assert out.samples.shape == z1.shape and bool(torch.isfinite(out.samples).all())
    if m.family == "model":
        assert out.nfe == 4 * m.nfe_per_step


def test_unknown_method_errors_list_every_name():
    with pytest.raises(ValueError, match="unknown method 'nope'") as e_solve:
        solve(lambda t, y: -y, torch.ones(2, dtype=F64), 0.0, 1.0, "nope")
    with pytest.raises(ValueError, match="unknown method 'nope'") as e_sample:
        nd.sample(_ndm(), 3, "nope")
    for name, m in METHODS.items():
        assert name in str(e_sample.value)
        assert (name in str(e_solve.value)) == (m.family != "model")


def test_solve_points_model_samplers_to_sample():
    with pytest.raises(ValueError, match="nd.sample"):
        solve(lambda t, y: -y, torch.ones(2, dtype=F64), 1.0, 0.0, "ddim", steps=3)


def test_sampling_methods_is_the_registry():
    listed = nd.sampling.sampling_methods()
    assert sorted(n for names in listed.values() for n in names) == sorted(METHODS)
    assert listed["discrete"] == method_names("model")


@pytest.fixture
def scratch_registry():
    """Registrations made inside the test are removed afterwards."""
    before = set(METHODS)
    yield
    for name in set(registry._TABLE) - before:
        del registry._TABLE[name]


def test_one_decorator_registers_a_sampler_for_sample(scratch_registry):
    @register(
        "test_frozen_xhat",
        family="model",
        stepping="fixed",
        order=1,
        nfe_per_step=1,
        options=("scale",),
    )
    def run(model, z, grid, *, generator=None, save=False, method="", scale=1.0):
        sol = METHODS["ddim"].run(model, z, grid, generator=generator, save=save, method=method)
        sol.y = sol.y * scale
        return sol

    assert METHODS["test_frozen_xhat"].run is run
    model = _ndm()
    z1 = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    ref = nd.sample(model, method="ddim", z1=z1, steps=3).samples
    out = nd.sample(model, method="test_frozen_xhat", z1=z1, steps=3, scale=2.0)
    torch.testing.assert_close(out.samples, 2.0 * ref)
    with pytest.raises(TypeError, match="unexpected (arguments|keyword argument).*'bogus'"):
        nd.sample(model, method="test_frozen_xhat", z1=z1, steps=3, bogus=1)
    with pytest.raises(ValueError, match="eta applies"):
        nd.sample(model, method="test_frozen_xhat", z1=z1, steps=3, eta=0.5)
    with pytest.raises(ValueError, match="already registered"):
        register(
            "test_frozen_xhat",
            family="model",
            stepping="fixed",
            order=1,
            nfe_per_step=1,
            run=run,
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"family": "pde", "stepping": "fixed"}, "family must be one of"),
        ({"family": "ode", "stepping": "sometimes"}, "stepping must be one of"),
        ({"family": "model", "stepping": "adaptive"}, "stepping must be 'fixed'"),
        ({"family": "ode", "stepping": "fixed", "warp_drive": True}, "unknown method capabilities"),
    ],
)
def test_register_validates(kwargs, match, scratch_registry):
    with pytest.raises((ValueError, TypeError), match=match):
        register("test_bad", order=1, nfe_per_step=1, run=lambda *a, **k: None, **kwargs)


def test_command_line_method_options_read_the_registry():
    from ndmsolve.commands import likelihood as cl
    from ndmsolve.commands import sample as cs
    from ndmsolve.commands.options import UsageError

    samp = next(o for o in cs.OPTIONS if o.name == "method")
    like = next(o for o in cl.OPTIONS if o.name == "method")
    for name in METHODS:
        assert samp.convert(name, "") == name
        if METHODS[name].family == "ode":
            assert like.convert(name, "") == name
        else:
            with pytest.raises(UsageError, match="registered method"):
                like.convert(name, "")
    with pytest.raises(UsageError, match="registered method.*ddim.*torchsde:euler"):
        samp.convert("nope", "")
    assert like.default == "tsit5"
