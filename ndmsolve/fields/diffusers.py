r"""A diffusers model in ndmsolve: the adapter, and the sampling grid of a diffusers scheduler.

diffusers is an optional extra (``pip install ndmsolve[diffusers]``); it is imported only
when a function here needs it. No weights are ever downloaded here.

    import ndmsolve as nd
    model = nd.from_diffusers(unet, scheduler)           # an NDM, transform None
    out = nd.sample(model, 16, z1=noise, **nd.diffusers_grid(scheduler, 10))
    # out.samples equals diffusers' own loop from the same noise:
    #   scheduler.set_timesteps(10); z = noise
    #   for k in scheduler.timesteps: z = scheduler.step(unet(z, k).sample, k, z).prev_sample
    bpd = nd.bits_per_dim(model, images)                 # likelihoods, NFE sweeps, ...

**Time.** ``DiscreteSchedule(scheduler.alphas_cumprod)``: t = k/(K−1), exact at integer
timesteps k. The predictor calls the network at k = t (K−1), snapped to the nearest
integer within 1e-4 (t = 799/999 in float32 gives 798.99994), so the network sees
diffusers' own timesteps.

**Predictions.** ``prediction_type`` ``"epsilon"``: x̂ = (z − σ ε̂)/α; ``"v_prediction"``:
x̂ = α z − σ v̂; ``"sample"``: x̂ = the output. Then, as the scheduler's configuration says
(or as overridden): ``clip_sample`` clamps x̂ to ±``clip_sample_range``; ``thresholding``
is dynamic thresholding (Imagen; diffusers' ``_threshold_sample``): per sample, s = the
``dynamic_thresholding_ratio`` quantile of |x̂| clamped to [1, ``sample_max_value``],
x̂ ← clamp(x̂, −s, s)/s.

**Fine-tuning a pretrained model into an NDM** (a learned forward process F_φ on top of
the pretrained denoiser; F_φ starts at the identity so the NDM starts as the pretrained
diffusion, and ``train`` then updates both):

    pred = nd.from_diffusers(unet, scheduler).predictor      # DiffusersPredictor
    net = nd.UNet(...)                                       # or any net(x, t) -> x's shape
    ndm = nd.NDM(pred, nd.ResidualTransform(net), pred.schedule, data_shape=(C, H, W))
    nd.train(ndm, images, steps=..., batch_size=..., lr=1e-4, generator=0)

``ResidualTransform`` gives F(x, t) = x + t·NN(x, t) (F(x, 0) = x); zero its last layer
for an exact identity start. The predictor's x̂ keeps the pretrained parametrisation, so
the network keeps seeing the inputs it was trained on. Train in float32 with the UNet's
parameters; the schedule's tables stay float64 until the model is cast.

**Grids** (``diffusers_grid``): the keyword arguments of ``nd.sample`` that repeat a
scheduler's step sequence (``timestep_spacing``, ``steps_offset``, ``final_sigmas_type``,
``set_alpha_to_one``, ``lower_order_final``, ``euler_at_final``, ``solver_order``,
``solver_type``). Supported: ``DDIMScheduler`` (η = 0), ``DPMSolverMultistepScheduler``
(``algorithm_type="dpmsolver++"``), ``UniPCMultistepScheduler`` (``predict_x0=True``).
Not reproducible, hence a ValueError naming the option: Karras/exponential/beta/Lu/flow
σ's (the network is called at a rounded timestep that is not the step's noise level),
stochastic or noise-prediction algorithms, UniPC's ``solver_p`` and ``disable_corrector``,
DDIM steps whose next timestep is not the one it stepped to (``timestep_spacing=
"linspace"``: diffusers steps k → k − K/N and then calls the network at another k).
One case matches only in part: DDIM with ``clip_sample`` (its default) or thresholding
re-uses the unclipped ε̂ for the direction unless ``step(..., use_clipped_model_output=
True)``; ndmsolve's ``ddim`` takes both from the clipped x̂ (diffusers' Glide form), so it
equals diffusers' loop when that flag is set or when nothing is clipped.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..config import configurable
from ..schedules import DiscreteSchedule
from ..tensors import bcast

__all__ = ["DiffusersPredictor", "from_diffusers", "diffusers_grid", "PREDICTION_TYPES"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
#: a float timestep this close to an integer is that integer (float32 round-off of t·(K−1))
SNAP = 1e-4


def _diffusers():
    try:
        import diffusers
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "this needs diffusers: pip install 'ndmsolve[diffusers]' (or diffusers>=0.30)"
        ) from e
    return diffusers


def threshold_sample(x: Tensor, ratio: float, max_value: float) -> Tensor:
    """Dynamic thresholding of x (B, ...) per sample (diffusers' ``_threshold_sample``)."""
    flat = x.reshape(x.shape[0], -1)
    work = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
    s = torch.quantile(work.abs(), ratio, dim=1).clamp(min=1, max=max_value).unsqueeze(1)
    return (torch.clamp(work, -s, s) / s).to(x.dtype).reshape(x.shape)


@configurable
class DiffusersPredictor(nn.Module):
    """x̂_θ(z, t) from a diffusers denoiser ``unet(z, k).sample`` (module docstring).

    Args:
        network: the denoiser ``network(z, k)`` returning z's shape (or an object with it
            as ``.sample``, as diffusers models do): an ``nn.Module``, or a dict
            ``{"class": name, "config": unet.config}`` describing a diffusers model to
            build with fresh weights (how a checkpoint stores one; ``from_diffusers``
            wraps the given network itself).
        schedule: the ``DiscreteSchedule`` of the scheduler's ``alphas_cumprod`` (share it
            with the NDM).
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.
        clip_sample, clip_sample_range: clamp x̂ to ±range.
        thresholding, dynamic_thresholding_ratio, sample_max_value: dynamic thresholding.

    ``forward(z, t)``: z (B, C, H, W), t (B,) in [0, 1] -> x̂ (B, C, H, W). A network with
    twice z's channels (learned variance) has the extra channels dropped, as diffusers'
    schedulers do.
    """

    def __init__(
        self,
        network,
        schedule: DiscreteSchedule,
        prediction_type: str = "epsilon",
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
    ):
        super().__init__()
        if not isinstance(schedule, DiscreteSchedule):
            raise TypeError(f"schedule must be a DiscreteSchedule, got {type(schedule).__name__}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}"
            )
        if not 0.0 < float(dynamic_thresholding_ratio) <= 1.0:
            raise ValueError(
                f"dynamic_thresholding_ratio must be in (0, 1], got {dynamic_thresholding_ratio!r}"
            )
        for name, v in (
            ("clip_sample_range", clip_sample_range),
            ("sample_max_value", sample_max_value),
        ):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        self.unet = network if isinstance(network, nn.Module) else _build_network(network)
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.clip_sample, self.clip_sample_range = bool(clip_sample), float(clip_sample_range)
        self.thresholding = bool(thresholding)
        self.dynamic_thresholding_ratio = float(dynamic_thresholding_ratio)
        self.sample_max_value = float(sample_max_value)

    def timesteps(self, t: Tensor) -> Tensor:
        """diffusers' timesteps k = t (K−1), (B,), snapped to integers within ``SNAP``."""
        k = self.schedule.timestep(t)
        near = torch.round(k)
        return torch.where((k - near).abs() <= SNAP, near, k)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        out = self.unet(z, self.timesteps(t))
        out = getattr(out, "sample", out)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.shape != z.shape and out.ndim > 1 and out.shape[1] == 2 * z.shape[1]:
            out = out[:, : z.shape[1]]  # learned variance: its channels are not x̂'s
        if self.prediction_type == "sample":
            x = out
        else:
            alpha, sigma = (bcast(v, z) for v in self.schedule.alpha_sigma(t))
            if self.prediction_type == "epsilon":
                x = (z - sigma * out) / alpha
            else:
                x = alpha * z - sigma * out
        if self.thresholding:
            x = threshold_sample(x, self.dynamic_thresholding_ratio, self.sample_max_value)
        elif self.clip_sample:
            x = x.clamp(-self.clip_sample_range, self.clip_sample_range)
        return x


def _build_network(spec) -> nn.Module:
    """A fresh diffusers model from ``{"class": name, "config": dict}``."""
    if not (isinstance(spec, dict) and set(spec) == {"class", "config"}):
        raise TypeError(
            "network must be an nn.Module or a dict {'class': <diffusers model class name>, "
            f"'config': <its config>}}, got {type(spec).__name__}"
        )
    diffusers = _diffusers()
    cls = getattr(diffusers, str(spec["class"]), None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin)):
        raise ValueError(
            f"network['class'] must name a diffusers model class, got {spec['class']!r}"
        )
    if not isinstance(spec["config"], dict):
        raise TypeError(f"network['config'] must be a dict, got {type(spec['config']).__name__}")
    return cls.from_config(spec["config"])


