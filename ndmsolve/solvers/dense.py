"""Dense output: the state anywhere inside an accepted RK step, from the step's own stages.

Every interpolant here has the form

    y(t + θh) = y + h Σ_i b_i(θ) k_i,     0 ≤ θ ≤ 1,

with ``k_i`` the step's stage derivatives and ``b_i`` polynomials in θ (``b_i(1) = b_i``,
so θ = 1 gives the step's own ``y1``). It costs no field evaluation. Per tableau:

- ``dopri5``: Shampine's / Hairer's continuous extension (``CONTD5`` of DOPRI5, Hairer,
  Nørsett & Wanner, Solving ODEs I, II.6), order 4;
- ``tsit5``: Tsitouras' (2011) free interpolant, order 4;
- any other FSAL tableau (``bosh3``): cubic Hermite through ``y, f(t, y), y1, f(t+h, y1)``
  (the last stage of an FSAL step is ``f(t + h, y1)``), order 3.

Why these orders suffice for saved states: docs/theory/solvers.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from torch import Tensor

from .rk import combine
from .tableaus import Tableau

__all__ = ["dense_polynomials", "interpolant_order", "interpolate"]


def _poly_mul(p: Sequence[float], q: Sequence[float]) -> list[float]:
    out = [0.0] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] += a * b
    return out


def _dopri5() -> tuple[tuple[float, ...], ...]:
    # y(θ) = y0 + θ(Δ + (1−θ)(r3 + θ(r4 + (1−θ) r5))) with Δ = h Σ b_i k_i, r3 = h k1 − Δ,
    # r4 = Δ − h k7 − r3, r5 = h Σ d_i k_i. Per stage, divided by h: r3 = e1 − b,
    # r4 = 2b − e1 − e7, so b(θ) = θ b + (θ − θ²) r3 + (θ² − θ³) r4 + (θ² − 2θ³ + θ⁴) d.
    b = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
    d = (
        -12715105075 / 11282082432,
        0.0,
        87487479700 / 32700410799,
        -10690763975 / 1880347072,
        701980252875 / 199316789632,
        -1453857185 / 822651844,
        69997945 / 29380423,
    )
    polys = []
    for i in range(7):
        e1, e7 = float(i == 0), float(i == 6)
        r3, r4 = e1 - b[i], 2 * b[i] - e1 - e7
        polys.append((0.0, b[i] + r3, -r3 + r4 + d[i], -r4 - 2 * d[i], d[i]))
    return tuple(polys)


def _tsit5() -> tuple[tuple[float, ...], ...]:
    # Tsitouras (2011), the b_i(θ) in factored form (as in OrdinaryDiffEq / diffrax).
    t2 = (0.0, 0.0, 1.0)  # θ²
    factors = (
        (
            -1.0530884977290216,
            [
                (0.0, 1.0),
                (-1.3299890189751412, 1.0),
                (0.7139816917074209, -1.4364028541716351, 1.0),
            ],
        ),
        (0.1017, [t2, (1.2949852507374631, -2.1966568338249754, 1.0)]),
        (2.490627285651252793, [t2, (1.57803468208092486, -2.38535645472061657, 1.0)]),
        (-16.54810288924490272, [t2, (-1.21712927295533244, 1.0), (-0.61620406037800089, 1.0)]),
        (47.37952196281928122, [t2, (-1.203071208372362603, 1.0), (-0.658047292653547382, 1.0)]),
        (-34.87065786149660974, [t2, (-1.2, 1.0), (-0.666666666666666667, 1.0)]),
        (2.5, [t2, (-1.0, 1.0), (-0.6, 1.0)]),
    )
    polys = []
    for scale, fs in factors:
        p = [scale]
        for f in fs:
            p = _poly_mul(p, f)
        polys.append(tuple(p))
    return tuple(polys)


def _hermite(tab: Tableau) -> tuple[tuple[float, ...], ...]:
    # y(θ) = h00 y0 + h10 h f0 + h01 y1 + h11 h f1 with y1 = y0 + h Σ b_i k_i, f0 = k_0,
    # f1 = k_{s-1} (FSAL); h10 = θ − 2θ² + θ³, h01 = 3θ² − 2θ³, h11 = −θ² + θ³.
    s = tab.stages
    polys = []
    for i in range(s):
        p = [0.0, 0.0, 3 * tab.b[i], -2 * tab.b[i]]
        if i == 0:
            p = [a + c for a, c in zip(p, (0.0, 1.0, -2.0, 1.0), strict=True)]
        if i == s - 1:
            p = [a + c for a, c in zip(p, (0.0, 0.0, -1.0, 1.0), strict=True)]
        polys.append(tuple(p))
    return tuple(polys)


_SPECIAL = {"dopri5": (_dopri5, 4), "tsit5": (_tsit5, 4)}


@cache
def dense_polynomials(tab: Tableau) -> tuple[tuple[float, ...], ...] | None:
    """Per stage, the coefficients of b_i(θ) in powers θ⁰, θ¹, ...; ``None`` when the
    tableau has no free interpolant (not FSAL and none known)."""
    if tab.name in _SPECIAL:
        return _SPECIAL[tab.name][0]()
    return _hermite(tab) if tab.fsal else None


def interpolant_order(tab: Tableau) -> int | None:
    """The order of ``interpolate`` for this tableau (``None`` without an interpolant)."""
    if tab.name in _SPECIAL:
        return _SPECIAL[tab.name][1]
    return 3 if tab.fsal else None


def interpolate(
    tab: Tableau, y: Tensor, ks: Sequence[Tensor], h: float, thetas: Sequence[float]
) -> list[Tensor]:
    """States at ``t + θ h`` for each θ in ``thetas`` (Python floats in [0, 1]) inside the
    step of size ``h`` from ``y`` with stages ``ks``; each of ``y``'s shape. No host sync."""
    polys = dense_polynomials(tab)
    if polys is None:
        raise ValueError(f"tableau {tab.name!r} has no dense output")
    out = []
    for th in thetas:
        terms = []
        for j, p in enumerate(polys):
            w, pw = 0.0, 1.0
            for c in p:
                w += c * pw
                pw *= th
            if w != 0.0:
                terms.append((j, w))
        out.append(combine(y, ks, terms, h) if terms else y.clone())
    return out
