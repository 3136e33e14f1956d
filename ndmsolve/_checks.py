"""Input checks shared by the public entry points. Errors name the argument."""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable

import torch
from torch import Tensor


def _capturing() -> bool:
    # A host sync inside CUDA-graph capture is illegal; value checks are skipped there.
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


class NonFiniteOutputError(ValueError):
    """A network returned NaN/inf. ``name`` says which ("predictor (MLP)", ...); a solver
    running the network adds the time and the step (``solvers.base.locate``)."""

    def __init__(self, name: str):
        super().__init__(f"{name} must return finite values, got NaN or inf")
        self.name = name


def check_time(t: Tensor, name: str = "t") -> None:
    """``t`` must be a floating tensor with every entry in [0, 1]."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {t.dtype}")
    if t.numel() and not _capturing():
        if not bool(((t >= 0) & (t <= 1)).all()):
            bad = t[~((t >= 0) & (t <= 1))].flatten()[0].item()
            raise ValueError(f"{name} must lie in [0, 1], got a value {bad}")


def check_batch_time(x: Tensor, t, name_x: str = "x", name_t: str = "t") -> Tensor:
    """Validate data ``x`` (B, *shape) and time ``t`` (B,) or 0-dim; return ``t`` as (B,)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name_x} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name_x} must be a floating tensor, got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError(
            f"{name_x} must have a batch dimension, shape (B, *shape); got a 0-dim tensor"
        )
    if isinstance(t, (int, float)):
        t = torch.tensor(float(t), dtype=x.dtype, device=x.device)
    check_time(t, name_t)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    elif t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name_t} must have shape ({x.shape[0]},) to match {name_x} of shape {tuple(x.shape)}, "
            f"got {tuple(t.shape)}"
        )
    return t.to(x.dtype).contiguous()  # a no-op unless t is a stride-0 view


def check_output(name: str, out, like: Tensor, finite: bool = True, net=None) -> Tensor:
    """A network's output must be a tensor of ``like``'s shape and dtype and, optionally,
    finite. ``net`` (the module) is named in the message when given."""
    if net is not None:
        name = f"{name} ({type(net).__name__})"
    if not isinstance(out, Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(out).__name__}")
    if out.shape != like.shape:
        raise ValueError(
            f"{name} must return shape {tuple(like.shape)} (its input's), got {tuple(out.shape)}"
        )
    if out.dtype != like.dtype:
        raise TypeError(f"{name} must return dtype {like.dtype} (its input's), got {out.dtype}")
    if finite and not _capturing() and not bool(torch.isfinite(out).all()):
        raise NonFiniteOutputError(name)
    return out


def check_finite(named) -> None:
    """Every ``(name, tensor)`` or ``(name, tensor, net)`` in ``named`` must be finite; one
    host sync for all of them. ``net`` (the module) is named in the message."""
    if _capturing():
        return
    if not bool(torch.stack([torch.isfinite(e[1]).all() for e in named]).all()):
        e = next(e for e in named if not bool(torch.isfinite(e[1]).all()))
        raise NonFiniteOutputError(f"{e[0]} ({type(e[2]).__name__})" if len(e) > 2 else e[0])


