"""Backends: solve with torchdiffeq (``"torchdiffeq:<method>"``) or torchsde (``"torchsde:<method>"``).

They return our ``Solution`` with honest counts, so they can be compared with our own
solvers on equal terms:

- ``nfe`` counts calls of ``f`` (our ``CountedField``), whatever the library does
  internally (torchdiffeq's initial-step probe and rejected steps included);
  ``stats["nfe_g"]`` counts calls of ``g`` for torchsde.
- torchdiffeq's adaptive solvers expose no step statistics: ``n_accepted`` and
  ``n_rejected`` stay 0 and ``stats["steps_known"]`` is False. Fixed-step solves report
  their grid's step count.

torchdiffeq takes any state shape and either time direction itself. torchsde needs
(batch, d) states and increasing time, so here the state is flattened to ``(B, −1)``
(``(1, numel)`` for 0-/1-dim states) and, for ``t1 < t0``, the SDE is integrated in
``s = −t``: ``dy = −f(−s, y) ds + g(−s, y) dW̃(s)`` with ``W̃(s) = W(−s)``. The noise comes
from our ``BrownianPath`` (``bm``, or one seeded from ``generator``), so seeded runs
reproduce and a path can be shared with our own solvers. torchsde steps exactly on our
grid (steps/grid plus ``save_at`` points) through its per-step solver interface, so
there is no interpolation at output times and no sliver step from float round-off.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import FAULTS, CountedField, Field, NonFiniteError, Solution, SolverError, locate
from .brownian import BrownianPath
from .grids import make_grid, merge_save_times
from .loops import first_nonfinite, run_fixed
from .registry import add_loader, register
from .sde import check_inputs, first_g, require_additive

__all__ = ["solve_backend", "torchdiffeq_methods", "TORCHSDE_ITO", "TORCHSDE_STRATONOVICH"]

# torchsde methods we drive, by the SDE type they solve. Stratonovich schemes solve our
# Itô SDE only for additive noise (then the two coincide), which is checked.
TORCHSDE_ITO = ("euler", "milstein", "srk")
TORCHSDE_STRATONOVICH = ("heun", "midpoint", "euler_heun", "reversible_heun")


def torchdiffeq_methods() -> dict[str, bool]:
    """torchdiffeq's method names -> whether the method is fixed-step."""
    from torchdiffeq._impl.odeint import SOLVERS
    from torchdiffeq._impl.solvers import FixedGridODESolver

    return {
        m: issubclass(cls, FixedGridODESolver) for m, cls in SOLVERS.items() if m != "scipy_solver"
    }


def _times(t0: float, t1: float, save_at: Tensor | None) -> list[float]:
    """[t0, *save_at, t1] without duplicates (save_at may contain t0 or t1)."""
    inner = [] if save_at is None else [float(s) for s in save_at.double().tolist()]
    return [t0] + [s for s in inner if s not in (t0, t1)] + [t1]


def _saved(times: list[float], ys: Tensor, save_at: Tensor | None, like: Tensor):
    """``(ts, ys)`` at the ``save_at`` times from states at ``times`` (or ``(None, None)``)."""
    if save_at is None:
        return None, None
    want = [float(s) for s in save_at.double().tolist()]
    idx = [times.index(s) for s in want]
    return torch.tensor(want, dtype=like.dtype, device=like.device), ys[idx]


