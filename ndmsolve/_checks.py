"""Input checks shared by the public entry points. Errors name the argument."""
from __future__ import annotations

import torch
from torch import Tensor


def _capturing() -> bool:
    # A host sync inside CUDA-graph capture is illegal; value checks are skipped there.
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


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
        raise ValueError(f"{name_x} must have a batch dimension, shape (B, *shape); got a 0-dim tensor")
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
    return t.to(x.dtype)


def check_output(name: str, out, like: Tensor, finite: bool = True) -> Tensor:
    """A network's output must be a tensor of ``like``'s shape and, optionally, finite."""
    if not isinstance(out, Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(out).__name__}")
    if out.shape != like.shape:
        raise ValueError(f"{name} must return shape {tuple(like.shape)} (the input's), got {tuple(out.shape)}")
    if finite and not _capturing() and not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} must return finite values, got NaN or inf")
    return out


def check_finite(named) -> None:
    """Every ``(name, tensor)`` in ``named`` must be finite; one host sync for all of them."""
    if _capturing():
        return
    if not bool(torch.stack([torch.isfinite(x).all() for _, x in named]).all()):
        name = next(n for n, x in named if not bool(torch.isfinite(x).all()))
        raise ValueError(f"{name} must return finite values, got NaN or inf")


def solver_time(t, z: Tensor) -> Tensor:
    """A solver's 0-dim time as the (B,) model time for states ``z`` (B, *shape).

    Clamped to the model's domain [0, 1]: stage times can round out by ~1e-17, and
    backends that step past the end and interpolate (torchdiffeq) evaluate beyond t1.
    """
    t = torch.as_tensor(t, dtype=z.dtype, device=z.device).clamp(0.0, 1.0)
    return t.expand(z.shape[0]) if t.ndim == 0 else t