def check_batch_size(batch_size) -> int | None:
    """``batch_size`` as given: None or a positive int; an error naming it otherwise."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size}")
    return batch_size


def solver_time(t, z: Tensor) -> Tensor:
    """A solver's 0-dim time as the (B,) model time for states ``z`` (B, *shape).

    Clamped to the model's domain [0, 1]: stage times can round out by ~1e-17, and
    backends that step past the end and interpolate (torchdiffeq) evaluate beyond t1.
    """
    t = torch.as_tensor(t, dtype=z.dtype, device=z.device).clamp(0.0, 1.0)
    # contiguous: user networks and schedules (e.g. a forward-mode JVP in t) get an
    # ordinary tensor, not a stride-0 view
    return t.expand(z.shape[0]).contiguous() if t.ndim == 0 else t


# --------------------------------------------------------------------------- seeds
def as_generator(generator, device=None) -> torch.Generator | None:
    """``generator`` as a ``torch.Generator``: an int ``s`` means
    ``torch.Generator(device).manual_seed(s)``; a Generator is returned as is; ``None``
    stays ``None`` (torch's global generator). The one seed convention of the package."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        if generator < 0:
            raise ValueError(f"generator: an int seed must be >= 0, got {generator}")
        dev = torch.device("cpu" if device is None else device)
        return torch.Generator(dev).manual_seed(generator)
    raise TypeError(
        f"generator must be a torch.Generator or an int seed, got {type(generator).__name__}"
    )


# --------------------------------------------------------------------------- dtype and device
def model_dtype_device(model) -> tuple[torch.dtype | None, torch.device | None]:
    """dtype and device of the model's first floating parameter, or ``(None, None)`` for
    a model without parameters (a closed-form model computes in its input's dtype)."""
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            if p.is_floating_point():
                return p.dtype, p.device
    return None, None


def check_like_model(x: Tensor, model, name: str) -> None:
    """``x`` must have the model's dtype and device (the package does not cast silently)."""
    dtype, device = model_dtype_device(model)
    if dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {x.dtype} but the model's parameters are {dtype}: "
            f"pass {name}.to({dtype}) or convert the model (model.to({x.dtype}))"
        )
    if device is not None and x.device != device:
        raise ValueError(
            f"{name} is on {x.device} but the model's parameters are on {device}: "
            f"pass {name}.to({str(device)!r}) or move the model"
        )


# --------------------------------------------------------------------------- keywords
def _keyword_names(fn) -> tuple[set, bool]:
    params = inspect.signature(fn).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def checked_keywords(*forwards: Callable, extra: Callable[[], set] | None = None):
    """Decorator: an unknown keyword argument raises ``TypeError`` naming the function the
    user called, the word, and the closest valid ones (``difflib``).

    ``forwards`` are the functions the decorated one passes its ``**kwargs`` on to; their
    keywords count as valid (theirs are resolved lazily, so they may be given as
    zero-argument callables returning the function, to break import cycles). ``extra()``
    returns further valid names that can change at run time (e.g. registered methods'
    options); it is consulted only when a word is not otherwise known.
    """

    def wrap(fn):
        cache: dict = {}

        def static() -> set:
            if "names" not in cache:
                names, _ = _keyword_names(fn)
                for fw in forwards:
                    target = fw() if getattr(fw, "_lazy", False) else fw
                    names |= _keyword_names(getattr(target, "__wrapped__", target))[0]
                    names |= getattr(target, "_valid_keywords", lambda: set())()
                cache["names"] = names
            return cache["names"]

        def valid() -> set:
            return static() | (extra() if extra is not None else set())

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            unknown = kwargs.keys() - static()
            if unknown:
                unknown = unknown - valid()
            if unknown:
                word = sorted(unknown)[0]
                close = difflib.get_close_matches(word, sorted(valid()), n=3, cutoff=0.7)
                hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                raise TypeError(
                    f"{fn.__name__}() got an unexpected keyword argument {word!r}{hint}"
                )
            return fn(*args, **kwargs)

        inner._valid_keywords = valid
        return inner

    return wrap


def lazy(get: Callable) -> Callable:
    """Mark a zero-argument callable for ``checked_keywords``: it returns the forward target."""
    get._lazy = True
    return get


def seeded(fn):
    """Decorator: the ``generator`` argument of ``fn`` goes through ``as_generator``, so
    ``fn`` accepts an int seed. The generator's device: ``fn``'s ``device`` argument if
    given, else that of its first tensor argument, else the CPU."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        g = bound.arguments.get("generator")
        if g is not None and not isinstance(g, torch.Generator):
            device = bound.arguments.get("device")
            if device is None:
                device = next(
                    (v.device for v in bound.arguments.values() if isinstance(v, Tensor)), None
                )
            bound.arguments["generator"] = as_generator(g, device)
        return fn(*bound.args, **bound.kwargs)

    return inner