def solve_backend(
    spec: str,
    f: Field,
    y0: Tensor,
    t0: float,
    t1: float,
    *,
    g: Field | None = None,
    steps: int | None = None,
    grid: Tensor | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    save_at: Tensor | None = None,
    generator: torch.Generator | None = None,
    bm: BrownianPath | None = None,
    noise: str = "diagonal",
    norm=None,
) -> Solution:
    """Solve with a library backend named ``"torchdiffeq:<method>"`` or ``"torchsde:<method>"``.

    Args:
        spec: backend and method, e.g. ``"torchdiffeq:dopri5"``, ``"torchsde:euler"``.
        f: drift/field ``f(t, y)``; y0: state of any shape; t0, t1: floats, either direction.
        g: diagonal diffusion (torchsde only; must be None for torchdiffeq).
        steps, grid: fixed-step methods (exactly one); torchsde methods are all fixed-step.
        rtol, atol: torchdiffeq adaptive methods.
        save_at: (S,) times to return states at (in the integration direction).
        generator, bm, noise: torchsde: the noise source and type (see ``ndmsolve.solvers.sde``).

    Returns:
        ``Solution`` with ``y`` at ``t1``, ``nfe``, and ``ts``/``ys`` if ``save_at``.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(
            f"backend spec must look like 'torchdiffeq:<method>' or 'torchsde:<method>', got {spec!r}"
        )
    backend, method = spec.split(":", 1)
    t0, t1 = float(t0), float(t1)
    if backend == "torchdiffeq":
        return _torchdiffeq(
            method,
            f,
            y0,
            t0,
            t1,
            g=g,
            bm=bm,
            steps=steps,
            grid=grid,
            rtol=rtol,
            atol=atol,
            save_at=save_at,
            norm=norm,
        )
    if backend == "torchsde":
        if norm is not None:
            raise ValueError(f"norm applies to adaptive methods; {spec} is fixed-step")
        return _torchsde(
            method,
            f,
            g,
            y0,
            t0,
            t1,
            steps=steps,
            grid=grid,
            save_at=save_at,
            generator=generator,
            bm=bm,
            noise=noise,
        )
    raise ValueError(f"unknown backend {backend!r} in {spec!r}; valid: 'torchdiffeq', 'torchsde'")


# --------------------------------------------------------------------------- torchdiffeq
def _torchdiffeq(
    method, f, y0, t0, t1, *, g, bm, steps, grid, rtol, atol, save_at, norm=None
) -> Solution:
    import torchdiffeq

    methods = torchdiffeq_methods()
    if method not in methods:
        raise ValueError(f"unknown torchdiffeq method {method!r}; valid: {', '.join(methods)}")
    if g is not None or bm is not None:
        raise ValueError(f"g/bm are given but torchdiffeq:{method} solves ODEs (no noise)")
    fc = CountedField(f)
    times = _times(t0, t1, save_at)
    fixed = methods[method]
    options = {}
    n_steps = 0
    if fixed:
        tgrid = make_grid(t0, t1, steps, grid, y0.dtype, y0.device)
        tgrid, _ = merge_save_times(
            tgrid, None if save_at is None else save_at.detach().double().cpu()
        )
        n_steps = tgrid.numel() - 1
        # Our grid, save points included, so outputs are grid states (no interpolation).
        options["grid_constructor"] = lambda func, y, t: tgrid
    elif steps is not None or grid is not None:
        raise ValueError(
            f"steps/grid apply to fixed-step methods; torchdiffeq:{method} is adaptive "
            "(control it with rtol/atol)"
        )
    elif norm is not None:
        options["norm"] = norm  # torchdiffeq applies it to err / (atol + rtol·max(|y0|, |y1|))
    t = torch.tensor(times, dtype=y0.dtype, device=y0.device)
    try:
        ys = torchdiffeq.odeint(fc, y0, t, rtol=rtol, atol=atol, method=method, options=options)
    except FAULTS as e:  # the field reported NaN/inf itself
        raise _torchdiffeq_fault(e, method, fc.nfe, tgrid if fixed else None, y0, t0) from None
    except AssertionError as e:  # torchdiffeq reports step underflow / step limits by assert
        raise SolverError(
            f"torchdiffeq:{method} gave up ({e}); torchdiffeq does not report where, "
            f"so t and step refer to the start",
            t=t0,
            step=0,
            partial=Solution(y=y0, nfe=fc.nfe, method=f"torchdiffeq:{method}", t=t0),
        ) from e
    if not bool(torch.isfinite(ys[-1]).all()):
        raise NonFiniteError(
            f"torchdiffeq:{method}: the solution is NaN/inf at t1={t1:.6g}",
            t=t1,
            step=n_steps,
            partial=Solution(y=y0, nfe=fc.nfe, method=f"torchdiffeq:{method}", t=t0),
        )
    sol = Solution(
        y=ys[-1],
        nfe=fc.nfe,
        n_accepted=n_steps,
        method=f"torchdiffeq:{method}",
        t=t1,
        stats={"backend": "torchdiffeq", "steps_known": fixed},
    )
    sol.ts, sol.ys = _saved(times, ys, save_at, y0)
    return sol


# --------------------------------------------------------------------------- torchsde
def _flat_shape(shape: torch.Size) -> tuple[int, int]:
    numel = math.prod(shape)
    return (shape[0], numel // shape[0]) if len(shape) >= 2 else (1, numel)


class _SDE:
    """Our ``(f, g)`` as torchsde wants it: (B, d) states, time ``s = sign · t`` increasing.

    ``noise_type`` is the user's (``"diagonal"`` or ``"additive"``), so torchsde picks the
    scheme made for it (``srk``: SRA1, 2 drift calls a step, for additive noise; SRID2,
    4, for diagonal). Our g is diagonal in both cases: ``g_prod`` is the elementwise
    product, where torchsde's additive type would expect a (B, d, m) matrix.
    """

    def __init__(self, f, g, shape, sign: float, sde_type: str, noise_type: str = "diagonal"):
        self.ff, self.gg, self.shape, self.sign = f, g, shape, sign
        self.sde_type, self.noise_type = sde_type, noise_type
        self.flat = _flat_shape(shape)
        self._last = None  # (s, y, y._version, f(s, y)): the last drift evaluation

    def g_prod(self, s, y, v):
        return self.g(s, y) * v

    def _t(self, s, y):
        return torch.as_tensor(s, dtype=y.dtype, device=y.device) * self.sign

    def f(self, s, y):
        # torchsde's SRA1 step evaluates f(t0, y0) twice; the repeat is served from the last
        # call (same tensor, unmodified, same time), so NFE counts distinct evaluations.
        last = self._last
        if last is not None and y is last[1] and y._version == last[2] and float(s) == last[0]:
            return last[3]
        out = (self.ff(self._t(s, y), y.reshape(self.shape)) * self.sign).reshape(self.flat)
        self._last = (float(s), y, y._version, out)
        return out

    def g(self, s, y):
        out = self.gg(self._t(s, y), y.reshape(self.shape))
        return out.expand(self.shape).reshape(self.flat)


def _bm_adapter(path: BrownianPath, sign: float, flat):
    """Our ``BrownianPath`` answering torchsde's queries in its time ``s = sign · t``."""
    from torchsde._brownian import BaseBrownian

    class _PathBM(BaseBrownian):
        __slots__ = ()
        levy_area_approximation = "space-time" if path.levy_area else "none"
        dtype, device, shape = path.dtype, path.device, torch.Size(flat)

        def __call__(self, sa, tb=None, return_U=False, return_A=False):
            if tb is None or return_A:
                raise ValueError(
                    "torchsde asked for a point value or the full Lévy area; "
                    "the ndmsolve path provides increments and space-time area only"
                )
            ta, tb = sign * float(sa), sign * float(tb)
            if not return_U:
                # Reversed: W̃(sb) − W̃(sa) = W(tb) − W(ta) with t = −s.
                return path.increment(ta, tb).reshape(flat)
            dw, area = path.increment_and_area(ta, tb)
            # ∫_sa^sb (W̃(u) − W̃(sa)) du = sign · ∫_ta^tb (W(v) − W(ta)) dv (oriented).
            return dw.reshape(flat), (sign * area).reshape(flat)

        def __repr__(self):
            return f"torchsde view of {path!r}"

    return _PathBM()