def _is_diffusers_model(net: nn.Module) -> bool:
    try:
        import diffusers
    except ImportError:
        return False
    return isinstance(net, diffusers.ModelMixin) and hasattr(net, "config")


def _config(scheduler) -> dict:
    cfg = getattr(scheduler, "config", None)
    if cfg is None or not hasattr(scheduler, "alphas_cumprod"):
        raise TypeError(
            f"scheduler must be a diffusers scheduler (with .config and .alphas_cumprod), "
            f"got {type(scheduler).__name__}"
        )
    return dict(cfg)


def from_diffusers(
    unet: nn.Module,
    scheduler,
    *,
    clip_sample: bool | None = None,
    thresholding: bool | None = None,
    data_shape: tuple | None = None,
):
    """An ``nd.NDM`` (transform None) from a diffusers denoiser and its scheduler.

    Args:
        unet: a diffusers model called as ``unet(z, k).sample`` (e.g. ``UNet2DModel``), or
            any module ``unet(z, k)`` returning z's shape; used as it is (not copied): its
            dtype and device are the NDM's.
        scheduler: the scheduler it was trained with: its ``alphas_cumprod`` give the
            ``DiscreteSchedule``, its configuration the prediction type and clipping.
        clip_sample, thresholding: override the scheduler's settings (None: as configured;
            schedulers without them: off).
        data_shape: one sample's shape; default (in_channels, size, size) from
            ``unet.config`` where it says so.

    Returns:
        ``NDM(DiffusersPredictor, None, DiscreteSchedule)``; ``model.predictor.schedule`` is
        ``model.schedule``.
    """
    from ..process import NDM

    if not isinstance(unet, nn.Module):
        raise TypeError(f"unet must be a diffusers model (nn.Module), got {type(unet).__name__}")
    cfg = _config(scheduler)
    for name, value in (("clip_sample", clip_sample), ("thresholding", thresholding)):
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{name} must be True, False or None, got {value!r}")
    ptype = cfg.get("prediction_type", "epsilon")
    if ptype not in PREDICTION_TYPES:
        raise ValueError(
            f"the scheduler's prediction_type must be one of {PREDICTION_TYPES}, got {ptype!r}"
        )
    schedule = DiscreteSchedule(scheduler.alphas_cumprod.detach().to("cpu", torch.float64))
    options = dict(
        prediction_type=ptype,
        clip_sample=cfg.get("clip_sample", False) if clip_sample is None else clip_sample,
        clip_sample_range=cfg.get("clip_sample_range", 1.0),
        thresholding=cfg.get("thresholding", False) if thresholding is None else thresholding,
        dynamic_thresholding_ratio=cfg.get("dynamic_thresholding_ratio", 0.995),
        sample_max_value=cfg.get("sample_max_value", 1.0),
    )
    unet_config = dict(getattr(unet, "config", None) or {})
    if _is_diffusers_model(unet):
        spec = {"class": type(unet).__name__, "config": unet_config}
        with torch.device("meta"):  # the structure only (for checkpoints): unet replaces it
            pred = DiffusersPredictor(spec, schedule, **options)
        pred.unet = unet
    else:
        pred = DiffusersPredictor(unet, schedule, **options)
    if data_shape is None:
        data_shape = _data_shape(unet_config)
    return NDM(pred, None, schedule, data_shape=data_shape)


