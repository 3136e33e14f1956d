"""The one method registry: every method name ``solve`` and ``sample`` accept, with its metadata.

A method is declared once, where it is implemented, with ``register``::

    @register("my_sampler", family="model", stepping="fixed", order=2, nfe_per_step=1)
    def my_sampler(model, z, grid, *, generator=None, save=False, method="", **options):
        ...  # -> Solution

``METHODS`` (also ``ndmsolve.solvers.METHODS``) maps each name to its ``Method``;
``get_method`` looks one up and raises the one "unknown method" error, which lists every
registered name. A module that registers methods is imported by ``solvers/__init__.py``
(the model-based samplers: by ``ndmsolve.sampling``, which ``import ndmsolve`` imports).

Calling conventions of ``run`` by ``(family, stepping)``; each returns a ``Solution``:

- ``("ode", "fixed")``: ``run(f, y0, grid, *, save_idx, cuda_graph)``, grid (N+1,).
- ``("ode", "adaptive")``: ``run(f, y0, t0, t1, *, rtol, atol, max_steps, h0, save_at, norm)``.
- ``("sde", "fixed")``: ``run(f, g, y0, grid, *, save_idx, generator, bm, noise)``.
- ``("sde", "adaptive")``: ``run(f, g, y0, t0, t1, *, rtol, atol, max_steps, h0, save_at,
  generator, bm, noise)``.
- ``("model", "fixed")``: NDM samplers that step with the model itself (``nd.sample`` only):
  ``run(model, z, grid, *, generator, save, method, **options)`` with ``grid`` strictly
  decreasing (N+1,) and ``options`` the names listed in ``Method.options``.

Backends (``"torchdiffeq:<m>"``, ``"torchsde:<m>"``) are registered with ``backend`` set and
no ``run``; ``solve`` hands them to ``backends.solve_backend``. They are registered on the
first look-up (``add_loader``) so that ``import ndmsolve`` does not import those libraries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

__all__ = [
    "Method",
    "METHODS",
    "register",
    "get_method",
    "method_names",
    "method_check",
    "add_loader",
    "FAMILIES",
    "STEPPINGS",
]

FAMILIES = ("ode", "sde", "model")
STEPPINGS = ("fixed", "adaptive")


@dataclass(frozen=True)
class Method:
    """Metadata of one registered method.

    Attributes:
        name: the name users pass as ``method=``.
        family: ``"ode"`` (a field f), ``"sde"`` (f and a diffusion g) or ``"model"``
            (an NDM sampler that steps with the model itself; ``nd.sample`` only).
        stepping: ``"fixed"`` (steps/grid) or ``"adaptive"`` (rtol/atol).
        order: convergence order (ODE: global order; SDE: strong order for the noise types
            in ``noise``, the best one); ``None`` where not declared (backends).
        nfe_per_step: field (or predictor) evaluations per accepted step, FSAL reuse
            counted; ``None`` where not declared.
        run: the implementation (calling convention by family and stepping, module
            docstring); ``None`` for backends.
        dense_output: saved times cost no extra steps (the solver interpolates).
        cuda_graph: the step loop can be captured as a CUDA graph.
        noise: SDE noise types solved correctly (``"diagonal"``, ``"additive"``).
        needs_jvp: needs the transform's time derivative dF/dt (a JVP) per evaluation.
        options: extra keyword arguments ``run`` accepts (e.g. ``("eta",)``).
        min_steps: the fewest steps a fixed-step method accepts (a multistep sampler's
            history length); fewer is a ValueError naming ``steps``.
        backend: ``"torchdiffeq"`` / ``"torchsde"`` for library backends, else ``None``.
        description: one line for listings.
    """

    name: str
    family: str
    stepping: str
    order: float | None
    nfe_per_step: int | None
    run: Callable | None = None
    dense_output: bool = False
    cuda_graph: bool = False
    noise: tuple[str, ...] = ()
    needs_jvp: bool = False
    options: tuple[str, ...] = ()
    min_steps: int = 1
    backend: str | None = None
    description: str = ""

    @property
    def adaptive(self) -> bool:
        return self.stepping == "adaptive"

    @property
    def kind(self) -> str:
        """``"ode_fixed"``, ..., ``"discrete"`` (family ``"model"``) or ``"backends"``: the
        groups of listings."""
        if self.backend is not None:
            return "backends"
        return "discrete" if self.family == "model" else f"{self.family}_{self.stepping}"


_TABLE: dict[str, Method] = {}
_LOADERS: list[Callable[[], None]] = []


def _load() -> None:
    while _LOADERS:
        _LOADERS.pop(0)()


def add_loader(fn: Callable[[], None]) -> None:
    """Run ``fn`` (which calls ``register``) on the first look-up of the registry."""
    _LOADERS.append(fn)


def register(
    name: str,
    *,
    family: str,
    stepping: str,
    order: float | None,
    nfe_per_step: int | None,
    run: Callable | None = None,
    **capabilities,
):
    """Declare a method. With ``run`` given, registers and returns the ``Method``; without,
    returns a decorator that registers the decorated function as ``run`` and returns it.

    ``capabilities``: the other ``Method`` fields (``dense_output``, ``cuda_graph``,
    ``noise``, ``needs_jvp``, ``options``, ``backend``, ``description``).
    Raises ``ValueError`` for a name registered twice or an unknown family/stepping.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"method name must be a non-empty string, got {name!r}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if stepping not in STEPPINGS:
        raise ValueError(f"stepping must be one of {STEPPINGS}, got {stepping!r}")
    if family == "model" and stepping != "fixed":
        raise ValueError("model-based samplers step on a grid: stepping must be 'fixed'")
    unknown = set(capabilities) - set(Method.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown method capabilities {sorted(unknown)}")
    for key in ("noise", "options"):
        if key in capabilities:
            capabilities[key] = tuple(capabilities[key])

    def add(fn: Callable | None) -> Method:
        if name in _TABLE:
            raise ValueError(f"method {name!r} is already registered")
        if fn is None and capabilities.get("backend") is None:
            raise ValueError(f"method {name!r} needs run= (only backends have none)")
        info = Method(
            name=name,
            family=family,
            stepping=stepping,
            order=order,
            nfe_per_step=nfe_per_step,
            run=fn,
            **capabilities,
        )
        _TABLE[name] = info
        return info

    if run is not None or capabilities.get("backend") is not None:
        return add(run)

    def decorator(fn: Callable) -> Callable:
        add(fn)
        return fn

    return decorator


class _Methods(Mapping):
    """Read-only view name -> ``Method`` of the registry (loads lazy entries first)."""

    def __getitem__(self, name: str) -> Method:
        _load()
        return _TABLE[name]

    def __iter__(self) -> Iterator[str]:
        _load()
        return iter(list(_TABLE))

    def __len__(self) -> int:
        _load()
        return len(_TABLE)

    def __repr__(self) -> str:
        return f"METHODS({', '.join(self)})"


#: every registered method, name -> ``Method``
METHODS: Mapping[str, Method] = _Methods()


def method_names(
    family: str | None = None, stepping: str | None = None, *, backends: bool = True
) -> tuple[str, ...]:
    """Registered names, in registration order, optionally of one family/stepping."""
    return tuple(
        m.name
        for m in METHODS.values()
        if (family is None or m.family == family)
        and (stepping is None or m.stepping == stepping)
        and (backends or m.backend is None)
    )


def listing(families: tuple[str, ...] | None = None) -> str:
    """Every registered name grouped by kind, for error messages."""
    groups: dict[str, list[str]] = {}
    for m in METHODS.values():
        if families is None or m.family in families:
            groups.setdefault(m.kind, []).append(m.name)
    order = ("ode_fixed", "ode_adaptive", "sde_fixed", "sde_adaptive", "discrete", "backends")
    return "; ".join(f"{kind}: {', '.join(groups[kind])}" for kind in order if kind in groups)


def method_check(families: tuple[str, ...] | None = None) -> Callable[[str], str | None]:
    """``check(name) -> None`` for a registered name (of ``families``), else the error
    text listing the valid ones (for option parsers: the command line reads the registry)."""

    def check(name) -> str | None:
        m = METHODS.get(name) if isinstance(name, str) else None
        if m is not None and (families is None or m.family in families):
            return None
        return f"must be a registered method ({listing(families)})"

    return check


def get_method(name, families: tuple[str, ...] | None = None, *, caller: str = "") -> Method:
    """The registered ``Method`` called ``name``; the one "unknown method" error otherwise.

    ``families``: the families the caller accepts (e.g. ``("ode",)`` for a likelihood);
    a registered method of another family is also an error, naming its family.
    """
    if not isinstance(name, str):
        raise TypeError(f"method must be a string, got {type(name).__name__}")
    _load()
    info = _TABLE.get(name)
    where = f" for {caller}" if caller else ""
    if info is None:
        raise ValueError(f"unknown method {name!r}{where}; valid methods: {listing(families)}")
    if families is not None and info.family not in families:
        hint = (
            " (model-based NDM samplers step with the model: use nd.sample)"
            if info.family == "model"
            else ""
        )
        raise ValueError(
            f"method {name!r} is a {info.family} method{hint}; "
            f"{caller or 'this call'} takes {'/'.join(families)} methods: "
            f"{listing(families)}"
        )
    return info