def _torchsde_setup(name, method, f, g, y0, t0, t1, generator, bm, noise):
    """The counted ``(f, g)``, the SDE type (Stratonovich schemes and additive noise
    checked to be additive) and the Brownian path: ``(fc, gc, sde_type, path)``."""
    fc, gc = CountedField(f), CountedField(g)
    t0_ = torch.tensor(t0, dtype=y0.dtype, device=y0.device)
    g0 = first_g(name, gc, t0_, y0)
    if method in TORCHSDE_STRATONOVICH or noise == "additive":
        require_additive(name, gc, t0_, y0, g0, noise)  # also checks a claimed additive g
    sde_type = "stratonovich" if method in TORCHSDE_STRATONOVICH else "ito"  # = Itô if additive
    path = bm
    if path is None:
        levy = method == "srk"
        path = BrownianPath(t0, t1, y0.shape, y0.dtype, y0.device, generator, levy_area=levy)
    if method == "srk" and not path.levy_area:
        raise ValueError(
            "torchsde:srk needs the space-time Lévy area: pass bm=BrownianPath(..., levy_area=True)"
        )
    return fc, gc, sde_type, path


def _torchsde(method, f, g, y0, t0, t1, *, steps, grid, save_at, generator, bm, noise) -> Solution:
    from torchsde._core import base_sde
    from torchsde._core import methods as tsde_methods

    name = f"torchsde:{method}"
    if method not in TORCHSDE_ITO + TORCHSDE_STRATONOVICH:
        raise ValueError(
            f"unknown torchsde method {method!r}; valid: "
            f"{', '.join(TORCHSDE_ITO + TORCHSDE_STRATONOVICH)}"
        )
    check_inputs(name, f, g, y0, t0, t1, generator, bm, noise)
    tgrid = make_grid(t0, t1, steps, grid, y0.dtype, y0.device)
    tgrid, save_idx = merge_save_times(
        tgrid, None if save_at is None else save_at.detach().double().cpu()
    )
    fc, gc, sde_type, path = _torchsde_setup(name, method, f, g, y0, t0, t1, generator, bm, noise)
    sign = 1.0 if t1 > t0 else -1.0
    sde = _SDE(fc, gc, y0.shape, sign, sde_type, noise)
    hs = (tgrid[1:].double() - tgrid[:-1].double()).abs().tolist()
    fsde = base_sde.ForwardSDE(sde)
    fsde.prod = fsde.prod_diagonal  # g stays (B, d) whatever the noise type (see _SDE)
    solver = tsde_methods.select(method=method, sde_type=sde_type)(
        sde=fsde,
        bm=_bm_adapter(path, sign, sde.flat),
        dt=max(hs),
        adaptive=False,
        rtol=0.0,
        atol=0.0,
        dt_min=0.0,
        options={},
    )
    keep = set(save_idx or ())
    y, states = _torchsde_steps(name, solver, y0, (t0, tgrid), sign, keep, fc, sde.flat)
    sol = Solution(
        y=y.reshape(y0.shape),
        nfe=fc.nfe,
        n_accepted=len(hs),
        method=name,
        t=t1,
        stats={"backend": "torchsde", "nfe_g": gc.nfe},
    )
    if save_idx:
        by_idx = {0: states[0]}
        by_idx.update(zip(sorted(j for j in keep if j > 0), states[1:]))
        sol.ts = tgrid[save_idx]
        sol.ys = torch.stack([by_idx[j].reshape(y0.shape) for j in save_idx])
    return sol


