"""Training loop for NDMs: Adam, an EMA of the weights, gradient clipping, seeded batches,
atomic checkpoints.

    result = train(model, data, steps=2000, batch_size=256, generator=torch.Generator().manual_seed(0))
    result.ema_model    # the averaged weights: use these to sample and evaluate
    result.losses       # mean negative ELBO (nats per sample) of every step's batch

Same generator seed, same data, same model initialisation → identical losses.
"""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Union

import torch
from torch import Tensor, nn

from .checkpoint import load_checkpoint, restore_rng, save_checkpoint

__all__ = ["EMA", "TrainResult", "train", "lr_factor", "LR_SCHEDULES", "save_checkpoint", "load_checkpoint"]

LR_SCHEDULES = ("constant", "cosine")

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
        return {"shadow": self.shadow.state_dict(), "num_updates": self.num_updates, "decay": self.decay,
                "warmup": self.warmup}

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


def _batch_sampler(data, batch_size: int, generator: torch.Generator) -> Callable[[], Tensor]:
    if isinstance(data, Tensor):
        if data.ndim < 2 or data.shape[0] < 1:
            raise ValueError(f"data must be a tensor of shape (N, *shape) with N >= 1, got {tuple(data.shape)}")
        if not data.is_floating_point():
            raise TypeError(f"data must be floating (map images with to_model_range), got dtype {data.dtype}")
        n = data.shape[0]
        # Indices on the generator's device; sampling with replacement keeps every step iid.
        return lambda: data[torch.randint(0, n, (batch_size,), generator=generator, device=generator.device)
                            .to(data.device)]
    if callable(data):
        return lambda: data(batch_size, generator=generator)
    raise TypeError(f"data must be a tensor (N, *shape) or a callable data(n, generator=g), got {type(data).__name__}")


def _as_generator(generator) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise TypeError(f"generator must be a torch.Generator or an int seed, got {type(generator).__name__}")


def _total(out) -> Tensor:
    total = getattr(out, "total", out)  # NegELBO or a plain tensor
    if not isinstance(total, Tensor):
        raise TypeError(f"loss must return a tensor or an object with .total, got {type(out).__name__}")
    return total.mean()


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
    grad_clip: Optional[float] = 1.0,
    generator,
    loss: Union[str, LossFn] = "continuous",
    progress: bool = True,
    log_every: int = 50,
    checkpoint: Optional[PathLike] = None,
    checkpoint_every: Optional[int] = None,
    resume: bool = False,
) -> TrainResult:
    """Train ``model`` (an NDM, in place) on ``data`` with Adam and an EMA of the weights.

    Args:
        model: the NDM (any module the loss accepts); updated in place.
        data: a tensor (N, *shape) to draw batches from (with replacement, by
            ``generator``), or a callable ``data(n, generator=g) -> (n, *shape)`` for
            fresh draws (e.g. ``ndmsolve.data.checkerboard``).
        steps, batch_size: optimisation steps and batch size.
        lr: Adam learning rate (the peak one under a schedule).
        lr_schedule, warmup_steps: the learning rate over the run, ``lr * lr_factor(step,
            steps, lr_schedule, warmup_steps)``: ``"constant"`` or ``"cosine"`` decay to 0,
            after a linear warm-up of ``warmup_steps`` (see ``lr_factor``).
        ema_decay: EMA decay (with warm-up, see ``EMA``).
        grad_clip: max global gradient norm, or ``None`` for no clipping.
        generator: ``torch.Generator`` (or int seed) for batches and the loss's noise.
        loss: ``"continuous"`` (``objectives.continuous_loss``) or a callable
            ``loss(model, x, generator=g)`` returning a (B,) tensor or a ``NegELBO``.
        progress: show a tqdm bar (loss shown every ``log_every`` steps).
        checkpoint: path to save model, EMA, optimizer, generator state and losses at the
            end (and every ``checkpoint_every`` steps); writes are atomic.
        resume: continue from ``checkpoint`` when it exists (bit-identical to an
            uninterrupted run).

    Returns:
        ``TrainResult(model, ema_model, losses)``.
    """
    for name, v in (("steps", steps), ("batch_size", batch_size), ("log_every", log_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "steps" else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name == 'steps' else 'positive'} int, got {v!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be positive or None, got {grad_clip!r}")
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be a positive int or None, got {checkpoint_every!r}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<path>")
    generator = _as_generator(generator)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    if isinstance(data, Tensor) and data.is_floating_point() and data.dtype != params[0].dtype:
        raise TypeError(f"data has dtype {data.dtype} but the model's parameters are {params[0].dtype}: "
                        f"convert one of them (data.to(...) or model.to(...))")
    loss_fn = _resolve_loss(loss)
    next_batch = _batch_sampler(data, batch_size, generator)
    opt = torch.optim.Adam(params, lr=lr)
    ema = EMA(model, ema_decay)
    losses: list = []
    start = 0
    if resume and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint, model=model, optimizer=opt, ema=ema, generator=generator)
        start, losses = int(state["step"]), list(state["losses"])
        restore_rng(state["rng"])  # dropout and other global-RNG draws continue where they stopped

    def save(step: int) -> None:
        save_checkpoint(checkpoint, model=model, ema=ema, optimizer=opt, generator=generator, step=step,
                        losses=losses)

    from tqdm.auto import tqdm

    model.train()
    with tqdm(range(start, steps), initial=start, total=steps, disable=not progress, desc="train",
              dynamic_ncols=True) as bar:
        for step in bar:
            x = next_batch()
            value = _total(loss_fn(model, x, generator=generator))
            if not torch.isfinite(value):
                raise FloatingPointError(f"loss became {value.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            value.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(params, grad_clip)
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(step, steps, lr_schedule, warmup_steps)
            opt.step()
            ema.update(model)
            losses.append(value.item())
            if (step + 1) % log_every == 0 or step + 1 == steps:
                recent = losses[-log_every:]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.4g}")
            if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
                save(step + 1)
    if checkpoint is not None:
        save(steps)
    model.eval()
    return TrainResult(model, ema.shadow, losses)
