"""The divergence ∇·v of a velocity field: exact, or Hutchinson's estimate.

``method="exact"``: ∇·v = Σ_i e_iᵀ (∂v/∂z) e_i, one vector-Jacobian product (VJP) per
dimension, vectorised over the D basis vectors with ``torch.func.vmap``.
``method="hutchinson"``: ∇·v ≈ (1/P) Σ_p ε_pᵀ (∂v/∂z) ε_p with E[ε εᵀ] = I (Rademacher
or Gaussian), one VJP per probe (Hutchinson 1989; Grathwohl et al. 2019, FFJORD).

*Batch independence.* A VJP of the batched field with a cotangent that is non-zero in
every sample computes Σ_b' ∂v_{b'}/∂z_b, not ∂v_b/∂z_b. The exact trace therefore
assumes (standard, and true for MLPs, convolutions, GroupNorm, LayerNorm, the NDM) that
sample b's velocity depends only on z_b. For a field that mixes samples (BatchNorm in
training mode, attention across the batch), pass ``batch_independent=False``: the exact
trace then uses B·D one-hot cotangents (B times the cost) and returns the per-sample
diagonal blocks' traces. The Hutchinson estimate ε_bᵀ(Jᵀε)_b stays unbiased for
tr(∂v_b/∂z_b) in either case (the cross-sample terms have mean zero, they add variance).

*Memory.* Every evaluation computes its VJPs with ``torch.func`` on a detached state,
under ``torch.no_grad()`` for the outer autograd, and returns detached values: no graph
survives, so an ODE solve's memory does not grow with the number of steps.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import as_generator, checked_keywords

__all__ = [
    "divergence",
    "sample_probes",
    "Divergence",
    "DivergenceFallbackWarning",
    "TRACES",
    "NOISES",
    "MAX_EXACT_DIM",
]

TRACES = ("exact", "hutchinson")
NOISES = ("rademacher", "gaussian")
#: Default largest dimension for which trace="exact" runs without force_exact=True.
MAX_EXACT_DIM = 64
#: Exact trace: basis vectors are pushed through vmap in chunks of at most this many
#: elements (chunk · B · D), so force_exact on a large D does not allocate D²·B at once.
_EXACT_CHUNK_ELEMENTS = 2**25

Velocity = Callable[[Tensor, Tensor], Tensor]


class DivergenceFallbackWarning(UserWarning):
    """The vectorised VJP (``torch.func.vmap`` / ``torch.func.vjp``) failed on this field
    and the divergence falls back to a slower path (a Python loop over VJPs, or plain
    ``torch.autograd``). Results are the same; only the cost differs."""


def flat_dim(z: Tensor) -> int:
    return math.prod(z.shape[1:])


def check_trace(trace: str) -> None:
    if trace not in TRACES:
        raise ValueError(f"trace must be one of {TRACES}, got {trace!r}")


def check_exact_dim(D: int, max_exact_dim: int, force_exact: bool, name: str = "trace") -> None:
    if D > max_exact_dim and not force_exact:
        raise ValueError(
            f"{name}='exact' needs one VJP per dimension, D = {D} > max_exact_dim = {max_exact_dim}; "
            f"use {name}='hutchinson' (an unbiased estimate with one VJP per probe) or pass "
            f"force_exact=True to pay for the D VJPs per field evaluation"
        )


def sample_probes(
    n: int, z: Tensor, noise: str = "rademacher", generator: torch.Generator | None = None
) -> Tensor:
    """``n`` Hutchinson probes ε with E[ε εᵀ] = I, shape (n, B, *shape), ``z``'s dtype/device.

    ``noise="rademacher"``: entries ±1 with probability ½ (the lower-variance choice);
    ``noise="gaussian"``: standard normal entries.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"probes must be a positive int, got {n!r}")
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    generator = as_generator(generator, z.device)
    shape = (n, *z.shape)
    if noise == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=z.device)
        return bits.to(z.dtype) * 2 - 1
    return torch.randn(shape, generator=generator, dtype=z.dtype, device=z.device)


