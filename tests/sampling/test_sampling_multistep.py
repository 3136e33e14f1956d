"""Multistep exponential integrators (ndmsolve.sampling.multistep) and the time grids.

* F = identity: each method equals its published formula step for step (independent
  implementations below, written from the papers / k-diffusion's and UniPC's code).
* Closed-form affine NDM: observed orders against a 2000-step RK4 solve.
* NFE = predictor calls; F is only called, never differentiated (no JVP).
* Bad input: clear errors naming the argument.
"""

import math

import pytest
import torch
from helpers import F64, Counting, one_thread_fixture
from hypothesis import given, settings
from hypothesis import strategies as st

import ndmsolve as nd
from ndmsolve.sampling import make_time_grid
from ndmsolve.sampling.multistep import MULTISTEP_METHODS, multistep_solve

_one_thread = one_thread_fixture(F64)

SCHED = nd.LinearLogSNR(-10.0, 10.0)


class DiagMixturePredictor(torch.nn.Module):
    """E[x | z_t] for x ~ Σ_k π_k N(m_k, diag(v_k)) under F(x, t) = a(t) ⊙ x + b(t): the
    closed form of ``ExactPredictor`` with every covariance diagonal, elementwise (fast
    enough for 2000-step reference solves; checked against ``ExactPredictor`` below)."""

    def __init__(self, weights, means, variances, transform=None):
        super().__init__()
        self.logw = torch.log(weights / weights.sum())
        self.means, self.vars, self.transform = means, variances, transform

    def forward(self, z, t):
        alpha, sigma = SCHED(t)
        if self.transform is None:
            a, b = torch.ones_like(z), torch.zeros_like(z)
        else:
            a, b, _, _ = self.transform.coefficients(t)
        logw, means, vs = (v.to(z.dtype) for v in (self.logw, self.means, self.vars))
        A, c = alpha[:, None] * a, alpha[:, None] * b  # z = A x + c + σ ε
        var = A[:, None] ** 2 * vs + (sigma**2)[:, None, None]  # (B, K, d)
        diff = z[:, None] - A[:, None] * means - c[:, None]
        logp = logw - 0.5 * (diff**2 / var + torch.log(var)).sum(-1)
        r = torch.softmax(logp, dim=1)
        cond = means + vs * A[:, None] * diff / var
        return (r[..., None] * cond).sum(1)


