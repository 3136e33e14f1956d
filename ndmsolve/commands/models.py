"""The networks the ``train`` command builds from its options: a U-Net NDM for images, an
MLP NDM for toy points; ``model="ddpm"`` keeps F the identity with the same predictor."""

from __future__ import annotations

import torch

import ndmsolve as nd
from ndmsolve.fields import MLP, EpsilonPredictor, UNet

__all__ = ["build_model"]


def _schedule(cfg: dict) -> nd.Schedule:
    kinds = {"linear": nd.LinearLogSNR, "cosine": nd.CosineLogSNR, "learned": nd.LearnedLogSNR}
    return kinds[cfg["schedule"]](cfg["logsnr_min"], cfg["logsnr_max"])


def build_model(cfg: dict, shape: tuple, image: bool, seed: int) -> nd.NDM:
    """The NDM of the options ``cfg`` for data of ``shape``; weights from ``seed``.

    The predictor is built first from the seed, so an NDM and a DDPM with the same seed
    start from the same predictor weights; the transform F(x, t) = x + t·net(x, t) starts
    at the identity (zero-initialised output), so both begin as the same diffusion.
    """
    torch.manual_seed(seed)
    sched = _schedule(cfg)
    if image:
        c = shape[0]
        net = UNet(
            c,
            base=cfg["base"],
            mults=cfg["mults"],
            time_dim=cfg["time_dim"],
            num_res_blocks=cfg["num_res_blocks"],
            attn_levels=cfg["attn_levels"],
            mid_attn=cfg["mid_attn"],
            attn_heads=cfg["attn_heads"],
            dropout=cfg["dropout"],
        )
        tnet = lambda: UNet(
            c,
            base=cfg["transform_base"],
            mults=cfg["transform_mults"],
            time_dim=cfg["time_dim"],
            dropout=cfg["dropout"],
            zero_init=True,
        )
    else:
        d = shape[0]
        net = MLP(d, hidden=cfg["hidden"], depth=cfg["depth"])
        tnet = lambda: MLP(
            d, hidden=cfg["transform_hidden"], depth=max(1, cfg["depth"] - 1), zero_init=True
        )  # noqa: E731
    predictor = EpsilonPredictor(net, sched) if cfg["predictor"] == "eps" else net
    transform = nd.ResidualTransform(tnet()) if cfg["model"] == "ndm" else None
    return nd.NDM(predictor, transform=transform, schedule=sched, data_shape=shape)