def _data_shape(cfg: dict) -> tuple | None:
    size, ch = cfg.get("sample_size"), cfg.get("in_channels")
    if ch is None or size is None:
        return None
    size = (size, size) if isinstance(size, int) else tuple(size)
    return (int(ch), *size)


# --------------------------------------------------------------------------- grids
_UNSUPPORTED_SIGMAS = (
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "use_lu_lambdas",
    "use_flow_sigmas",
    "use_dynamic_shifting",
)


def _timesteps(scheduler, steps: int) -> list[int]:
    """The scheduler's own timesteps for ``steps`` (set on a copy: the caller's is untouched)."""
    clone = type(scheduler).from_config(scheduler.config)
    clone.set_timesteps(steps)
    return [int(k) for k in clone.timesteps.tolist()]


def _reject(cfg: dict, cls: str, checks: dict) -> None:
    for name, (bad, why) in checks.items():
        if bad(cfg.get(name)):
            raise ValueError(f"{cls} with {name}={cfg.get(name)!r} cannot be reproduced: {why}")


def _times(ks: list[int], K: int) -> list[float]:
    return [k / (K - 1) for k in ks]


def _ddim_grid(scheduler, cfg: dict, steps: int) -> dict:
    K = int(cfg["num_train_timesteps"])
    ks = _timesteps(scheduler, steps)
    stride = K // steps  # diffusers' DDIM steps k -> k - K // N whatever the spacing
    for a, b in zip(ks[:-1], ks[1:]):
        if a - stride != b:
            raise ValueError(
                f"DDIMScheduler with timestep_spacing={cfg.get('timestep_spacing')!r} at "
                f"{steps} steps steps from k={a} to k={a - stride} and then calls the "
                f"network at k={b}: no time grid reproduces that"
            )
    times, last = _times(ks, K), ks[-1] - stride
    if last >= 0:
        times.append(last / (K - 1))
        denoise = False
    elif cfg.get("set_alpha_to_one", True):
        denoise = True  # ᾱ = 1: the last step returns x̂
    else:
        denoise = False  # ᾱ_0: a step to t = 0 (none when already there: identity)
        if ks[-1] > 0:
            times.append(0.0)
    return DiffusersGrid(
        "ddim", grid=torch.tensor(times, dtype=torch.float64), denoise=denoise, eta=0.0
    )