def mixture_params(K: int = 5, d: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(K, d, generator=g, dtype=F64)
    variances = 0.3 + 0.3 * torch.rand(K, d, generator=g, dtype=F64)
    return torch.ones(K, dtype=F64), means, variances


PARAMS = mixture_params()


def affine(seed: int = 1, scale: float = 0.5) -> nd.AffineTimeTransform:
    g = torch.Generator().manual_seed(seed)
    a1, a2, b1, b2 = (scale * torch.randn(2, generator=g, dtype=F64) for _ in range(4))
    return nd.AffineTimeTransform(a1, a2, b1, b2)


def ndm(transform=None) -> nd.NDM:
    predictor = Counting(DiagMixturePredictor(*PARAMS, transform))
    return nd.NDM(predictor, transform, SCHED, data_shape=(2,))


def test_diag_predictor_is_the_exact_posterior_mean():
    w, m, v = PARAMS
    data = nd.GaussianMixture(w, m, torch.diag_embed(v))
    tr = affine()
    z, t = z1(32), torch.rand(32, generator=torch.Generator().manual_seed(5), dtype=F64)
    want = nd.ExactPredictor(data, SCHED, tr)(z, t)
    assert torch.allclose(DiagMixturePredictor(w, m, v, tr)(z, t), want, atol=1e-12, rtol=0)


def z1(n: int = 64, seed: int = 2) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --------------------------------------------------------------------------- published formulas
# Written in k-diffusion's coordinates (x = z/α, σ_k = σ/α, λ̃ = −log σ_k), as its code is.
def _kd_setup(model, grid):
    alpha, sigma = SCHED(grid)
    sk = sigma / alpha

    def denoise(x, i):
        t = grid[i].expand(x.shape[0])
        return model.x_hat(alpha[i] * x, t)

    return alpha, sk, denoise


def _lower(grid, lof: bool) -> bool:
    """DPM-Solver / UniPC ``lower_order_final`` on grids under 15 steps (diffusers' rule)."""
    return lof and len(grid) - 1 < 15


def ref_dpmpp_2m(model, z, grid, lof: bool = False):
    """k-diffusion sample_dpmpp_2m (DPM-Solver++(2M), Lu et al. 2022, Alg. 2); ``lof``:
    the last step first order (DPM-Solver's lower_order_final)."""
    alpha, sk, denoise = _kd_setup(model, grid)
    x, old, path = z / alpha[0], None, [z]
    N = len(grid) - 1
    for i in range(N):
        den = denoise(x, i)
        t, t_next = -sk[i].log(), -sk[i + 1].log()
        h = t_next - t
        if old is None or (_lower(grid, lof) and i == N - 1):
            x = (sk[i + 1] / sk[i]) * x - (-h).expm1() * den
        else:
            r = (t - (-sk[i - 1].log())) / h
            dd = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old
            x = (sk[i + 1] / sk[i]) * x - (-h).expm1() * dd
        old = den
        path.append(alpha[i + 1] * x)
    return torch.stack(path)


def ref_dpmpp_3m(
    model, z, grid, d2_coef: float = 1.0, lof: bool = False, midpoint=False, max_nodes=3
):
    """k-diffusion sample_dpmpp_3m_sde at eta = 0 (DPM-Solver++(3M)); ``d2_coef = 2`` is
    the exact integral of the quadratic (ei_3m); ``lof``: step i of N uses at most N − i
    predictions (DPM-Solver's lower_order_final); ``midpoint``: diffusers' "midpoint" form
    of the two-prediction steps; ``max_nodes = 2``: never the three-prediction step."""
    alpha, sk, denoise = _kd_setup(model, grid)
    x, path = z / alpha[0], [z]
    d_1 = d_2 = h_1 = h_2 = None
    N = len(grid) - 1
    for i in range(N):
        den = denoise(x, i)
        t, s = -sk[i].log(), -sk[i + 1].log()
        h = s - t
        x = torch.exp(-h) * x + (-h).expm1().neg() * den
        phi_2 = h.neg().expm1() / h + 1
        left = N - i if _lower(grid, lof) else 3
        if left == 1:
            pass
        elif h_2 is not None and left >= 3 and max_nodes >= 3:
            r0, r1 = h_1 / h, h_2 / h
            d1_0, d1_1 = (den - d_1) / r0, (d_1 - d_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_3 = phi_2 / h - 0.5
            x = x + phi_2 * d1 - d2_coef * phi_3 * d2
        elif h_1 is not None and midpoint:  # diffusers: x − ½ α φ_1 D1 (here x = z/α)
            x = x - 0.5 * (-h).expm1() * (den - d_1) / (h_1 / h)
        elif h_1 is not None:
            x = x + phi_2 * (den - d_1) / (h_1 / h)
        d_1, d_2, h_1, h_2 = den, d_1, h, h_1
        path.append(alpha[i + 1] * x)
    return torch.stack(path)


def ref_unipc(model, z, grid, order: int, lof: bool = False, bh1: bool = False):
    """UniPC (Zhao et al. 2023), data prediction, B(h) = expm1(−h) ("bh2") or −h ("bh1"):
    the update of UniPC's multistep_uni_pc_bh_update, in VP form; ``lof``: its
    lower_order_final, step_order = min(order, steps + 1 − step)."""
    alpha, sigma = SCHED(grid)
    lam = torch.log(alpha) - torch.log(sigma)
    N = len(grid) - 1
    B = z.shape[0]
    models, idx = [model.x_hat(z, grid[0].expand(B))], [0]
    x, path = z, [z]
    for step in range(1, N + 1):
        p = min(order, step, N + 1 - step) if _lower(grid, lof) else min(order, step)
        i0 = idx[-1]
        h = lam[step] - lam[i0]
        rks, D1s = [], []
        for k in range(1, p):
            ik = idx[-(k + 1)]
            rk = (lam[ik] - lam[i0]) / h
            rks.append(rk)
            D1s.append((models[-(k + 1)] - models[-1]) / rk)
        rks.append(torch.ones((), dtype=F64))
        rks = torch.stack(rks)
        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        B_h = hh if bh1 else torch.expm1(hh)
        fact, R, b = 1, [], []
        for i in range(1, p + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * fact / B_h)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1 / fact
        R, b = torch.stack(R), torch.stack(b)
        use_corrector = step < N
        x_t_ = sigma[step] / sigma[i0] * x - alpha[step] * h_phi_1 * models[-1]
        if D1s:
            rhos_p = (
                torch.tensor([0.5], dtype=F64)
                if p == 2
                else torch.linalg.solve(R[:-1, :-1], b[:-1])
            )
            pred_res = sum(r * d for r, d in zip(rhos_p, D1s, strict=True))
        else:
            pred_res = 0
        x_t = x_t_ - alpha[step] * B_h * pred_res
        model_t = model.x_hat(x_t, grid[step].expand(B)) if step < N else None
        if use_corrector:
            rhos_c = torch.tensor([0.5], dtype=F64) if p == 1 else torch.linalg.solve(R, b)
            corr_res = sum(r * d for r, d in zip(rhos_c[:-1], D1s, strict=True)) if D1s else 0
            x_t = x_t_ - alpha[step] * B_h * (corr_res + rhos_c[-1] * (model_t - models[-1]))
        x = x_t
        path.append(x)
        if model_t is not None:
            models.append(model_t)
            idx.append(step)
    return torch.stack(path)


REFS = {
    "dpmpp_2m": ref_dpmpp_2m,
    "dpmpp_3m": lambda m, z, g, lof: ref_dpmpp_3m(m, z, g, lof=lof),
    "ei_3m": lambda m, z, g, lof: ref_dpmpp_3m(m, z, g, d2_coef=2.0, lof=lof),
    "unipc_1m": lambda m, z, g, lof: ref_unipc(m, z, g, 1, lof),
    "unipc_2m": lambda m, z, g, lof: ref_unipc(m, z, g, 2, lof),
    "unipc_3m": lambda m, z, g, lof: ref_unipc(m, z, g, 3, lof),
}


@pytest.mark.parametrize("ext", ["x", "F"])
@pytest.mark.parametrize("lof", [False, True])
@pytest.mark.parametrize("kind", ["logsnr", "karras", "uniform"])
@pytest.mark.parametrize("method", list(MULTISTEP_METHODS))
def test_identity_equals_published_formula(method, kind, lof, ext):
    model = ndm()
    grid = make_time_grid(7, kind, SCHED, t_min=0.02, dtype=F64)
    ours = nd.sample(
        model,
        z1=z1(),
        method=method,
        grid=grid,
        return_path=True,
        lower_order_final=lof,
        extrapolate=ext,
    ).path
    ref = REFS[method](model, z1(), grid, lof)
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    assert err < 1e-12, f"{method} on a {kind} grid differs from the published formula by {err:.2e}"


@pytest.mark.parametrize("method", list(MULTISTEP_METHODS))
def test_lower_order_final_default_and_its_reach(method):
    model, z = ndm(affine()), z1(16)
    run = lambda steps, **kw: (
        nd.sample(  # noqa: E731
            model, z1=z.clone(), method=method, steps=steps, grid_kind="logsnr", **kw
        ).samples
    )
    assert nd.solvers.METHODS[method].options == (
        "lower_order_final",
        "extrapolate",
        "solver_type",
    )
    for steps in (5, 14):  # on by default below 15 steps, and it changes the result there
        on, off = run(steps), run(steps, lower_order_final=False)
        assert torch.equal(on, run(steps, lower_order_final=True))
        if MULTISTEP_METHODS[method].history > 1:  # one prediction: nothing to lower
            assert (on - off).abs().max() > 1e-8, (method, steps)
    # from 15 steps on it changes nothing: the full-order formulas (and orders) hold
    assert torch.equal(run(15), run(15, lower_order_final=False))
    with pytest.raises(TypeError, match="lower_order_final must be a bool"):
        run(5, lower_order_final="yes")


# the other variants (solver_type), against the same independent references
VARIANT_REFS = {
    ("dpmpp_2m", "heun"): lambda m, z, g: ref_dpmpp_3m_2(m, z, g),
    ("dpmpp_3m", "midpoint"): lambda m, z, g: ref_dpmpp_3m(m, z, g, midpoint=True),
    ("unipc_1m", "bh1"): lambda m, z, g: ref_unipc(m, z, g, 1, bh1=True),
    ("unipc_2m", "bh1"): lambda m, z, g: ref_unipc(m, z, g, 2, bh1=True),
    ("unipc_3m", "bh1"): lambda m, z, g: ref_unipc(m, z, g, 3, bh1=True),
}


def ref_dpmpp_3m_2(model, z, grid):
    """DPM-Solver++(2M) in diffusers' "heun" form: 3M's two-prediction step throughout."""
    return ref_dpmpp_3m(model, z, grid, max_nodes=2)


@pytest.mark.parametrize("method,kind", list(VARIANT_REFS))
def test_solver_type_variants_equal_their_formulas(method, kind):
    model = ndm()
    grid = make_time_grid(7, "logsnr", SCHED, t_min=0.02, dtype=F64)
    run = lambda k: (
        nd.sample(  # noqa: E731
            model,
            z1=z1(),
            method=method,
            grid=grid,
            return_path=True,
            solver_type=k,
            lower_order_final=False,
        ).path
    )
    ours, default = run(kind), run(None)
    ref = VARIANT_REFS[method, kind](model, z1(), grid)
    assert (ours - ref).abs().max().item() < 1e-12
    assert (ours - default).abs().max().item() > 1e-6  # the variant changes the numbers
    with pytest.raises(ValueError, match=f"solver_type for '{method}' must be one of"):
        nd.sample(model, z1=z1(), method=method, grid=grid, solver_type="rk4")


def test_order_caps_modes():
    from ndmsolve.sampling.multistep import order_caps

    assert order_caps(True, 5, 3) == [3, 3, 3, 2, 1]
    assert order_caps(True, 15, 3) == [3] * 15
    assert order_caps("always", 15, 3) == [3] * 13 + [2, 1]
    assert order_caps("diffusers", 5, 3) == [3, 3, 3, 3, 2]
    assert order_caps("diffusers", 20, 2) == [2] * 20
    assert order_caps(False, 4, 2) == [2] * 4
    assert order_caps((3, 1, 2), 3, 2) == [2, 1, 2]
    with pytest.raises(ValueError, match="one positive int per step"):
        order_caps((3, 0, 2), 3, 2)
    with pytest.raises(ValueError, match=r"one positive int per step \(4 steps\)"):
        order_caps((3, 1, 2), 4, 2)


def test_lower_order_caps_as_a_sequence_equal_the_named_modes():
    model = ndm(affine())
    grid = make_time_grid(6, "logsnr", SCHED, t_min=0.02, dtype=F64)
    run = lambda lof: (
        nd.sample(  # noqa: E731
            model, z1=z1(), method="unipc_3m", grid=grid, lower_order_final=lof
        ).samples
    )
    assert torch.equal(run("diffusers"), run((3, 3, 3, 3, 3, 2)))
    assert torch.equal(run("always"), run(True))
    assert not torch.equal(run("diffusers"), run(True))


class TanhNet(torch.nn.Module):
    """net(x, t) = 0.4 (1 + t) tanh(x): with ``ResidualTransform`` a smooth nonlinear F
    whose ∂_x F varies in x and t."""

    def forward(self, x, t):
        return 0.4 * (1 + t[:, None]) * torch.tanh(x)


def nonlinear_ndm() -> nd.NDM:
    # any smooth predictor defines a PF-ODE; the affine mixture's posterior mean is one
    predictor = Counting(DiagMixturePredictor(*PARAMS, affine()))
    return nd.NDM(predictor, nd.ResidualTransform(TanhNet()), SCHED, data_shape=(2,))


@pytest.mark.parametrize("method", list(MULTISTEP_METHODS))
def test_extrapolate_in_F_equals_x_for_affine_F_and_differs_otherwise(method):
    # F affine in x and Σ w_j = 1: F(Σ w_j x̂_j, ·) = Σ w_j F(x̂_j, ·), so the two agree
    # step for step (a(t) varying, so ∂_x F is not constant); for a nonlinear F they differ.
    z = z1(16)
    for model, same in ((ndm(scaling_affine()), True), (nonlinear_ndm(), False)):
        x, f = (
            nd.sample(model, z1=z, method=method, steps=8, return_path=True, extrapolate=e).path
            for e in ("x", "F")
        )
        err = (x - f).abs().max().item()
        assert (err < 1e-12) if same else (err > 1e-6), (method, same, err)
    with pytest.raises(ValueError, match="extrapolate must be 'x' or 'F', got 'D'"):
        nd.sample(ndm(), z1=z, method=method, steps=5, extrapolate="D")


@pytest.mark.parametrize("ext", ["x", "F"])
def test_observed_order_two_for_nonlinear_F(ext):
    # The general-F order (module docstring) of either combination: self-convergence of
    # dpmpp_2m against itself at 1024 steps (~6% of the errors compared).
    model, z = nonlinear_ndm(), z1(16)
    kw = dict(method="dpmpp_2m", grid_kind="logsnr", extrapolate=ext)
    ref = nd.sample(model, z1=z.clone(), steps=1024, **kw).samples
    errs = [
        (nd.sample(model, z1=z.clone(), steps=n, **kw).samples - ref).pow(2).mean().sqrt().item()
        for n in (64, 128)
    ]
    slope = math.log2(errs[0] / errs[1])
    assert abs(slope - 2) < 0.3, f"extrapolate={ext}: observed {slope:.2f} ({errs})"


def test_extrapolate_in_F_keeps_nfe_and_no_jvp():
    model = nonlinear_ndm()

    def no_dF(*args, **kwargs):
        raise AssertionError("the multistep step asked for ∂_t F")

    model._F_dF = no_dF
    for method in ("dpmpp_3m", "unipc_2m"):
        model.predictor.calls = 0
        res = nd.sample(model, z1=z1(8), method=method, steps=6, extrapolate="F")
        assert res.nfe == model.predictor.calls == 6


def test_lower_order_final_last_step_is_ddim():
    # The last step of a lowered grid is the NDM-DDIM step (2) from the state before it
    # (for a method without corrector, whose x̂ is taken at that very state).
    model, z = ndm(affine()), z1(16)
    grid = make_time_grid(6, "logsnr", SCHED, dtype=F64)
    path = nd.sample(model, z1=z, method="ei_3m", grid=grid, return_path=True).path
    last = nd.sample(model, z1=path[-2], method="ddim", grid=grid[-2:]).samples
    assert torch.allclose(path[-1], last, atol=1e-13, rtol=0)


def test_every_registered_method_has_a_reference():
    assert set(REFS) == set(MULTISTEP_METHODS)


@pytest.mark.parametrize("method", list(MULTISTEP_METHODS))
def test_registered_with_order_nfe_and_no_jvp(method):
    info = nd.solvers.METHODS[method]
    assert (info.family, info.stepping) == ("model", "fixed")
    assert info.order == MULTISTEP_METHODS[method].order
    assert info.nfe_per_step == 1 and info.needs_jvp is False
    assert info.min_steps == MULTISTEP_METHODS[method].history
    assert method in nd.sampling.sampling_methods()["discrete"]


def test_ei_3m_is_the_exact_integral_of_the_quadratic():
    # Independent of the φ algebra: Gauss-Legendre quadrature of e^{λ̃} P(λ̃) over the step,
    # P the quadratic through three x̂ values, against our weights (F = identity).
    from ndmsolve.sampling.multistep import multistep_weights

    lam = [-3.0, -2.1, -1.5, -0.4]
    import numpy as np

    pred, _ = multistep_weights("ei_3m", lam)
    nodes = pred[2]  # the step lam[2] -> lam[3], through x̂ at lam[0..2]
    lo, hi = lam[2], lam[3]
    xg = torch.tensor(lam[:3], dtype=F64)
    u, wq = (torch.tensor(v, dtype=F64) for v in np.polynomial.legendre.leggauss(20))
    lams = 0.5 * (hi - lo) * u + 0.5 * (hi + lo)
    wq = 0.5 * (hi - lo) * wq * torch.exp(lams)
    for j in range(3):  # Lagrange basis ℓ_j, then its e^{λ̃}-weighted mean over the step
        ell = torch.ones_like(lams)
        for m in range(3):
            if m != j:
                ell = ell * (lams - xg[m]) / (xg[j] - xg[m])
        want = float((wq * ell).sum() / wq.sum())
        assert abs(nodes[j] - want) < 1e-12


# --------------------------------------------------------------------------- orders
def observed_slope(model, method, steps, ref, z):
    errs = []
    for n in steps:
        out = nd.sample(model, z1=z.clone(), method=method, steps=n, grid_kind="logsnr").samples
        errs.append((out - ref).pow(2).mean().sqrt().item())
    x = torch.log(torch.tensor(steps, dtype=F64))
    y = torch.log(torch.tensor(errs, dtype=F64))
    slope = -float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    return slope, errs


def shift_affine() -> nd.AffineTimeTransform:
    """F(x, t) = x + b(t): time-varying, ∂_x F constant — the published orders hold."""
    zero = torch.zeros(2, dtype=F64)
    return nd.AffineTimeTransform(
        zero, zero, torch.tensor([1.5, -1.0], dtype=F64), torch.tensor([-0.5, 2.0], dtype=F64)
    )


def scaling_affine() -> nd.AffineTimeTransform:
    """F(x, t) = a(t) ⊙ x + b(t) with a(t) from 1 to (3, 1.7): ∂_x F varies along a step,
    so every method is second order (module docstring of ndmsolve.sampling.multistep)."""
    coeffs = ([3.0, -0.5], [-1.0, 1.2], [1.5, -1.0], [-0.5, 2.0])
    a1, a2, b1, b2 = (torch.tensor(v, dtype=F64) for v in coeffs)
    return nd.AffineTimeTransform(a1, a2, b1, b2)


def rk4_reference(transform, n: int):
    model = ndm(transform)
    z = z1(n)
    return model, z, nd.sample(model, z1=z.clone(), method="rk4", steps=2000).samples


@pytest.fixture(scope="module")
def shift_reference():
    return rk4_reference(shift_affine(), 48)


# step counts in each method's asymptotic range (measured: the slopes settle there)
STEPS = {
    "dpmpp_2m": [64, 128, 256],
    "dpmpp_3m": [128, 256, 512],
    "ei_3m": [32, 64, 128],
    "unipc_1m": [64, 128, 256],
    "unipc_2m": [64, 128, 256],
    "unipc_3m": [32, 64, 128],
}


@pytest.mark.parametrize("method", list(MULTISTEP_METHODS))
def test_observed_order_on_affine_ndm(method, shift_reference):
    model, z, ref = shift_reference
    slope, errs = observed_slope(model, method, STEPS[method], ref, z)
    order = MULTISTEP_METHODS[method].order
    assert abs(slope - order) < 0.3, f"{method}: observed {slope:.2f}, stated {order} ({errs})"


def test_observed_order_drops_to_two_when_dxF_varies_in_t():
    # The general-F order (2) shows first for the highest-order method. Self-convergence:
    # the reference is the same method at 2048 steps (its error there is ~1% of the
    # errors compared), a quarter of an RK4 reference's cost.
    model, z = ndm(scaling_affine()), z1(32)
    ref = nd.sample(model, z1=z.clone(), method="unipc_3m", steps=2048, grid_kind="logsnr").samples
    slope, errs = observed_slope(model, "unipc_3m", [128, 256], ref, z)
    assert MULTISTEP_METHODS["unipc_3m"].order_general == 2
    assert abs(slope - 2) < 0.3, f"unipc_3m: observed {slope:.2f} with a(t) varying ({errs})"


# --------------------------------------------------------------------------- NFE, no JVP
@pytest.mark.parametrize("method", list(MULTISTEP_METHODS))
def test_nfe_counts_predictor_calls_and_no_jvp(method):
    model = ndm(affine())

    def no_dF(*args, **kwargs):  # every ∂_t F (analytic, JVP or finite differences) comes here
        raise AssertionError("the multistep step asked for ∂_t F")

    model._F_dF = no_dF
    with pytest.raises(AssertionError, match="asked for"):  # the guard works: the PF-ODE needs it
        nd.sample(model, z1=z1(8), method="euler", steps=2)
    for steps in (3, 6):
        model.predictor.calls = 0
        res = nd.sample(model, z1=z1(8), method=method, steps=steps)
        assert res.nfe == model.predictor.calls == steps
        assert res.solution.n_accepted == steps
        model.predictor.calls = 0
        res = nd.sample(model, z1=z1(8), method=method, steps=steps, denoise=True)
        assert res.nfe == model.predictor.calls == steps + 1


# --------------------------------------------------------------------------- grids
@pytest.mark.parametrize("kind", ["uniform", "logsnr", "karras"])
def test_grid_end_points_and_monotone(kind):
    for sched in (SCHED, nd.CosineLogSNR()):
        g = make_time_grid(9, kind, sched, t_min=0.05, dtype=F64)
        assert g.shape == (10,) and g[0] == 1.0 and g[-1] == 0.05
        assert bool((g[1:] < g[:-1]).all())


def test_karras_grid_is_rho_spaced_in_sigma_over_alpha():
    g = make_time_grid(12, "karras", SCHED, t_min=0.1, dtype=F64)
    alpha, sigma = SCHED(g)
    s = (sigma / alpha) ** (1 / 7.0)
    d = s[1:] - s[:-1]
    assert torch.allclose(d, d.mean().expand_as(d), atol=1e-12, rtol=0)  # uniform in s^{1/ρ}
    g2 = make_time_grid(12, "logsnr", SCHED, t_min=0.1, dtype=F64)
    lam = SCHED.log_snr(g2)
    assert torch.allclose(lam[1:] - lam[:-1], (lam[1] - lam[0]).expand(12), atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40),
    t_min=st.floats(0.0, 0.9),
    kind=st.sampled_from(["uniform", "logsnr", "karras"]),
)
def test_grids_strictly_decreasing_for_any_size(n, t_min, kind):
    g = make_time_grid(n, kind, nd.CosineLogSNR(), t_min=t_min, dtype=F64)
    assert g.shape == (n + 1,) and float(g[0]) == 1.0 and float(g[-1]) == t_min
    assert bool((g[1:] < g[:-1]).all())


# --------------------------------------------------------------------------- bad input
def test_unknown_grid_kind_names_the_argument():
    with pytest.raises(ValueError, match="grid_kind"):
        nd.sample(ndm(), z1=z1(4), method="dpmpp_2m", steps=5, grid_kind="exponential")
    with pytest.raises(ValueError, match="kind"):
        make_time_grid(5, "cosine", SCHED)


def test_grid_not_decreasing_names_the_argument():
    with pytest.raises(ValueError, match="grid must be strictly decreasing"):
        nd.sample(ndm(), z1=z1(4), method="unipc_2m", grid=[1.0, 0.4, 0.6, 0.0])
    with pytest.raises(ValueError, match="grid must be strictly decreasing"):
        multistep_solve(ndm(), z1(4), torch.tensor([0.0, 0.5, 1.0], dtype=F64), method="dpmpp_2m")


@pytest.mark.parametrize("method", [m for m, s in MULTISTEP_METHODS.items() if s.history > 1])
def test_steps_below_history_length_names_the_argument(method):
    k = MULTISTEP_METHODS[method].history
    with pytest.raises(ValueError, match=f"steps must be at least {method}'s history length {k}"):
        nd.sample(ndm(), z1=z1(4), method=method, steps=k - 1)
    assert nd.sample(ndm(), z1=z1(4), method=method, steps=k).nfe == k


def test_unknown_method_and_eta():
    with pytest.raises(ValueError, match="unknown method 'dpmpp_9m'.*dpmpp_2m"):
        nd.sample(ndm(), z1=z1(4), method="dpmpp_9m", steps=5)
    with pytest.raises(ValueError, match="eta"):
        nd.sample(ndm(), z1=z1(4), method="dpmpp_2m", steps=5, eta=0.5)
    with pytest.raises(ValueError, match="method must be one of"):
        multistep_solve(ndm(), z1(4), torch.tensor([1.0, 0.5, 0.0], dtype=F64), method="ddim")


def test_float32_runs_and_matches_float64():
    model = ndm(affine())
    z = z1(16)
    a = nd.sample(model, z1=z, method="unipc_3m", steps=10, grid_kind="logsnr").samples
    b = nd.sample(model, z1=z.float(), method="unipc_3m", steps=10, grid_kind="logsnr").samples
    assert b.dtype == torch.float32
    assert (a - b.double()).abs().max() < 1e-4


def test_multistep_beats_euler_at_ten_nfe_on_affine_ndm(shift_reference):
    # The point of the family: at a small budget, far closer to the exact flow than
    # Euler on the PF-ODE or NDM-DDIM (same 10 predictor calls each).
    model, z, ref = shift_reference
    err = {
        m: (nd.sample(model, z1=z.clone(), method=m, steps=10, grid_kind="logsnr").samples - ref)
        .pow(2)
        .mean()
        .sqrt()
        .item()
        for m in ("euler", "ddim", "dpmpp_2m", "unipc_3m")
    }
    assert err["dpmpp_2m"] < 0.5 * min(err["euler"], err["ddim"]), err
    assert err["unipc_3m"] < err["dpmpp_2m"], err
    assert math.isfinite(sum(err.values()))


@pytest.mark.parametrize("method", ["ddim", "ancestral", *MULTISTEP_METHODS])
def test_predictor_turning_nan_mid_run_is_named(method):
    class NaNAfter(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.calls = net, 0

        def forward(self, z, t):
            self.calls += 1
            return self.net(z, t) * (float("nan") if self.calls >= 4 else 1.0)

    model = nd.NDM(
        NaNAfter(DiagMixturePredictor(*PARAMS, affine())), affine(), SCHED, data_shape=(2,)
    )
    # the 4th call is step 3, at t = 1 - 3/8
    match = r"x_hat \(the output of predictor \(NaNAfter\)\) is NaN/inf at t=0\.625, in step 3"
    with pytest.raises(nd.NonFiniteError, match=match) as info:
        nd.sample(model, z1=z1(8), method=method, steps=8, generator=0)
    assert info.value.step == 3 and info.value.t == 0.625 and info.value.partial.n_accepted == 3


def test_grid_sampler_nonfinite_state_reports_t_step_and_partial():
    from ndmsolve.solvers.base import check_grid_step

    grid = torch.linspace(1.0, 0.0, 9, dtype=F64)
    check_grid_step(torch.ones(3, 2, dtype=F64), grid, 2, nfe=3, method="ddim")  # finite: no-op
    z = torch.tensor([[1.0, float("inf")], [0.0, 0.0]], dtype=F64)
    with pytest.raises(nd.solvers.NonFiniteError, match=r"ddim .* at t=0\.625 \(step 2\)") as info:
        check_grid_step(z, grid, 2, nfe=3, method="ddim")
    err = info.value
    assert err.step == 2 and err.t == 0.625
    assert err.partial.nfe == 3 and err.partial.n_accepted == 3 and err.partial.y is z
