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
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Union

import torch
from torch import Tensor, nn

from ._checks import as_generator, check_like_model, checked_keywords
from .checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint

__all__ = [
    "EMA",
    "TrainResult",
    "train",
    "lr_factor",
    "LR_SCHEDULES",
    "DATA_ORDERS",
    "save_checkpoint",
    "load_checkpoint",
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
        from .objectives import continuous_loss

        return continuous_loss
    raise ValueError(
        f"loss must be 'continuous' or a callable loss(model, x, generator=g) -> (B,) tensor or NegELBO, "
        f"got {loss!r}"
    )


class _Batches:
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
        if order not in DATA_ORDERS:
            raise ValueError(f"data_order must be one of {DATA_ORDERS}, got {order!r}")
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
        if self.K == 1:
            return [(self.data(self.batch_size, generator=g), g)]
        x = self.data(self.batch_size, generator=g)
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


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@checked_keywords()
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
) -> TrainResult:
    """Train ``model`` (an NDM, in place) on ``data`` with Adam and an EMA of the weights.

    Args:
        model: the NDM (any module the loss accepts); updated in place.
        data: a tensor (N, *shape) to draw batches from (see ``data_order``), or a
            callable ``data(n, generator=g) -> (n, *shape)`` for fresh draws (e.g.
            ``ndmsolve.data.checkerboard``).
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
            written atomically at the end and every ``checkpoint_every`` steps.
        resume: continue from ``checkpoint`` when it exists: bit-identical to an
            uninterrupted run on the same hardware.
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

    Returns:
        ``TrainResult(model, ema_model, losses)``; ``losses`` holds each step's mean loss
        over the whole (global) batch.
    """
    from . import distributed as ddist

    for name, v in (("steps", steps), ("batch_size", batch_size), ("log_every", log_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "steps" else 1):
            raise ValueError(
                f"{name} must be a {'non-negative' if name == 'steps' else 'positive'} int, got {v!r}"
            )
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be positive or None, got {grad_clip!r}")
    if checkpoint_every is not None and (
        not isinstance(checkpoint_every, int) or checkpoint_every < 1
    ):
        raise ValueError(
            f"checkpoint_every must be a positive int or None, got {checkpoint_every!r}"
        )
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<path>")
    if amp is not None and amp not in AMP_DTYPES:
        raise ValueError(f"amp must be None or one of {sorted(AMP_DTYPES)}, got {amp!r}")
    rank, world = ddist.rank(), ddist.world_size()
    if microbatches is None:
        microbatches = world
    if isinstance(microbatches, bool) or not isinstance(microbatches, int) or microbatches < 1:
        raise ValueError(f"microbatches must be a positive int, got {microbatches!r}")
    if generator is None:
        raise TypeError("generator is required: a torch.Generator or an int seed (runs reproduce)")
    generator = as_generator(generator)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            "model has no trainable parameters (a model from nd.load_model is frozen: "
            "load it with nd.load_model(path, trainable=True) to fine-tune it)"
        )
    if isinstance(data, Tensor) and data.is_floating_point():
        check_like_model(data, model, "data")
    if time_proposal is not None:
        if loss != "continuous":
            raise ValueError(f"time_proposal needs loss='continuous', got loss={loss!r}")
        from .objectives import continuous_loss

        def loss(model, x, generator):
            return continuous_loss(model, x, generator=generator, time_proposal=time_proposal)

    adaptive = time_proposal is not None and hasattr(time_proposal, "observe")
    loss_fn = _resolve_loss(loss)
    batches = _Batches(data, batch_size, generator, microbatches, rank, world, data_order)
    objective = _Objective(model, loss_fn)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        dev = params[0].device
        objective = DistributedDataParallel(
            objective, device_ids=[dev] if dev.type == "cuda" else None
        )
    opt = torch.optim.Adam(params, lr=lr)
    ema = EMA(model, ema_decay)
    # After the EMA's copy, and undone at the end: the returned models stay plain.
    hooks = _autocast_predictor(model, AMP_DTYPES[amp]) if amp is not None else []
    if compile:
        hooks.append(_compile_predictor(model))
    losses: list = []
    start = 0
    if resume and Path(checkpoint).is_file():
        more = {"time_proposal": time_proposal} if adaptive else {}
        state = load_checkpoint(
            checkpoint, model=model, optimizer=opt, ema=ema, generator=batches.generators, **more
        )
        start, losses = int(state["step"]), list(state["losses"])
        stored_order = state.get("data_order", "random")
        if stored_order != data_order:
            raise ValueError(
                f"checkpoint {str(checkpoint)!r} was trained with data_order={stored_order!r}; "
                f"resume it with the same (this run has {data_order!r})"
            )
        if data_order == "epoch":
            batches.set_epoch_seed(int(state["epoch_seed"]))
        # Dropout and other global-RNG draws continue where they stopped, on every rank.
        rngs = state.get("rng_per_rank") or [state["rng"]]
        if len(rngs) != world:
            raise ValueError(
                f"checkpoint {str(checkpoint)!r} was written by {len(rngs)} processes; "
                f"resume it with the same number (this run has {world})"
            )
        restore_rng(rngs[rank])

    def save(step: int) -> None:
        rngs = ddist.all_gather_objects(capture_rng())  # every rank takes part
        if rank == 0:
            save_checkpoint(
                checkpoint,
                model=model,
                ema=ema,
                optimizer=opt,
                generator=batches.generators,
                step=step,
                losses=losses,
                rng=rngs[0],
                rng_per_rank=rngs,
                microbatches=microbatches,
                world_size=world,
                lr_schedule={"lr": lr, "schedule": lr_schedule, "warmup_steps": warmup_steps},
                **({"time_proposal": time_proposal} if adaptive else {}),
                data_order=data_order,
                epoch_seed=getattr(batches, "epoch_seed", None),
                **(extra or {}),
            )
        ddist.barrier()

    if progress not in (True, False, "auto"):
        raise ValueError(f"progress must be True, False or 'auto', got {progress!r}")
    bar_on = rank == 0 and (progress is True or (progress == "auto" and _is_terminal(sys.stderr)))
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    model.train()
    # Gradient = (1/K) Σ_k ∇(mean loss of part k); DDP averages over the W ranks, so scale by W/K.
    scale = world / microbatches
    t_log = time.perf_counter()
    try:
        with tqdm(
            range(start, steps),
            initial=start,
            total=steps,
            disable=not bar_on,
            desc="train",
            dynamic_ncols=True,
            file=sys.stderr,
        ) as bar:
            for step in bar:
                parts = batches.next(step)
                opt.zero_grad(set_to_none=True)
                total = 0.0
                for j, (x, g) in enumerate(parts):
                    sync = j == len(parts) - 1 or world == 1
                    defer = world > 1 and not sync and hasattr(objective, "no_sync")
                    ctx = objective.no_sync() if defer else contextlib.nullcontext()
                    with ctx:
                        value = objective(x, g)
                        if not torch.isfinite(value):
                            raise FloatingPointError(f"loss became {value.item()} at step {step}")
                        (value * scale).backward()
                    if adaptive:
                        inner = getattr(objective, "module", objective)
                        time_proposal.observe(inner.last.diffusion)
                    total = total + value.detach()
                step_loss = ddist.all_reduce_sum(total.reshape(1))[0] / microbatches
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(params, grad_clip)
                for group in opt.param_groups:
                    group["lr"] = lr * lr_factor(step, steps, lr_schedule, warmup_steps)
                opt.step()
                ema.update(model)
                losses.append(step_loss.item())
                if (step + 1) % log_every == 0 or step + 1 == steps:
                    recent = losses[-log_every:]
                    now = time.perf_counter()
                    n_steps = min(log_every, step + 1 - start)
                    ips = n_steps * batch_size / max(now - t_log, 1e-9)
                    t_log = now
                    bar.set_postfix(loss=f"{sum(recent) / len(recent):.4g}", img_s=f"{ips:.0f}")
                    if on_log is not None and rank == 0:
                        on_log(step + 1, sum(recent) / len(recent), ips)
                if (
                    checkpoint is not None
                    and checkpoint_every
                    and (step + 1) % checkpoint_every == 0
                ):
                    save(step + 1)
    finally:
        for h in hooks:
            h.remove()
    if checkpoint is not None:
        save(steps)
    if progress == "auto" and not bar_on and rank == 0:
        recent = losses[-log_every:]
        mean = f"{sum(recent) / len(recent):.4g}" if recent else "n/a"
        print(
            f"train: {steps - start} steps in {time.perf_counter() - t_start:.1f} s, "
            f"loss {mean} (mean of the last {len(recent)})",
            file=sys.stderr,
            flush=True,
        )
    model.eval()
    return TrainResult(model, ema.shadow, losses)