def _multistep_grid(scheduler, cfg: dict, steps: int, unipc: bool) -> dict:
    K = int(cfg["num_train_timesteps"])
    order, lof = int(cfg.get("solver_order", 2)), bool(cfg.get("lower_order_final", True))
    ks = _timesteps(scheduler, steps)
    N, zero = len(ks), cfg.get("final_sigmas_type", "zero") == "zero"
    times = _times(ks, K) + ([] if zero else [0.0])  # sigma_min: the sigma of k = 0
    if unipc:
        names = {1: "unipc_1m", 2: "unipc_2m", 3: "unipc_3m"}
        if zero and not lof and order > 1:
            raise ValueError(
                "UniPCMultistepScheduler with lower_order_final=False and final_sigmas_type="
                "'zero' takes a higher-order step to sigma = 0 (divides by r = 0): use "
                "lower_order_final=True or final_sigmas_type='sigma_min'"
            )
        policy = ("diffusers" if zero else "always") if lof else False
    else:
        names = {1: "ddim", 2: "dpmpp_2m", 3: "dpmpp_3m"}
        low = lof and N < 15  # DPMSolverMultistep lowers the last two steps below 15
        if zero:  # the last step is x̂ whatever lower_order_final says
            policy = "diffusers" if low else False
        elif low:
            policy = True
        elif cfg.get("euler_at_final", False):
            policy = tuple([order] * (N - 1) + [1])
        else:
            policy = False
    if order not in names:
        raise ValueError(f"solver_order must be 1, 2 or 3 here, got {order}")
    out = DiffusersGrid(names[order], grid=torch.tensor(times, dtype=torch.float64), denoise=zero)
    if names[order] == "ddim":
        out["eta"] = 0.0
    else:
        out.update(lower_order_final=policy, solver_type=cfg.get("solver_type"))
    return out


