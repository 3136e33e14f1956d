"""Module configurations: how a network was built, recorded so it can be rebuilt.

A class decorated with ``@configurable`` records the arguments of its constructor;
``to_config(module)`` turns a module built from such classes into plain data (dicts,
lists, numbers, strings, tensors) and ``from_config(config)`` builds a fresh module of the
same structure. A checkpoint stores that data next to the weights, so loading it needs no
user code. Only registered classes are ever built (no import by name of arbitrary code);
a user's own module class is registered with ``@configurable`` as well.

    @nd.configurable
    class MyNet(nn.Module):
        def __init__(self, dim, hidden=64): ...

    cfg = to_config(model)          # {"class": "NDM", "args": {...}}
    clone = from_config(cfg)        # same structure, fresh weights

A module passed to two constructors (e.g. one schedule shared by the NDM and an
``EpsilonPredictor``) is stored once and shared again when rebuilt.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch import nn

__all__ = ["configurable", "to_config", "from_config", "ConfigError", "registered_classes"]

_REGISTRY: dict[str, type] = {}
_ATTR = "_ndmsolve_config"


class ConfigError(ValueError):
    """A module that cannot be described (unregistered class, unsupported argument) or a
    configuration that cannot be built."""


def _key(cls: type) -> str:
    # ndmsolve's own classes by their short name; user classes by module and qualified name.
    if cls.__module__.split(".")[0] == "ndmsolve":
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def configurable(cls: type) -> type:
    """Class decorator: record the constructor's arguments and register the class by name.

    The arguments are bound to the signature with defaults applied, after the
    constructor returns (the most derived decorated class wins). A ``*args`` parameter is
    not supported: such classes raise ``ConfigError`` when described.
    """
    if not isinstance(cls, type):
        raise TypeError(f"configurable decorates a class, got {type(cls).__name__}")
    key = _key(cls)
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        old = _REGISTRY[key]
        if (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ConfigError(f"a configurable class named {key!r} is already registered ({old!r})")
    _REGISTRY[key] = cls
    init = cls.__init__
    sig = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop(next(iter(sig.parameters)))  # self
        object.__setattr__(self, _ATTR, (cls, sig, arguments))

    cls.__init__ = __init__
    return cls


def registered_classes() -> dict[str, type]:
    """Name -> class of every configurable class (a copy)."""
    return dict(_REGISTRY)


def _describe(value: Any, memo: dict, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.Tensor):
        return {"tensor": value.detach().cpu().clone()}
    if isinstance(value, (list, tuple)):
        items = [_describe(v, memo, f"{where}[{i}]") for i, v in enumerate(value)]
        return {"tuple": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where}: dict arguments need str keys")
        return {"dict": {k: _describe(v, memo, f"{where}[{k!r}]") for k, v in value.items()}}
    if isinstance(value, nn.Module):
        return _module(value, memo, where)
    raise ConfigError(
        f"{where}: cannot store an argument of type {type(value).__name__} in a configuration"
    )


def _module(module: nn.Module, memo: dict, where: str) -> dict:
    if id(module) in memo:
        return {"ref": memo[id(module)]}
    rec = getattr(module, _ATTR, None)
    if rec is None or rec[0] is not type(module):
        raise ConfigError(
            f"{where}: {type(module).__qualname__} is not configurable; decorate the class with "
            f"ndmsolve.configurable so a checkpoint can rebuild it"
        )
    cls, sig, arguments = rec
    memo[id(module)] = len(memo)
    args = {}
    for name, value in arguments.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            raise ConfigError(
                f"{where}: {cls.__qualname__} takes *{name}, which a configuration cannot store"
            )
        if kind is inspect.Parameter.VAR_KEYWORD:
            for k, v in value.items():
                args[k] = _describe(v, memo, f"{where}.{k}")
        else:
            args[name] = _describe(value, memo, f"{where}.{name}")
    return {"class": _key(cls), "id": memo[id(module)], "args": args}


def to_config(module: nn.Module) -> dict:
    """A plain-data description of ``module`` (built from ``@configurable`` classes)."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    return _module(module, {}, type(module).__name__)


def _build(value: Any, built: dict, where: str) -> Any:
    if isinstance(value, list):
        return [_build(v, built, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if "tuple" in value:
        return tuple(_build(v, built, f"{where}[{i}]") for i, v in enumerate(value["tuple"]))
    if "dict" in value:
        return {k: _build(v, built, f"{where}[{k!r}]") for k, v in value["dict"].items()}
    if "tensor" in value:
        return value["tensor"].clone()
    if "dtype" in value:
        dtype = getattr(torch, str(value["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"{where}: unknown dtype {value['dtype']!r}")
        return dtype
    if "ref" in value:
        if value["ref"] not in built:
            raise ConfigError(f"{where}: reference to module {value['ref']} before its definition")
        return built[value["ref"]]
    if "class" in value:
        name = value["class"]
        if name not in _REGISTRY:
            raise ConfigError(
                f"{where}: class {name!r} is not registered; import the module that defines it "
                f"(decorated with ndmsolve.configurable) before loading"
            )
        args = {k: _build(v, built, f"{where}.{k}") for k, v in value.get("args", {}).items()}
        try:
            module = _REGISTRY[name](**args)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: building {name} failed: {e}") from e
        built[value.get("id")] = module
        return module
    raise ConfigError(f"{where}: unrecognised configuration entry with keys {sorted(value)}")


def from_config(config: dict) -> nn.Module:
    """Build a fresh module (new weights) from ``to_config``'s description."""
    if not isinstance(config, dict) or "class" not in config:
        raise ConfigError(
            f"config must be a dict with a 'class' entry, got {type(config).__name__}"
        )
    return _build(config, {}, str(config["class"]))
