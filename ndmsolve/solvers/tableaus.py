"""Explicit Runge–Kutta methods as data (Butcher tableaus).

One mechanism (``rk.rk_step``) runs every tableau here; a method is only its
coefficients. A tableau with ``s`` stages is

    k_i = f(t + c_i h, y + h Σ_{j<i} a_ij k_j),   y1 = y + h Σ_i b_i k_i,

and, for an embedded pair, the local error estimate is ``h Σ_i b_err_i k_i`` with
``b_err = b - b̂`` (the difference to the lower-order weights).

FSAL ("first same as last"): the last stage is evaluated at ``(t + h, y1)``, so its
derivative is the next step's first stage and an accepted step costs ``s - 1`` field
evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

__all__ = [
    "Tableau",
    "euler",
    "midpoint",
    "heun",
    "rk4",
    "bosh3",
    "dopri5",
    "tsit5",
    "TABLEAUS",
]


@dataclass(frozen=True)
class Tableau:
    """Coefficients of an explicit RK method with ``s`` stages.

    Attributes:
        name: method name.
        c: nodes, length ``s`` (``c[0] == 0``).
        a: strictly lower-triangular matrix as rows; ``a[i]`` has ``i`` entries.
        b: solution weights, length ``s``.
        order: order of the solution ``b``.
        b_err: ``b - b̂`` for an embedded pair (length ``s``), else ``None``.
        error_order: order of the error estimate plus one, i.e. the exponent ``k``
            in ``h_new = h * err**(-1/k)`` (``min(order, embedded order) + 1``).
        fsal: the last stage is ``f(t + h, y1)`` (its row of ``a`` equals ``b``).
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    b_err: tuple[float, ...] | None = None
    error_order: int | None = None
    fsal: bool = False

    def __post_init__(self):
        s = len(self.c)
        if len(self.a) != s or len(self.b) != s:
            raise ValueError(f"tableau {self.name}: c, a and b must all have {s} stages")
        for i, row in enumerate(self.a):
            if len(row) != i:
                raise ValueError(f"tableau {self.name}: row {i} of a must have {i} entries")
            # Consistency: each node is its row sum (the stage sees t + c_i h).
            if abs(sum(row) - self.c[i]) > 1e-12:
                raise ValueError(f"tableau {self.name}: row {i} of a does not sum to c[{i}]")
        if abs(sum(self.b) - 1.0) > 1e-12:
            raise ValueError(f"tableau {self.name}: b must sum to 1")
        if self.b_err is not None:
            if len(self.b_err) != s or abs(sum(self.b_err)) > 1e-12 or self.error_order is None:
                raise ValueError(
                    f"tableau {self.name}: b_err needs {s} entries summing to 0 and an error_order"
                )
        if self.fsal and (
            self.c[-1] != 1.0
            or self.b[-1] != 0.0
            or any(abs(x - y) > 1e-15 for x, y in zip(self.a[-1], self.b[:-1]))
        ):
            raise ValueError(f"tableau {self.name}: fsal needs a last row equal to b and c[-1] = 1")

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_err is not None

    @cached_property
    def sparse(self):
        """Nonzero coefficients only, for the step loop: ``(rows, b, b_err)`` with
        ``rows[i] = ((j, a_ij), ...)``, ``b = ((j, b_j), ...)``, ``b_err`` likewise or None.
        Cached on the instance so a step never re-derives (or hashes) the tableau."""
        rows = tuple(tuple((j, x) for j, x in enumerate(row) if x != 0.0) for row in self.a)
        b = tuple((j, w) for j, w in enumerate(self.b) if w != 0.0)
        e = (
            None
            if self.b_err is None
            else tuple((j, w) for j, w in enumerate(self.b_err) if w != 0.0)
        )
        return rows, b, e


# ----------------------------------------------------------------------------- fixed step

euler = Tableau("euler", c=(0.0,), a=((),), b=(1.0,), order=1)

midpoint = Tableau("midpoint", c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2)

# Heun's (explicit trapezoidal) method.
heun = Tableau("heun", c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2)

rk4 = Tableau(
    "rk4",
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    order=4,
)

# ----------------------------------------------------------------------------- adaptive