class Divergence:
    """Computes (v(z, t), divergence) for one field; remembers a fallback once taken.

    ``mode`` is ``"vmap"`` (torch.func.vjp + vmap over cotangents), ``"loop"``
    (torch.func.vjp, a Python loop over cotangents) or ``"autograd"`` (torch.autograd.grad
    with ``retain_graph``, a loop). Each downgrade warns once, naming the cause.
    """

    def __init__(
        self,
        v: Velocity,
        method: str,
        probes: Tensor | None,
        *,
        batch_independent: bool = True,
        chunk_size: int | None = None,
    ):
        self.v, self.method, self.probes = v, method, probes
        self.batch_independent = batch_independent
        self.chunk_size = chunk_size
        self.mode = "vmap"
        self._basis: Tensor | None = None

    # ---------------------------------------------------------------- cotangents
    def cotangents(self, z: Tensor) -> Tensor:
        """(K, B, *shape): the probes, or the exact trace's one-hot basis vectors."""
        if self.method == "hutchinson":
            return self.probes
        if self._basis is None or self._basis.dtype != z.dtype or self._basis.device != z.device:
            B, D = z.shape[0], flat_dim(z)
            if self.batch_independent:
                # e_i in every sample at once: (D, B, *shape), row i one-hot at flat index i.
                eye = torch.eye(D, dtype=z.dtype, device=z.device)
                self._basis = eye.reshape(D, 1, *z.shape[1:]).expand(D, *z.shape)
            else:
                # e_{b,i}: one-hot in the whole batch, (B·D, B, *shape).
                self._basis = torch.eye(B * D, dtype=z.dtype, device=z.device).reshape(
                    B * D, *z.shape
                )
        return self._basis

    def reduce(self, g: Tensor, z: Tensor) -> Tensor:
        """Cotangent products g = cᵀ(∂v/∂z) (K, B, *shape) -> divergence terms.

        hutchinson: (P, B), ε_pᵀ (∂v/∂z) ε_p per probe.  exact: (1, B), the trace.
        """
        B, D = z.shape[0], flat_dim(z)
        if self.method == "hutchinson":
            return (g * self.probes).reshape(g.shape[0], B, D).sum(-1)
        if self.batch_independent:
            # g[i, b, j] = Σ_b' ∂v_{b'i}/∂z_{bj} = ∂v_{bi}/∂z_{bj} (independence); trace = Σ_i g[i, b, i].
            return torch.diagonal(g.reshape(D, B, D), dim1=0, dim2=2).sum(-1)[None]
        # g[(b,i), (b',j)] = ∂v_{bi}/∂z_{b'j}; keep the diagonal, sum within each sample.
        return torch.diagonal(g.reshape(B * D, B * D)).reshape(B, D).sum(-1)[None]

    def _chunk(self, z: Tensor, K: int) -> int | None:
        if self.chunk_size is not None:
            return self.chunk_size
        if self.method == "exact":
            per = z.numel()
            return max(1, min(K, _EXACT_CHUNK_ELEMENTS // max(per, 1)))
        return None

    def _warn(self, new_mode: str, err: BaseException) -> None:
        what = {
            "loop": "torch.func.vmap over the VJP failed on this velocity field; computing the "
            "divergence with a Python loop over VJPs (one per probe/basis vector; slower)",
            "autograd": "torch.func.vjp failed on this velocity field; computing the divergence "
            "with torch.autograd.grad in a loop (slower)",
        }[new_mode]
        warnings.warn(
            f"{what}. Cause: {type(err).__name__}: {err}", DivergenceFallbackWarning, stacklevel=4
        )
        self.mode = new_mode

    # ---------------------------------------------------------------- evaluation
    def __call__(self, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """z (B, *shape), t (B,) -> (v (B, *shape), div terms (K', B)); all detached."""
        z = z.detach()
        C = self.cotangents(z)
        with torch.no_grad():  # torch.func ignores the outer no_grad; no graph to parameters
            if self.mode in ("vmap", "loop"):
                try:
                    vz, vjp_fn = torch.func.vjp(lambda zz: self._call_v(zz, t), z)
                except (RuntimeError, NotImplementedError) as err:
                    self._warn("autograd", err)
                else:
                    if C.shape[0] == 1:  # one probe: a plain VJP, vmap would only add overhead
                        (g,) = vjp_fn(C[0])
                        return vz.detach(), self.reduce(g.unsqueeze(0), z).detach()
                    if self.mode == "vmap":
                        try:
                            (g,) = torch.func.vmap(vjp_fn, chunk_size=self._chunk(z, C.shape[0]))(C)
                            return vz.detach(), self.reduce(g, z).detach()
                        except (RuntimeError, NotImplementedError) as err:
                            self._warn("loop", err)
                    g = torch.stack([vjp_fn(c)[0] for c in C])
                    return vz.detach(), self.reduce(g, z).detach()
        # mode == "autograd": plain autograd on a detached leaf; the graph dies on return.
        with torch.enable_grad():
            zz = z.clone().requires_grad_(True)
            vz = self._call_v(zz, t)
            g = torch.stack(
                [
                    torch.autograd.grad(vz, zz, c, retain_graph=k < C.shape[0] - 1)[0]
                    for k, c in enumerate(C)
                ]
            )
        return vz.detach(), self.reduce(g.detach(), z).detach()

    def _call_v(self, z: Tensor, t: Tensor) -> Tensor:
        out = self.v(z, t)
        if not isinstance(out, Tensor) or out.shape != z.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"velocity must return a tensor of z's shape {tuple(z.shape)}, got {got}"
            )
        return out


def as_batch_time(t, z: Tensor) -> Tensor:
    if not isinstance(t, Tensor):
        t = torch.tensor(float(t), dtype=z.dtype, device=z.device)
    if t.ndim == 0:
        return t.to(z.dtype).expand(z.shape[0])
    if t.shape != (z.shape[0],):
        raise ValueError(
            f"t must be 0-dim or of shape ({z.shape[0]},) to match z, got {tuple(t.shape)}"
        )
    return t.to(z.dtype)


@checked_keywords()
def divergence(
    v: Velocity,
    z: Tensor,
    t,
    *,
    method: str = "exact",
    probes: Tensor | None = None,
    per_probe: bool = False,
    batch_independent: bool = True,
    max_exact_dim: int = MAX_EXACT_DIM,
    force_exact: bool = False,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The value and divergence ∇_z·v of a velocity field at (z, t).

    Args:
        v: ``v(z, t) -> (B, *shape)`` with z (B, *shape) and t (B,).
        z: (B, *shape) floating.
        t: float, 0-dim or (B,) tensor.
        method: ``"exact"`` (Σ_i e_iᵀ J e_i, D VJPs, vmapped) or ``"hutchinson"``
            (εᵀ J ε averaged over the given probes, one VJP per probe, vmapped).
        probes: (P, B, *shape) probes for ``"hutchinson"`` (see :func:`sample_probes`).
        per_probe: Hutchinson only: return the (P, B) per-probe estimates instead of
            their mean.
        batch_independent: the exact trace assumes v_b depends on z_b only (see the
            module docstring); ``False`` uses B·D cotangents and is correct for fields
            that mix samples.
        max_exact_dim, force_exact: exact on D > max_exact_dim raises ValueError unless
            ``force_exact=True``.
        chunk_size: cotangents per vmap call (default: all probes; exact: chunks of at
            most 2**25 elements).

    Returns:
        ``(v(z, t), div)``: v (B, *shape) and div (B,) — or (P, B) with ``per_probe`` —
        both detached (no autograd graph is kept).

    If ``torch.func.vmap`` (or ``torch.func.vjp``) cannot handle the field, a slower
    loop is used and a :class:`DivergenceFallbackWarning` says so.
    """
    check_trace(method)
    check_state(z, "z")
    t = as_batch_time(t, z)
    if method == "exact":
        if probes is not None:
            raise ValueError(
                "probes are only used with method='hutchinson'; got probes with method='exact'"
            )
        if per_probe:
            raise ValueError("per_probe=True needs method='hutchinson'")
        check_exact_dim(flat_dim(z), max_exact_dim, force_exact, "method")
    else:
        if probes is None:
            raise ValueError(
                "method='hutchinson' needs probes of shape (P, B, *shape); see sample_probes"
            )
        _check_probes(probes, z)
    engine = Divergence(
        v, method, probes, batch_independent=batch_independent, chunk_size=chunk_size
    )
    vz, terms = engine(z, t)
    if method == "exact" or per_probe:
        return vz, terms[0] if method == "exact" else terms
    return vz, terms.mean(0)


def _check_probes(probes, z: Tensor) -> None:
    if not isinstance(probes, Tensor):
        raise TypeError(
            f"probes must be a tensor of shape (P, B, *shape), got {type(probes).__name__}"
        )
    if probes.ndim != z.ndim + 1 or probes.shape[1:] != z.shape or probes.shape[0] < 1:
        raise ValueError(
            f"probes must have shape (P, {', '.join(map(str, z.shape))}), got {tuple(probes.shape)}"
        )
    if probes.dtype != z.dtype:
        raise TypeError(f"probes must have z's dtype {z.dtype}, got {probes.dtype}")


def check_state(z, name: str) -> None:
    if not isinstance(z, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {z.dtype}")
    if z.ndim < 2:
        raise ValueError(
            f"{name} must have shape (B, *shape) with a batch dimension and at least one data "
            f"dimension (use (B, 1) for scalar data), got {tuple(z.shape)}"
        )
    if z.shape[0] < 1 or z.numel() == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(z.shape)}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf")
