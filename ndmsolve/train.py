"""Training loop for NDMs: Adam, an EMA of the weights, gradient clipping, seeded batches,
atomic checkpoints.

    result = train(model, data, steps=2000, batch_size=256, generator=torch.Generator().manual_seed(0))
    result.ema_model    # the averaged weights: use these to sample and evaluate
    result.losses       # mean negative ELBO (nats per sample) of every step's batch

Same generator seed, same data, same model initialisation → identical losses.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Union

import torch
from torch import Tensor, nn

from . import distributed as ddist
from ._checks import as_generator, check_like_model, checked_keywords
from ._guard import FolderLockedError, Interrupts, TrainingInterrupted, folder_lock
from .checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    capture_rng,
    load_checkpoint,
    read_checkpoint,
    restore_entries,
    restore_rng,
    save_checkpoint,
)
from .io import stale_temp_files
from .objectives import continuous_loss

__all__ = [
    "EMA",
    "TrainResult",
    "train",
    "TrainConfig",
    "Batches",
    "StepGuard",
    "lr_factor",
    "LR_SCHEDULES",
    "DATA_ORDERS",
    "TrainingStopped",
    "save_checkpoint",
    "load_checkpoint",
    "TrainingInterrupted",
    "FolderLockedError",
    "folder_lock",
    "CheckpointExistsError",
    "CheckpointWriteError",
]

LR_SCHEDULES = ("constant", "cosine")
DATA_ORDERS = ("random", "epoch")

PathLike = Union[str, os.PathLike]


class EMA:
    """Exponential moving average of a module's parameters ("shadow" weights).

    After each ``update(model)``: shadow ← d·shadow + (1 − d)·param, with
    d = decay, or, when ``warmup=True``, d_k = min(decay, (1 + k)/(10 + k)) at the k-th
    update (k = 0, 1, …) so short runs are not dominated by the initial weights
    (0.999^2000 ≈ 0.14 would otherwise remain of the initialisation after 2000 steps).
    Buffers (e.g. normalisation statistics) are copied, not averaged.

    ``shadow`` is a full, frozen copy of the module: evaluate or sample with it directly,
    or ``copy_to(model)`` to load the averaged weights into another instance.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next ``update`` uses."""
        if not self.warmup:
            return self.decay
        k = self.num_updates
        return min(self.decay, (1.0 + k) / (10.0 + k))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for s, p in zip(self.shadow.parameters(), model.parameters(), strict=True):
            s.lerp_(p.detach(), 1.0 - d)  # s + (1 − d)(p − s)
        for sb, b in zip(self.shadow.buffers(), model.buffers(), strict=True):
            sb.copy_(b)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged parameters (and buffers) into ``model`` in place."""
        for s, p in zip(self.shadow.parameters(), model.parameters(), strict=True):
            p.copy_(s)
        for sb, b in zip(self.shadow.buffers(), model.buffers(), strict=True):
            b.copy_(sb)

    def state_dict(self) -> dict:
        return {
            "shadow": self.shadow.state_dict(),
            "num_updates": self.num_updates,
            "decay": self.decay,
            "warmup": self.warmup,
        }

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state["shadow"])
        self.num_updates = int(state["num_updates"])
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])


class TrainResult(NamedTuple):
    model: nn.Module  # the trained (raw) weights
    ema_model: nn.Module  # a frozen copy holding the EMA weights
    losses: list  # one float per step: the batch's mean loss (nats per sample)


