"""A Brownian path that can be queried on any interval, in either direction.

Why a path object and not fresh Gaussians: an adaptive SDE solver that rejects a step
must retry on a *sub*-interval of the same noise, and a strong-order test must drive
every step size with one and the same realisation. Both need W(t) as a function that
answers consistently, whatever the order of the queries. ``BrownianPath`` wraps
torchsde's ``BrownianInterval`` (a binary tree of Brownian bridges with seeded
entropy) and adds what our solvers need on top of it:

- any state shape (the tree is built directly for ``shape``; no (batch, d) flattening);
- either direction: ``increment(ta, tb) = W(tb) − W(ta)`` also for ``ta > tb``;
- the space-time Lévy area ``I10 = ∫_ta^tb (W(s) − W(ta)) ds`` (an oriented integral),
  which SRA-type schemes need;
- seeding from a ``torch.Generator``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor

__all__ = ["BrownianPath"]


def _draw_seed(generator: torch.Generator | None) -> int:
    """An int seed drawn from ``generator`` (the global RNG when None)."""
    from .._checks import as_generator

    generator = as_generator(generator)
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=device).item())


class BrownianPath:
    """One sample path of a Brownian motion W on ``[min(t0, t1), max(t0, t1)]``.

    Each element of a state of shape ``shape`` has its own independent W (diagonal
    noise). Increments over ``[ta, tb]`` have variance ``|tb − ta|``.

    Args:
        t0, t1: the time span (either order).
        shape: shape of one sample W(t), i.e. the SDE state's shape.
        dtype, device: of the returned increments.
        generator: ``torch.Generator`` the path's seed is drawn from (one int);
            ``None`` draws it from torch's global RNG.
        levy_area: also provide the space-time Lévy area (needed by ``sra1``). On by
            default so one path serves every method; the path (W itself) depends on
            this flag, so two solves meant to share a path must share the object.
        entropy: an explicit int seed instead of ``generator``.
    """

    def __init__(
        self,
        t0: float,
        t1: float,
        shape: Sequence[int],
        dtype: torch.dtype = torch.float32,
        device: Union[str, torch.device, None] = None,
        generator: torch.Generator | None = None,
        *,
        levy_area: bool = True,
        entropy: int | None = None,
    ):
        import torchsde  # only a path object needs it; the fast fixed-step path does not

        t0, t1 = float(t0), float(t1)
        if not (math.isfinite(t0) and math.isfinite(t1)) or t0 == t1:
            raise ValueError(f"BrownianPath needs finite t0 != t1, got t0={t0}, t1={t1}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        self.t_lo, self.t_hi = min(t0, t1), max(t0, t1)
        self.shape = torch.Size(shape)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.levy_area = bool(levy_area)
        self.entropy = int(entropy) if entropy is not None else _draw_seed(generator)
        self._tol = 8 * torch.finfo(torch.float64).eps * max(1.0, abs(t0), abs(t1))
        self._bi = _interval_class(torchsde)(
            t0=self.t_lo,
            t1=self.t_hi,
            size=tuple(self.shape),
            dtype=dtype,
            device=self.device,
            entropy=self.entropy,
            levy_area_approximation="space-time" if self.levy_area else "none",
        )

    def __repr__(self) -> str:
        return (
            f"BrownianPath([{self.t_lo}, {self.t_hi}], shape={tuple(self.shape)}, dtype={self.dtype}, "
            f"device={self.device}, levy_area={self.levy_area})"
        )

    def _clip(self, t, name: str) -> float:
        t = float(t)
        if not (self.t_lo - self._tol <= t <= self.t_hi + self._tol):
            raise ValueError(
                f"{name}={t} lies outside the Brownian path's span [{self.t_lo}, {self.t_hi}]"
            )
        return min(max(t, self.t_lo), self.t_hi)

    def increment(self, ta, tb) -> Tensor:
        """``W(tb) − W(ta)``, shape ``self.shape``; for ``ta > tb`` this is ``−(W(ta) − W(tb))``."""
        ta, tb = self._clip(ta, "ta"), self._clip(tb, "tb")
        return self._bi(ta, tb) if ta <= tb else -self._bi(tb, ta)

    def increment_and_area(self, ta, tb) -> tuple[Tensor, Tensor]:
        """``(ΔW, I10)`` with ``ΔW = W(tb) − W(ta)`` and ``I10 = ∫_ta^tb (W(s) − W(ta)) ds``.

        The integral is oriented (for ``ta > tb`` it runs backwards), which is what makes
        the SRA formulas valid verbatim with a negative step ``h = tb − ta``.
        """
        if not self.levy_area:
            raise ValueError(
                "this BrownianPath was built with levy_area=False; the method needs "
                "the space-time Lévy area (build it with levy_area=True)"
            )
        ta, tb = self._clip(ta, "ta"), self._clip(tb, "tb")
        if ta <= tb:
            return tuple(self._bi(ta, tb, return_U=True))
        # Query the forward interval [tb, ta]: dW' = W(ta) − W(tb), U' = ∫_tb^ta (W − W(tb)).
        # Then ∫_ta^tb (W − W(ta)) = −∫_tb^ta (W − W(tb)) + (ta − tb)·dW'.
        dw, u = self._bi(tb, ta, return_U=True)
        return -dw, (ta - tb) * dw - u


@functools.lru_cache(maxsize=1)
def _interval_class(torchsde):
    """torchsde's ``BrownianInterval`` with its tree refinement bounded below.

    torchsde refines its dependency tree to the *current* query's length when the average
    query is short enough; one tiny query at that moment (an adaptive solve closing in on
    a NaN takes steps of 1e-13) builds span/1e-13 nodes and never returns. Here the tree's
    pieces stay above 1e-6 of the span; shorter queries are still exact (bridges within a
    piece), and solves whose queries stay above that are unchanged.
    """

    class BoundedInterval(torchsde.BrownianInterval):
        def _create_dependency_tree(self, dt):
            return super()._create_dependency_tree(max(dt, 1e-6 * (self._end - self._start)))

    return BoundedInterval
