"""Sampler recipes: a method with its ``nd.sample`` options, as one name the sweep can run.

A recipe is written ``METHOD`` or ``METHOD:key=value,key=value``, e.g.

    unipc_2m:grid_kind=logsnr,sigma_min=0.12,denoise=true

or, in a TOML file (``load_recipes``), as a list of tables:

    [[recipe]]
    method = "unipc_2m"
    grid_kind = "logsnr"
    sigma_min = 0.12
    denoise = true
    name = "unipc_2m@0.12"     # optional label (default: the spec string)
    steps = [4, 9]             # optional: its own step counts (or tols = [...])

Keys: ``grid_kind`` ("uniform", "logsnr", "karras"), ``sigma_min`` (final σ/α) or
``t_min``, ``denoise`` (end with x̂, +1 NFE), ``eta`` (samplers that take it), and the
method's own options (``nd.solvers.METHODS[m].options``, e.g. the multistep samplers'
``lower_order_final`` and ``extrapolate``). Values: ``true``/``false``, numbers, or words.
Anything else is an error naming the key and what the method takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..solvers.registry import get_method

__all__ = ["Recipe", "parse_recipe", "as_recipe", "load_recipes", "SAMPLE_OPTIONS"]

#: ``nd.sample`` keywords a recipe may set, besides the method's own options
SAMPLE_OPTIONS = ("grid_kind", "sigma_min", "t_min", "denoise", "eta")
#: method-name prefixes whose colon belongs to the name (``torchdiffeq:dopri5:...``)
BACKENDS = ("torchdiffeq", "torchsde")


@dataclass(frozen=True, eq=False)  # eq=False: hashable by identity (a dict field)
class Recipe:
    """A method and the ``nd.sample`` options it runs with; ``name`` labels its rows."""

    method: str
    options: dict = field(default_factory=dict)
    name: str = ""

    def __post_init__(self):
        _check_options(self.method, self.options)
        if not self.name:
            object.__setattr__(self, "name", spec_of(self.method, self.options))

    @property
    def ends_early(self) -> bool:
        """Whether it stops before t = 0 (``sigma_min`` or ``t_min`` > 0)."""
        return self.options.get("sigma_min") is not None or bool(self.options.get("t_min"))


def spec_of(method: str, options: dict) -> str:
    """The spec string ``METHOD:key=value,...`` (keys in the given order)."""
    if not options:
        return method

    def fmt(v):
        return str(v).lower() if isinstance(v, bool) else str(v)

    return method + ":" + ",".join(f"{k}={fmt(v)}" for k, v in options.items())


def _value(text: str):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_recipe(spec: str) -> Recipe:
    """A ``Recipe`` from ``METHOD`` or ``METHOD:key=value,...`` (module docstring)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a recipe must be METHOD or METHOD:key=value,..., got {spec!r}")
    method, sep, rest = spec.strip().partition(":")
    if method in BACKENDS and sep:  # "torchdiffeq:<m>[:options]"
        name, sep, rest = rest.partition(":")
        method = f"{method}:{name}"
    options = {}
    for item in rest.split(",") if sep else []:
        key, eq, val = item.partition("=")
        if not eq or not key.strip() or not val.strip():
            raise ValueError(f"recipe {spec!r}: expected key=value, got {item!r}")
        if key.strip() in options:
            raise ValueError(f"recipe {spec!r}: {key.strip()!r} given twice")
        options[key.strip()] = _value(val)
    return Recipe(method.strip(), options)


def as_recipe(item) -> Recipe:
    """A ``Recipe`` from a Recipe, a spec string or a dict with ``method`` (and options)."""
    if isinstance(item, Recipe):
        return item
    if isinstance(item, str):
        return parse_recipe(item)
    if isinstance(item, dict):
        d = dict(item)
        if "method" not in d:
            raise ValueError(f"a recipe table needs a 'method', got keys {sorted(d)}")
        return Recipe(d.pop("method"), d, name=d.pop("name", ""))
    raise TypeError(f"a recipe must be a spec string, a dict or a Recipe, got {item!r}")


def load_recipes(path) -> list[tuple[Recipe, dict]]:
    """[(recipe, settings)] from a TOML file of ``[[recipe]]`` tables; settings holds the
    table's own ``steps`` or ``tols`` (empty: the sweep's)."""
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"recipes file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"recipes file {str(path)!r} is not valid TOML: {e}") from None
    tables = data.get("recipe")
    if not isinstance(tables, list) or not tables or set(data) != {"recipe"}:
        raise ValueError(
            f"recipes file {str(path)!r} must hold a list of [[recipe]] tables and nothing else"
        )
    out = []
    for t in tables:
        t = dict(t)
        settings = {k: t.pop(k) for k in ("steps", "tols") if k in t}
        out.append((as_recipe(t), settings))
    return out


def _check_options(method: str, options: dict) -> None:
    if not isinstance(method, str):
        raise TypeError(f"a recipe's method must be a name (str), got {method!r}")
    info = get_method(method, caller="the recipe")  # unknown names: the registry's error
    if not isinstance(options, dict):
        raise TypeError(f"a recipe's options must be a dict, got {options!r}")
    takes = set(SAMPLE_OPTIONS) | set(info.options)
    if info.adaptive:
        takes -= {"grid_kind"}
    for key in options:
        if key not in takes:
            raise ValueError(
                f"recipe for {method!r}: unknown option {key!r} (it takes {sorted(takes)})"
            )
    if "sigma_min" in options and "t_min" in options:
        raise ValueError(f"recipe for {method!r}: give sigma_min or t_min, not both")
    for key in ("sigma_min", "t_min", "eta"):
        v = options.get(key)
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
        ):
            raise ValueError(f"recipe for {method!r}: {key} must be a number, got {v!r}")
    v = options.get("denoise")
    if v is not None and not isinstance(v, bool):
        raise ValueError(f"recipe for {method!r}: denoise must be true or false, got {v!r}")