# ----------------------------------------------------------------- training
def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def lr_factor(step: int, steps: int, schedule: str = "constant", warmup: int = 0) -> float:
    """Multiplier of the base learning rate at optimisation step ``step`` (0-based) of ``steps``.

    A linear warm-up from 1/warmup to 1 over the first ``warmup`` steps, then ``"constant"``
    (1) or ``"cosine"`` (½(1 + cos(π p)), p the fraction of the post-warm-up steps done,
    reaching 0 at the last step). A pure function of the step, so a resumed run follows
    the same schedule with no stored state.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    p = (step - warmup) / max(1, steps - warmup - 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(p, 1.0)))


LossFn = Callable[..., object]


def _resolve_loss(loss: Union[str, LossFn]) -> LossFn:
    if callable(loss):
        return loss
    if loss == "continuous":
        return continuous_loss
    raise ValueError(
        f"loss must be 'continuous' or a callable loss(model, x, generator=g) -> (B,) tensor or NegELBO, "
        f"got {loss!r}"
    )


class Batches:
    """Where every random number of a step comes from: the data order and the loss's noise.

    With one micro-batch (single process) one generator serves both, in the order: batch
    indices, then the loss's draws. With K micro-batches (and under DDP, where rank r
    takes micro-batches r, r + W, ...) a data generator draws the global batch's indices
    (the same on every rank) and micro-batch k draws its noise from its own generator k;
    all K + 1 are seeded from ``generator`` once, so one process with K micro-batches and
    K processes with one each see the same numbers.

    ``order="epoch"`` (tensor data) draws indices without replacement: the global index
    stream is a concatenation of permutations of the N points, epoch e's permutation seeded
    by (a seed drawn once from ``generator``, e), and step s takes positions
    [s·B, (s+1)·B) of it. It depends on the step alone, so resuming needs no extra state
    and every rank computes the same global batch.
    """

    def __init__(
        self,
        data,
        batch_size: int,
        generator: torch.Generator,
        microbatches: int,
        rank: int,
        world: int,
        order: str = "random",
    ):
        _check_data_order(order)
        if order == "epoch" and not isinstance(data, Tensor):
            raise ValueError(
                "data_order='epoch' needs data as a tensor (N, *shape); a callable data source "
                "draws fresh points and has no epochs"
            )
        if isinstance(data, Tensor):
            if data.ndim < 2 or data.shape[0] < 1:
                raise ValueError(
                    f"data must be a tensor of shape (N, *shape) with N >= 1, got {tuple(data.shape)}"
                )
            if not data.is_floating_point():
                raise TypeError(
                    f"data must be floating (map images with to_model_range), got dtype {data.dtype}"
                )
        elif not callable(data):
            raise TypeError(
                f"data must be a tensor (N, *shape) or a callable data(n, generator=g), "
                f"got {type(data).__name__}"
            )
        if microbatches % world:
            raise ValueError(
                f"microbatches ({microbatches}) must be a multiple of the world size ({world})"
            )
        if batch_size % microbatches:
            raise ValueError(
                f"batch_size ({batch_size}) must be divisible by microbatches ({microbatches})"
            )
        self.data, self.batch_size, self.K = data, batch_size, microbatches
        self.local = list(range(rank, microbatches, world))
        if microbatches == 1:
            self.generators = [generator]
        else:
            seeds = torch.randint(
                0, 2**62, (microbatches + 1,), generator=generator, device=generator.device
            )
            self.generators = [torch.Generator(generator.device).manual_seed(int(v)) for v in seeds]
        self.order, self._perm = order, (None, None)
        if order == "epoch":
            g = self.data_generator()
            self.set_epoch_seed(int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)))

    def set_epoch_seed(self, seed: int) -> None:
        """The seed of the epochs' orders (drawn at start, or restored from a checkpoint)."""
        self.epoch_seed, self._perm = seed, (None, None)

    def data_generator(self) -> torch.Generator:
        return self.generators[0]

    def noise_generator(self, k: int) -> torch.Generator:
        return self.generators[0 if self.K == 1 else k + 1]

    def permutation(self, epoch: int) -> Tensor:
        """The order of the N points in ``epoch`` (``order="epoch"``), (N,) int64 on CPU."""
        if self._perm[0] != epoch:
            g = torch.Generator().manual_seed((self.epoch_seed + epoch) % 2**63)
            self._perm = (epoch, torch.randperm(self.data.shape[0], generator=g))
        return self._perm[1]

    def epoch_indices(self, step: int) -> Tensor:
        """Global batch indices of ``step`` under ``order="epoch"``, (batch_size,)."""
        n = self.data.shape[0]
        pos = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)
        epochs = pos // n
        out = torch.empty_like(pos)
        for e in epochs.unique().tolist():
            sel = epochs == e
            out[sel] = self.permutation(e)[pos[sel] - e * n]
        return out

    def next(self, step: int) -> list[tuple[Tensor, torch.Generator]]:
        """This process's micro-batches of ``step``: [(x_k, noise generator k), ...]."""
        g, m = self.data_generator(), self.batch_size // self.K
        if isinstance(self.data, Tensor):
            n = self.data.shape[0]
            if self.order == "epoch":
                idx = self.epoch_indices(step).to(self.data.device)
            else:
                # Indices on the generator's device; with replacement keeps every step iid.
                idx = torch.randint(0, n, (self.batch_size,), generator=g, device=g.device).to(
                    self.data.device
                )
            return [
                (self.data[idx[k * m : (k + 1) * m]], self.noise_generator(k)) for k in self.local
            ]
        x = self.data(self.batch_size, generator=g)
        # One host sync per step, before the loss sees the batch (tensor data: checked once).
        if isinstance(x, Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(
                f"data: the batch drawn at step {step} has a non-finite value: the data "
                f"source returned NaN or inf (not the model)"
            )
        if self.K == 1:
            return [(x, g)]
        return [(x[k * m : (k + 1) * m], self.noise_generator(k)) for k in self.local]


class _Objective(nn.Module):
    """The loss as a module, so DistributedDataParallel (which hooks ``forward``) can wrap
    it: ``forward(x, generator)`` -> the batch's mean loss (0-dim)."""

    def __init__(self, model: nn.Module, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn
        self.last = None  # the loss's last output (an adaptive time proposal reads it)

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        self.last = self.loss_fn(self.model, x, generator=generator)
        return _total(self.last)


def _autocast_predictor(model: nn.Module, dtype: torch.dtype) -> list:
    """Run ``model.predictor`` under autocast, its output cast back to the input's dtype.

    Only the predictor: forward-mode AD (the transform's ∂_t F) does not mix with autocast's
    casts, and the ELBO's weights e^λ need float32. Returns the hook handles to remove.
    """
    net = getattr(model, "predictor", None)
    if not isinstance(net, nn.Module):
        raise ValueError("amp needs a model with a .predictor module (an NDM)")
    state = {}

    def enter(module, args):
        state["ctx"] = torch.autocast(args[0].device.type, dtype=dtype)
        state["ctx"].__enter__()
        state["dtype"] = args[0].dtype

    def leave(module, args, out):
        state.pop("ctx").__exit__(None, None, None)
        return out.to(state["dtype"])

    return [net.register_forward_pre_hook(enter), net.register_forward_hook(leave)]


class _Restore:
    """A handle whose ``remove()`` drops a module's compiled ``forward`` override."""

    def __init__(self, net: nn.Module):
        self.net = net

    def remove(self) -> None:
        self.net.__dict__.pop("forward", None)


def _compile_predictor(model: nn.Module) -> _Restore:
    """``torch.compile`` the predictor's forward in place (same parameters and state_dict).

    Only the predictor: TorchDynamo does not trace the forward-mode AD of ∂_t F.
    """
    net = getattr(model, "predictor", None)
    if not isinstance(net, nn.Module):
        raise ValueError("compile needs a model with a .predictor module (an NDM)")
    net.forward = torch.compile(net.forward)
    return _Restore(net)


def _total(out) -> Tensor:
    total = getattr(out, "total", out)  # NegELBO or a plain tensor
    if not isinstance(total, Tensor):
        raise TypeError(
            f"loss must return a tensor or an object with .total, got {type(out).__name__}"
        )
    return total.mean()


class TrainingStopped(FloatingPointError):
    """Training stopped to protect the weights: ``max_bad_steps`` non-finite steps in a row,
    a loss beyond ``max_loss_ratio``, or non-finite weights at a save. ``step`` is the
    (0-based) step; the checkpoint on disk is the last good one."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def _check_data(data) -> None:
    """Tensor data must be finite: the first bad point is named (one pass, up front)."""
    if not isinstance(data, Tensor) or not data.is_floating_point():
        return
    bad = ~torch.isfinite(data)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"data has a non-finite value at index {first if len(first) > 1 else first[0]} "
            f"(point {first[0]} of {data.shape[0]}): {data[first].item()}"
        )


class StepGuard:
    """The non-finite policy and the divergence guard (see ``train``), decided once per
    step from the loss and the gradient norm with one host sync."""

    check = True  # benchmarks/nonfinite_cost.py turns it off to time the loop without it
    WINDOW = 10  # steps per mean of the divergence guard's reference

    def __init__(self, max_bad_steps: int, max_loss_ratio: float | None, losses: list, bad: int):
        self.max_bad, self.ratio, self.bad = max_bad_steps, max_loss_ratio, bad
        self.recent: list = []
        self.ref = math.inf
        for v in losses:
            self._remember(v)

    def _remember(self, v: float) -> None:
        if math.isfinite(v):
            self.recent = (self.recent + [v])[-self.WINDOW :]
            if len(self.recent) == self.WINDOW:
                self.ref = min(self.ref, sum(self.recent) / self.WINDOW)

    def grad_norm(self, params: list, grad_clip: float | None) -> Tensor | None:
        """Clip (when asked) and return the global gradient norm before clipping (on device)."""
        if grad_clip is not None:
            return nn.utils.clip_grad_norm_(params, grad_clip)
        grads = [p.grad for p in params if p.grad is not None]
        if not self.check or not grads:
            return None
        return nn.utils.get_total_norm(grads)

    def decide(self, step: int, loss: Tensor, norm: Tensor | None, rank: int) -> tuple[float, bool]:
        """(the step's loss, whether to apply its update); raises ``TrainingStopped``."""
        if not self.check:
            return loss.item(), True
        parts = [loss.detach().float()] + ([] if norm is None else [norm.detach().float()])
        values = torch.stack(parts).tolist()  # the step's one host sync
        value, gnorm = values[0], (values[1] if norm is not None else 0.0)
        if not (math.isfinite(value) and math.isfinite(gnorm)):
            self.bad += 1
            what = f"loss {value}" if not math.isfinite(value) else f"gradient norm {gnorm}"
            if self.bad >= self.max_bad:
                raise TrainingStopped(
                    f"training stopped at step {step}: {self.bad} steps in a row had a "
                    f"non-finite loss or gradient (this one: {what}); the weights were "
                    f"not updated by them (lower lr, or raise max_bad_steps)",
                    step,
                )
            if rank == 0:
                print(
                    f"train: step {step} skipped: non-finite {what}; weights, optimizer and "
                    f"EMA unchanged ({self.bad} in a row, stop at {self.max_bad})",
                    file=sys.stderr,
                    flush=True,
                )
            self._remember(value)
            return value, False
        if self.ratio is not None and value - self.ref > self.ratio * max(abs(self.ref), 1.0):
            raise TrainingStopped(
                f"training stopped at step {step}: loss {value:.4g} exceeds the reference "
                f"{self.ref:.4g} (lowest mean of {self.WINDOW} steps) by more than "
                f"max_loss_ratio={self.ratio:g} times its size: diverging (lower lr?)",
                step,
            )
        self.bad = 0
        self._remember(value)
        return value, True


def _check_finite_weights(step: int, path, model: nn.Module, ema: EMA, opt) -> None:
    """A save's last line of defence: weights, EMA and Adam state must be finite."""
    named = [("model", p) for p in model.parameters()]
    named += [("EMA", p) for p in ema.shadow.parameters()]
    named += [
        ("optimizer", v)
        for s in opt.state.values()
        for v in s.values()
        if isinstance(v, Tensor) and v.is_floating_point()
    ]
    ok = torch.stack([torch.isfinite(t).all() for _, t in named]).all()
    if not bool(ok):
        where = next(n for n, t in named if not bool(torch.isfinite(t).all()))
        raise TrainingStopped(
            f"refusing to save non-finite {where} weights at step {step} to {str(path)!r}; "
            f"the previous checkpoint is kept",
            step,
        )


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class CheckpointExistsError(FileExistsError):
    """A fresh run would replace an existing checkpoint (pass resume=True or overwrite=True)."""


def _check_data_order(order: str) -> None:
    if order not in DATA_ORDERS:
        raise ValueError(f"data_order must be one of {DATA_ORDERS}, got {order!r}")


def _check_int(name: str, v, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        what = "non-negative" if low == 0 else "positive"
        raise ValueError(f"{name} must be a {what} int, got {v!r}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The options of one :func:`train` run, checked when built: a bad value raises
    ``ValueError`` (or ``TypeError``) naming the option and what it expects.

    ``train(model, data, config=TrainConfig(steps=..., batch_size=..., generator=...))`` is
    the same as ``train(model, data, steps=..., ...)`` with the same keywords.

    Attributes:
        steps, batch_size: optimisation steps and (global) batch size.
        lr: Adam learning rate (the peak one under a schedule).
        lr_schedule, warmup_steps: the learning rate over the run, ``lr * lr_factor(step,
            steps, lr_schedule, warmup_steps)``: ``"constant"`` or ``"cosine"`` decay to 0,
            after a linear warm-up of ``warmup_steps`` (see ``lr_factor``).
        ema_decay: EMA decay (with warm-up, see ``EMA``).
        grad_clip: max global gradient norm, or ``None`` for no clipping.
        generator: ``torch.Generator`` (or int seed) for batches and the loss's noise.
        loss: ``"continuous"`` (``objectives.continuous_loss``) or a callable
            ``loss(model, x, generator=g)`` returning a (B,) tensor or a ``NegELBO``.
        progress: ``"auto"`` (default): a tqdm bar on stderr when it is a terminal, else
            one summary line at the end (a log file gets no carriage-return lines);
            ``True``: always the bar; ``False``: nothing. Loss shown every ``log_every``.
        checkpoint: path of the checkpoint (``ndmsolve.checkpoint``'s format: model and its
            configuration, EMA, optimizer, step, generators, global RNG states, losses),
            written atomically at the end and every ``checkpoint_every`` steps. Its folder
            is locked for the run (``FolderLockedError`` if another process holds it), and
            the temporary files of saves killed mid-write are removed at the start. A
            failed write raises ``CheckpointWriteError`` (one line; the previous file kept).
        resume: continue from ``checkpoint`` when it exists: bit-identical to an
            uninterrupted run on the same hardware. ``steps`` below the checkpoint's step
            is refused; equal to it, nothing is trained and the file is left as it is.
        overwrite: start afresh over an existing ``checkpoint``; without it (or
            ``resume``) an existing file raises ``CheckpointExistsError``.
        microbatches: split each batch into this many equal parts, each with its own noise
            stream (gradient accumulation); default 1, or the world size under
            torch.distributed, where rank r trains on parts r, r + W, ... with
            DistributedDataParallel. The same ``microbatches`` gives the same numbers
            (up to float summation order) on any number of processes.
        amp: ``"bf16"`` (or ``"fp16"``): the predictor's forward pass under autocast (the
            transform's JVP and the loss stay in the model's dtype), or ``None``.
        compile: ``torch.compile`` the predictor (for GPUs; the first steps compile).
        extra: more entries for the checkpoint (e.g. the command's configuration).
        on_log: called as ``on_log(step, mean_loss, images_per_s)`` every ``log_every``
            steps (on rank 0).
        time_proposal: importance sampling of t for ``loss="continuous"`` (see
            ``ndmsolve.time_proposal``): t ~ q, the diffusion term weighted by 1/q(t), so the
            loss and its gradient stay unbiased. An ``AdaptiveTimeProposal`` is refitted
            after every micro-batch from the integrand it saw, and checkpointed (under
            torch.distributed each rank refits from its own draws).
        data_order: how batches index a tensor ``data``: ``"random"`` (default), each
            step's indices drawn uniformly with replacement by ``generator``; ``"epoch"``,
            without replacement: every point once per epoch of N points, in a seeded order
            per epoch (a batch may straddle two epochs). Under torch.distributed the ranks
            split each global batch, so they never see the same point within an epoch.
        max_bad_steps: the non-finite policy. A step whose loss or global gradient norm
            (before clipping) is NaN or inf is skipped: no optimizer step, no EMA update,
            so weights, Adam state and EMA stay bit for bit as before (the step still counts
            for the learning-rate schedule and ``losses``); each skip prints one
            line with its step on stderr. ``max_bad_steps`` skips in a row raise
            ``TrainingStopped`` naming the step. The check costs one host sync per step
            (the one that reads the loss, now before the optimizer step), none per
            micro-batch; callable ``data`` adds one per step (each drawn batch is checked
            for NaN/inf, the error names the step), an adaptive ``time_proposal`` one per
            micro-batch (it learns from finite losses only); tensor ``data`` is checked once
            up front (the error names the first bad point). The model's own output checks
            (``NDM.check``) sync on their own.
            Before every checkpoint save the weights, EMA and Adam state are checked and a
            non-finite one is never written (``TrainingStopped``).
        max_loss_ratio: divergence guard, off by default. With the reference ``ref`` = the
            lowest mean loss over 10 consecutive finite steps so far, a step whose loss
            exceeds ``ref + max_loss_ratio * max(|ref|, 1)`` raises ``TrainingStopped``
            before its update (so ~``max_loss_ratio`` x ``ref`` for losses above 1 nat;
            ``|ref|`` because a negative ELBO may be negative).
    """

    steps: int
    batch_size: int
    generator: object
    lr: float = 2e-3
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    ema_decay: float = 0.999
    grad_clip: float | None = 1.0
    loss: Union[str, LossFn] = "continuous"
    progress: Union[bool, str] = "auto"
    log_every: int = 50
    checkpoint: PathLike | None = None
    checkpoint_every: int | None = None
    resume: bool = False
    microbatches: int | None = None
    amp: str | None = None
    compile: bool = False
    extra: dict | None = None
    on_log: Callable[[int, float, float], None] | None = None
    time_proposal: object = None
    data_order: str = "random"
    max_bad_steps: int = 3
    max_loss_ratio: float | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        self._check_schedule()
        self._check_checkpointing()
        self._check_run()

    def _check_schedule(self) -> None:
        _check_int("steps", self.steps, 0)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("log_every", self.log_every, 1)
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        _check_int("warmup_steps", self.warmup_steps, 0)
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip!r}")

    def _check_checkpointing(self) -> None:
        every = self.checkpoint_every
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"checkpoint_every must be a positive int or None, got {every!r}")
        if self.resume and self.checkpoint is None:
            raise ValueError("resume=True needs checkpoint=<path>")
        _check_int("max_bad_steps", self.max_bad_steps, 1)
        ratio = self.max_loss_ratio
        if ratio is not None and not (0 < ratio < math.inf):
            raise ValueError(f"max_loss_ratio must be positive and finite or None, got {ratio!r}")
        if self.resume and self.overwrite:
            raise ValueError("resume=True and overwrite=True exclude each other")

    def _check_run(self) -> None:
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise ValueError(f"amp must be None or one of {sorted(AMP_DTYPES)}, got {self.amp!r}")
        if self.microbatches is not None:
            _check_int("microbatches", self.microbatches, 1)
        if self.generator is None:
            raise TypeError(
                "generator is required: a torch.Generator or an int seed (runs reproduce)"
            )
        if self.time_proposal is not None and self.loss != "continuous":
            raise ValueError(f"time_proposal needs loss='continuous', got loss={self.loss!r}")
        _resolve_loss(self.loss)
        _check_data_order(self.data_order)
        if self.progress not in (True, False, "auto"):
            raise ValueError(f"progress must be True, False or 'auto', got {self.progress!r}")


def _accept_config(fn):
    """Let ``train`` take ``config=TrainConfig(...)`` instead of its keywords."""

    @functools.wraps(fn)
    def inner(model, data, *, config: TrainConfig | None = None, **options):
        if config is None:
            return fn(model, data, **options)
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if options:
            raise TypeError(
                f"train() got config= and the options {sorted(options)}: pass the options "
                f"in the TrainConfig or as keywords, not both"
            )
        return _fit(model, data, config)

    sig = inspect.signature(fn)
    config = inspect.Parameter(
        "config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="TrainConfig | None"
    )
    inner.__signature__ = sig.replace(parameters=[*sig.parameters.values(), config])
    return inner


@checked_keywords()
@_accept_config
def train(
    model: nn.Module,
    data,
    *,
    steps: int,
    batch_size: int,
    lr: float = 2e-3,
    lr_schedule: str = "constant",
    warmup_steps: int = 0,
    ema_decay: float = 0.999,
    grad_clip: float | None = 1.0,
    generator,
    loss: Union[str, LossFn] = "continuous",
    progress: Union[bool, str] = "auto",
    log_every: int = 50,
    checkpoint: PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    microbatches: int | None = None,
    amp: str | None = None,
    compile: bool = False,
    extra: dict | None = None,
    on_log: Callable[[int, float, float], None] | None = None,
    time_proposal=None,
    data_order: str = "random",
    max_bad_steps: int = 3,
    max_loss_ratio: float | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train ``model`` (an NDM, in place) on ``data`` with Adam and an EMA of the weights.

    Args:
        model: the NDM (any module the loss accepts); updated in place.
        data: a tensor (N, *shape) to draw batches from (see ``data_order``), or a
            callable ``data(n, generator=g) -> (n, *shape)`` for fresh draws (e.g.
            ``ndmsolve.data.checkerboard``).
        steps, ..., overwrite: the run's options, each described in :class:`TrainConfig`
            (which checks them); or ``config=TrainConfig(...)`` alone in their place.

    Returns:
        ``TrainResult(model, ema_model, losses)``; ``losses`` holds each step's mean loss
        over the whole (global) batch.

    SIGTERM and SIGINT (in the main thread; elsewhere no handler is installed): the first
    lets the step in flight finish (a step is not abandoned mid-way, so the saved state is
    that of a completed step), saves the checkpoint at that step (when one is given) and
    raises ``TrainingInterrupted`` (``.step``, ``.checkpoint``, ``.signal``); under
    torch.distributed the request rides on the loss's all-reduce, so every rank stops
    after the same step and they save together. A second signal during the save waits
    for it to finish; before the save begins it abandons the run at once (nothing more is
    saved; the checkpoint on disk is intact). The previous handlers are restored on return.
    """
    # Every parameter but the model and the data is an option (nothing else is bound yet).
    options = {k: v for k, v in locals().items() if k not in ("model", "data")}
    return _fit(model, data, TrainConfig(**options))


def _fit(model: nn.Module, data, config: TrainConfig) -> TrainResult:
    """Run ``config`` holding the checkpoint folder's lock (rank 0) and the SIGTERM/SIGINT
    handlers (``_guard.Interrupts``), both released when it returns or raises."""
    first = config.checkpoint is not None and ddist.rank() == 0
    where = Path(config.checkpoint).parent if config.checkpoint is not None else None
    with folder_lock(where, enabled=first), Interrupts() as interrupts:
        return _Run(model, data, config, interrupts).run()


def _trainable(model: nn.Module) -> list:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            "model has no trainable parameters (a model from nd.load_model is frozen: "
            "load it with nd.load_model(path, trainable=True) to fine-tune it)"
        )
    return params


def _with_proposal(loss, time_proposal):
    """The loss with importance-sampled t (``time_proposal``), or ``loss`` as given."""
    if time_proposal is None:
        return loss

    def proposed(model, x, generator):
        return continuous_loss(model, x, generator=generator, time_proposal=time_proposal)

    return proposed


def _speed_hooks(model: nn.Module, amp: str | None, compile: bool) -> list:
    """Autocast and ``torch.compile`` of the predictor; handles with ``remove()``."""
    hooks = _autocast_predictor(model, AMP_DTYPES[amp]) if amp is not None else []
    if compile:
        hooks.append(_compile_predictor(model))
    return hooks


class _Run:
    """One training run: set up from a :class:`TrainConfig`, then ``run()`` step by step
    (the micro-batches, the guarded update, logging, checkpoints, stop requests)."""

    def __init__(self, model: nn.Module, data, config: TrainConfig, interrupts: Interrupts):
        c = self.config = config
        self.model, self.interrupts = model, interrupts
        self.rank, self.world = ddist.rank(), ddist.world_size()
        if c.checkpoint is not None:
            _prepare_checkpoint(c.checkpoint, c.resume, c.overwrite, self.rank)
        self.microbatches = self.world if c.microbatches is None else c.microbatches
        generator = as_generator(c.generator)
        self.params = _trainable(model)
        if isinstance(data, Tensor) and data.is_floating_point():
            check_like_model(data, model, "data")
        _check_data(data)
        tp = c.time_proposal
        self.adaptive = tp is not None and hasattr(tp, "observe")
        loss_fn = _resolve_loss(_with_proposal(c.loss, tp))
        self.batches = Batches(
            data, c.batch_size, generator, self.microbatches, self.rank, self.world, c.data_order
        )
        self.objective = _Objective(model, loss_fn)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            dev = self.params[0].device
            self.objective = DistributedDataParallel(
                self.objective, device_ids=[dev] if dev.type == "cuda" else None
            )
        self.opt = torch.optim.Adam(self.params, lr=c.lr)
        self.ema = EMA(model, c.ema_decay)
        self.losses, self.start, bad = [], 0, 0
        if c.resume and Path(c.checkpoint).is_file():
            self.start, self.losses, bad = _resume(
                c.checkpoint,
                model,
                self.opt,
                self.ema,
                self.batches,
                tp if self.adaptive else None,
                c.data_order,
            )
        interrupts.kept_step = interrupts.step = self.start
        if self.start > c.steps:
            raise ValueError(
                f"checkpoint {str(c.checkpoint)!r} is at step {self.start}, beyond "
                f"steps={c.steps}: resume with steps >= {self.start}"
            )
        self.guard = StepGuard(c.max_bad_steps, c.max_loss_ratio, self.losses, bad)
        # Gradient = (1/K) Σ_k ∇(mean loss of part k); DDP averages over the W ranks: scale W/K.
        self.scale = self.world / self.microbatches

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        """All steps from ``start``, then the final save; the model is left in eval mode."""
        c = self.config
        auto_bar = c.progress == "auto" and _is_terminal(sys.stderr)
        bar_on = self.rank == 0 and (c.progress is True or auto_bar)
        from tqdm.auto import tqdm

        t_start = time.perf_counter()
        # After the EMA's copy, and undone at the end: the returned models stay plain.
        hooks = _speed_hooks(self.model, c.amp, c.compile)
        self.model.train()
        self.t_log = time.perf_counter()
        steps = range(self.start, c.steps)
        try:
            with tqdm(
                steps,
                initial=self.start,
                total=c.steps,
                disable=not bar_on,
                desc="train",
                dynamic_ncols=True,
                file=sys.stderr,
            ) as bar:
                for step in bar:
                    flags = self.step(step)
                    self.log(step, bar)
                    if c.checkpoint is not None and c.checkpoint_every:
                        if (step + 1) % c.checkpoint_every == 0:
                            self.save(step + 1)
                    _stop_if_asked(self.interrupts, flags, step + 1, c.checkpoint, self.save)
        finally:
            for h in hooks:
                h.remove()
        return self.finish(bar_on, t_start)

    def step(self, step: int) -> Tensor | None:
        """One optimisation step over this process's micro-batches; returns the stop
        requests summed over the ranks (None in one process)."""
        c = self.config
        self.opt.zero_grad(set_to_none=True)
        total = self.accumulate(self.batches.next(step))
        # Stop requests ride on the loss's all-reduce: no extra collective.
        reduced = ddist.all_reduce_sum(torch.cat([total.reshape(1), self.interrupts.flags(total)]))
        step_loss = reduced[0] / self.microbatches
        # Loss and gradient are the same on every rank, so every rank decides alike.
        norm = self.guard.grad_norm(self.params, c.grad_clip)
        value, apply = self.guard.decide(step, step_loss, norm, self.rank)
        self.losses.append(value)
        if apply:
            for group in self.opt.param_groups:
                group["lr"] = c.lr * lr_factor(step, c.steps, c.lr_schedule, c.warmup_steps)
            self.opt.step()
            self.ema.update(self.model)
        return reduced[1:] if self.world > 1 else None

    def accumulate(self, parts: list) -> Tensor:
        """Backward of every micro-batch (x_k, generator_k); returns the summed loss (0-dim)."""
        total = 0.0
        for j, (x, g) in enumerate(parts):
            sync = j == len(parts) - 1 or self.world == 1
            defer = self.world > 1 and not sync and hasattr(self.objective, "no_sync")
            ctx = self.objective.no_sync() if defer else contextlib.nullcontext()
            with ctx:
                value = self.objective(x, g)
                (value * self.scale).backward()
            # The proposal learns only from finite values (one more sync, adaptive only).
            if self.adaptive and bool(torch.isfinite(value)):
                inner = getattr(self.objective, "module", self.objective)
                self.config.time_proposal.observe(inner.last.diffusion)
            total = total + value.detach()
        return total

    def log(self, step: int, bar) -> None:
        """Every ``log_every`` steps and at the last: the bar's postfix and ``on_log``."""
        c = self.config
        if not ((step + 1) % c.log_every == 0 or step + 1 == c.steps):
            return
        recent = [v for v in self.losses[-c.log_every :] if math.isfinite(v)] or [math.nan]
        now = time.perf_counter()
        n_steps = min(c.log_every, step + 1 - self.start)
        ips = n_steps * c.batch_size / max(now - self.t_log, 1e-9)
        self.t_log = now
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.4g}", img_s=f"{ips:.0f}")
        if c.on_log is not None and self.rank == 0:
            c.on_log(step + 1, sum(recent) / len(recent), ips)

    def finish(self, bar_on: bool, t_start: float) -> TrainResult:
        """The final save, a pending stop request, the summary line; the result."""
        c = self.config
        if c.checkpoint is not None and self.interrupts.kept_step != c.steps:
            self.save(c.steps)
        if self.interrupts.signal is not None:  # it came during the last step or the final save
            raise TrainingInterrupted(c.steps, c.checkpoint, self.interrupts.signal)
        if c.progress == "auto" and not bar_on and self.rank == 0:
            recent = self.losses[-c.log_every :]
            mean = f"{sum(recent) / len(recent):.4g}" if recent else "n/a"
            print(
                f"train: {c.steps - self.start} steps in {time.perf_counter() - t_start:.1f} s, "
                f"loss {mean} (mean of the last {len(recent)})",
                file=sys.stderr,
                flush=True,
            )
        self.model.eval()
        return TrainResult(self.model, self.ema.shadow, self.losses)

    # ------------------------------------------------------------------ checkpoints
    def save(self, step: int) -> None:
        """Write the checkpoint at ``step`` (every rank takes part; rank 0 writes)."""
        with self.interrupts.saving(step, self.config.checkpoint):
            self._write(step)

    def _write(self, step: int) -> None:
        c = self.config
        _check_finite_weights(step, c.checkpoint, self.model, self.ema, self.opt)  # every rank
        # Every rank takes part: its global RNG and the generators it draws from.
        gens = self.batches.generators
        mine = {"rng": capture_rng(), "generators": [g.get_state() for g in gens]}
        per_rank = ddist.all_gather_objects(mine)
        rngs = [r["rng"] for r in per_rank]
        if self.rank == 0:
            save_checkpoint(
                c.checkpoint,
                model=self.model,
                ema=self.ema,
                optimizer=self.opt,
                generator=gens,
                generators_per_rank=[r["generators"] for r in per_rank],
                step_guard={"bad_steps": self.guard.bad},
                step=step,
                losses=self.losses,
                rng=rngs[0],
                rng_per_rank=rngs,
                microbatches=self.microbatches,
                world_size=self.world,
                lr_schedule={"lr": c.lr, "schedule": c.lr_schedule, "warmup_steps": c.warmup_steps},
                **({"time_proposal": c.time_proposal} if self.adaptive else {}),
                data_order=c.data_order,
                epoch_seed=getattr(self.batches, "epoch_seed", None),
                **(c.extra or {}),
            )
        ddist.barrier()


def _prepare_checkpoint(checkpoint, resume: bool, overwrite: bool, rank: int) -> None:
    """Refuse to replace a checkpoint by accident; remove the temporary files of killed
    saves (rank 0, which holds the folder's lock, so no concurrent writer owns them)."""
    path = Path(checkpoint)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {str(path)!r} is a folder; give a file path")
    if path.exists() and not resume and not overwrite:
        raise CheckpointExistsError(
            f"checkpoint {str(path)!r} exists; pass resume=True to continue it or "
            f"overwrite=True to start afresh and replace it"
        )
    if rank == 0:
        for tmp in stale_temp_files(path):
            tmp.unlink(missing_ok=True)


def _stop_if_asked(interrupts: Interrupts, flags, step: int, checkpoint, save) -> None:
    """After ``step`` completed: when any rank got a signal (``flags``: the (SIGINT, SIGTERM)
    requests summed over the ranks, or None in one process), save the checkpoint (unless
    just saved) and raise ``TrainingInterrupted`` on every rank, all at the same step.

    Reading ``flags`` is a host sync per step under torch.distributed (the loss's
    ``.item()`` is one already); in one process only Python state is read.
    """
    interrupts.step = step
    agreed = interrupts.signal if flags is None else Interrupts.decode(*flags.tolist())
    if agreed is None:
        return
    interrupts.signal = interrupts.signal or agreed
    if checkpoint is not None and interrupts.kept_step != step:
        save(step)
    raise TrainingInterrupted(step, checkpoint, agreed)


def _resume(checkpoint, model, opt, ema, batches, time_proposal, data_order) -> tuple:
    """Restore a run from ``checkpoint``, each rank its own generators and RNG states;
    returns (step, losses, non-finite steps in a row). Checks the process count first."""
    rank, world = ddist.rank(), ddist.world_size()
    where = f"checkpoint {str(checkpoint)!r}"
    state = read_checkpoint(checkpoint)
    rngs = state.get("rng_per_rank") or [state["rng"]]
    if len(rngs) != world:
        raise CheckpointError(
            f"{where} was written by {len(rngs)} processes; resume it with the same number "
            f"(this run has {world})"
        )
    stored_order = state.get("data_order", "random")
    if stored_order != data_order:
        raise ValueError(
            f"{where} was trained with data_order={stored_order!r}; "
            f"resume it with the same (this run has {data_order!r})"
        )
    more = {"time_proposal": time_proposal} if time_proposal is not None else {}
    restore_entries(state, checkpoint, model=model, optimizer=opt, ema=ema, **more)
    per_rank = state.get("generators_per_rank")
    if per_rank is None and world > 1 and rank == 0:
        print(
            f"train: {where} predates per-rank generator states: ranks other than 0 "
            f"restart their noise streams, so this resume is not bit-exact",
            file=sys.stderr,
            flush=True,
        )
    gens = {"generator": per_rank[rank] if per_rank is not None else state["generator"]}
    restore_entries(gens, checkpoint, generator=batches.generators)
    if data_order == "epoch":
        batches.set_epoch_seed(int(state["epoch_seed"]))
    # Dropout and other global-RNG draws continue where they stopped, on every rank.
    restore_rng(rngs[rank])
    guard = state.get("step_guard") or {}
    return int(state["step"]), list(state["losses"]), int(guard.get("bad_steps", 0))