def _torchsde_steps(name, solver, y0, times, sign, keep, fc, flat):
    """torchsde's per-step solver over ``times = (t0, tgrid)`` (in ``s = sign · t``) in
    ``loops.run_fixed``: the final (flat) state and the states at ``keep``'s grid indices
    (``y0`` first); NaN/inf located."""
    t0, tgrid = times
    s_grid = (tgrid * sign).unbind()  # increasing
    n = len(s_grid) - 1
    y = y0.reshape(flat)
    extra = [solver.init_extra_solver_state(s_grid[0], y)]

    def step(i, y):
        y, extra[0] = solver.step(s_grid[i], s_grid[i + 1], y, extra[0])
        return y

    def on_fault(e, i, y):  # the drift reported NaN/inf itself: name the step
        ta, tb = float(tgrid[i]), float(tgrid[i + 1])
        partial = Solution(y=y.reshape(y0.shape), nfe=fc.nfe, n_accepted=i, method=name, t=ta)
        return locate(e, name, i, ta, tb, partial=partial)

    y, saved, sums = run_fixed(step, y, n, [i + 1 in keep for i in range(n)], on_fault)
    bad = first_nonfinite(torch.stack(sums), y)
    if bad is not None:
        ta, tb = float(tgrid[bad]), float(tgrid[bad + 1])
        raise NonFiniteError(
            f"{name}: the state became NaN/inf in step {bad} (t={ta:.6g} -> {tb:.6g})",
            t=ta,
            step=bad,
            partial=Solution(y=y0, nfe=fc.nfe, method=name, t=t0),
        )
    return y, [y0.reshape(flat)] + saved


def _torchdiffeq_fault(err, method: str, nfe: int, tgrid, y0: Tensor, t0: float):
    """A field's NaN/inf report inside torchdiffeq, located: on our fixed grid ``tgrid``
    by the step containing the evaluation's time; torchdiffeq's adaptive methods do not
    expose their steps, so there ``step`` counts field evaluations (1 = the first)."""
    name = f"torchdiffeq:{method}"
    partial = Solution(y=y0, nfe=nfe, method=name, t=t0)
    if tgrid is None or not isinstance(err, NonFiniteError):
        return locate(err, name, nfe, t0, None, partial=partial, step_word="field evaluation")
    times = tgrid.double().tolist()
    sign = 1.0 if times[-1] > times[0] else -1.0
    # the last grid point at or before the evaluation's time in the direction of travel
    i = max(0, sum(1 for x in times[:-1] if sign * (x - err.t) <= 0) - 1)
    return locate(err, name, i, times[i], times[i + 1], partial=partial)


def _register_backends() -> None:
    from torchdiffeq._impl.odeint import SOLVERS

    for m, fixed in torchdiffeq_methods().items():
        register(
            f"torchdiffeq:{m}",
            family="ode",
            stepping="fixed" if fixed else "adaptive",
            order=getattr(SOLVERS[m], "order", None),
            nfe_per_step=None,
            backend="torchdiffeq",
            needs_jvp=True,
            description=f"torchdiffeq's {m}",
        )
    for m in TORCHSDE_ITO + TORCHSDE_STRATONOVICH:
        register(
            f"torchsde:{m}",
            family="sde",
            stepping="fixed",
            order=None,
            nfe_per_step=None,
            backend="torchsde",
            needs_jvp=True,
            noise=("diagonal", "additive") if m in TORCHSDE_ITO else ("additive",),
            description=f"torchsde's {m} ({'Ito' if m in TORCHSDE_ITO else 'Stratonovich'})",
        )


add_loader(_register_backends)
