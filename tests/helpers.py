"""Small builders shared by several test modules (plain functions; ``from helpers import ...``
works because pytest's default "prepend" import mode puts tests/ on sys.path)."""

from __future__ import annotations

import pytest
import torch

import ndmsolve as nd
from ndmsolve.fields import MLP

F64 = torch.float64


def one_thread_fixture(default_dtype: torch.dtype | None = None):
    """An autouse, module-scoped fixture: torch on one intra-op thread for the module (tiny
    networks: extra threads only add overhead and oversubscribe under xdist), and, when
    ``default_dtype`` is given, that default dtype pinned (another module may leave float64
    set in this worker). Both are restored afterwards. Use ``_one_thread = one_thread_fixture()``."""

    @pytest.fixture(autouse=True, scope="module")
    def _one_thread():
        old, old_dtype = torch.get_num_threads(), torch.get_default_dtype()
        torch.set_num_threads(1)
        if default_dtype is not None:
            torch.set_default_dtype(default_dtype)
        yield
        torch.set_num_threads(old)
        if default_dtype is not None:
            torch.set_default_dtype(old_dtype)

    return _one_thread


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_affine(d: int, seed: int = 0, scale: float = 0.3, dtype=F64):
    """An ``AffineTimeTransform`` with coefficients ``scale * N(0, 1)`` drawn from
    ``gen(seed)``; returns ``(transform, (a1, a2, b1, b2))``."""
    g = gen(seed)
    a1, a2, b1, b2 = (scale * torch.randn(d, generator=g, dtype=dtype) for _ in range(4))
    return nd.AffineTimeTransform(a1, a2, b1, b2).to(dtype), (a1, a2, b1, b2)


def small_mlp(d: int, seed: int = 0, out_dim: int | None = None, dtype=F64) -> MLP:
    """A small time-conditioned MLP (seeded through the global RNG). The low ``max_freq``
    keeps high t-derivatives modest, so finite-difference checks can be tight."""
    torch.manual_seed(seed)
    return MLP(d, hidden=16, depth=2, time_dim=8, out_dim=out_dim, max_freq=4.0).to(dtype)


class Counting(torch.nn.Module):
    """Wraps a predictor and counts its calls (one call = one NFE over the batch)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, z, t):
        self.calls += 1
        return self.net(z, t)