class DiffusersGrid(dict):
    """``nd.sample`` keyword arguments, with the method the scheduler implies as ``.method``.

    ``method`` is not a key, so the call reads ``nd.sample(model, n, grid.method, **grid)``
    (or the method named by hand). Every grid holds an option that only its kind of
    sampler takes (``eta`` for ``ddim``; ``lower_order_final``/``solver_type`` for the
    multistep methods), so forgetting the method is an error, not a heun solve.
    """

    def __init__(self, method: str, **kwargs):
        super().__init__(**kwargs)
        self.method = method

    def __repr__(self) -> str:
        return f"DiffusersGrid(method={self.method!r}, {dict.__repr__(self)})"


def diffusers_grid(scheduler, steps: int) -> DiffusersGrid:
    """``nd.sample`` keyword arguments that repeat ``scheduler``'s ``steps``-step loop.

    Returns a ``DiffusersGrid`` (a dict) whose ``.method`` attribute is the sampler
    (``"ddim"``, ``"dpmpp_2m"``, ``"dpmpp_3m"``, ``"unipc_1m"`` / ``"unipc_2m"`` /
    ``"unipc_3m"``) and whose keys are ``grid`` (decreasing times
    k/(K−1) of the scheduler's timesteps, then t = 0 when its last step goes to k = 0),
    ``denoise`` (True when the last step returns x̂: ``final_sigmas_type="zero"``, DDIM's
    ``set_alpha_to_one``) and, for multistep methods, ``lower_order_final`` and
    ``solver_type`` as the scheduler counts and forms its steps (``eta=0`` for ``ddim``).
    Pass them with the model from ``from_diffusers``:
    ``nd.sample(model, 16, "dpmpp_2m", **nd.diffusers_grid(scheduler, 10))``, or
    ``g = nd.diffusers_grid(scheduler, 10); nd.sample(model, method=g.method, z1=noise, **g)``
    with the scheduler's noise. NFE: one per scheduler step, except DDIM ending on k = 0 without
    ``set_alpha_to_one`` (its last step is the identity; ndmsolve skips it).

    The scheduler is not modified (its timesteps are computed on a copy). Unsupported
    options raise a ValueError naming them (module docstring).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    cfg = _config(scheduler)
    cls = type(scheduler).__name__
    bad_sigmas = {
        n: (bool, "the network is called off the step's noise level") for n in _UNSUPPORTED_SIGMAS
    }
    if cls == "DDIMScheduler":
        return _ddim_grid(scheduler, cfg, steps)
    if cls == "DPMSolverMultistepScheduler":
        _reject(
            cfg,
            cls,
            {
                "algorithm_type": (
                    lambda v: v != "dpmsolver++",
                    "only the deterministic data-prediction form 'dpmsolver++' is an NDM step",
                ),
                **bad_sigmas,
            },
        )
        return _multistep_grid(scheduler, cfg, steps, unipc=False)
    if cls == "UniPCMultistepScheduler":
        _reject(
            cfg,
            cls,
            {
                "predict_x0": (lambda v: v is False, "the noise-prediction form combines ε̂, not x̂"),
                "disable_corrector": (bool, "every step but the last is corrected here"),
                **bad_sigmas,
            },
        )
        if getattr(scheduler, "solver_p", None) is not None:
            raise ValueError(f"{cls} with solver_p cannot be reproduced: a foreign predictor")
        return _multistep_grid(scheduler, cfg, steps, unipc=True)
    raise TypeError(
        "scheduler must be a DDIMScheduler, DPMSolverMultistepScheduler or "
        f"UniPCMultistepScheduler, got {cls}"
    )