# Bogacki–Shampine 3(2), FSAL.
_bs_b = (2 / 9, 1 / 3, 4 / 9, 0.0)
_bs_bhat = (7 / 24, 1 / 4, 1 / 3, 1 / 8)
bosh3 = Tableau(
    "bosh3",
    c=(0.0, 0.5, 0.75, 1.0),
    a=((), (0.5,), (0.0, 0.75), _bs_b[:3]),
    b=_bs_b,
    order=3,
    b_err=tuple(x - y for x, y in zip(_bs_b, _bs_bhat)),
    error_order=3,
    fsal=True,
)

# Dormand–Prince 5(4), FSAL (Dormand & Prince 1980; Shampine's dopri5).
_dp_b = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_dp_bhat = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
dopri5 = Tableau(
    "dopri5",
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _dp_b[:6],
    ),
    b=_dp_b,
    order=5,
    b_err=tuple(x - y for x, y in zip(_dp_b, _dp_bhat)),
    error_order=5,
    fsal=True,
)

# Tsitouras 5(4), FSAL (Tsitouras 2011, "Runge–Kutta pairs of order 5(4) satisfying
# only the first column simplifying assumption"); the digits are the paper's.
_ts_b = (
    0.09646076681806522951816731316512876333711995238157997181903319145764851595234062815396,
    0.01,
    0.4798896504144995747752495322905965199130404621990332488332634944254542060153074523509,
    1.379008574103741893192274821856872770756462643091360525934940067397245698027561293331,
    -3.290069515436080679901047585711363850115683290894936158531296799594813811049925401677,
    2.324710524099773982415355918398765796109060233222962411944060046314465391054716027841,
    0.0,
)
_ts_bhat = (
    0.09468075576583945807478876255758922856117527357724631226139574065785592789071067303271,
    0.009183565540343253096776363936645313759813746240984095238905939532922955247253608687270,
    0.4877705284247615707855642599631228241516691959761363774365216240304071651579571959813,
    1.234297566930478985655109673884237654035539930748192848315425833500484878378061439761,
    -2.707712349983525454881109975059321670689605166938197378763992255714444407154902012702,
    1.866628418170587035753719399566211498666255505244122593996591602841258328965767580089,
    1 / 66,
)
tsit5 = Tableau(
    "tsit5",
    c=(
        0.0,
        0.161,
        0.327,
        0.9,
        0.9800255409045096857298102862870245954942137979563024768854764293221195950761080302604,
        1.0,
        1.0,
    ),
    a=(
        (),
        (0.161,),
        (
            -0.008480655492356988544426874250230774675121177393430391537369234245294192976164141156943,
            0.3354806554923569885444268742502307746751211773934303915373692342452941929761641411569,
        ),
        (
            2.897153057105493432130432594192938764924887287701866490314866693455023795137503079289,
            -6.359448489975074843148159912383825625952700647415626703305928850207288721235210244366,
            4.362295432869581411017727318190886861027813359713760212991062156752264926097707165077,
        ),
        (
            5.325864828439256604428877920840511317836476253097040101202360397727981648835607691791,
            -11.74888356406282787774717033978577296188744178259862899288666928009020615663593781589,
            7.495539342889836208304604784564358155658679161518186721010132816213648793440552049753,
            -0.09249506636175524925650207933207191611349983406029535244034750452930469056411389539635,
        ),
        (
            5.861455442946420028659251486982647890394337666164814434818157239052507339770711679748,
            -12.92096931784710929170611868178335939541780751955743459166312250439928519268343184452,
            8.159367898576158643180400794539253485181918321135053305748355423955009222648673734986,
            -0.07158497328140099722453054252582973869127213147363544882721139659546372402303777878835,
            -0.02826905039406838290900305721271224146717633626879770007617876201276764571291579142206,
        ),
        _ts_b[:6],
    ),
    b=_ts_b,
    order=5,
    b_err=tuple(x - y for x, y in zip(_ts_b, _ts_bhat)),
    error_order=5,
    fsal=True,
)

#: every tableau by name; the methods themselves are registered in ``fixed.py`` (no error
#: estimate) and ``adaptive.py`` (embedded pairs)
TABLEAUS = {t.name: t for t in (euler, midpoint, heun, rk4, bosh3, dopri5, tsit5)}
