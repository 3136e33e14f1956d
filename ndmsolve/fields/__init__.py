"""Plug-in networks ``net(x, t)`` for predictors and transforms: an MLP for toy data and a
small U-Net for images (both accept ``t=None``: no time input), and
``EpsilonPredictor``, which turns a noise-predicting net into an x̂-predictor."""

from .mlp import MLP, FourierTimeEmbedding
from .param import EpsilonPredictor
from .unet import UNet

__all__ = ["MLP", "UNet", "FourierTimeEmbedding", "EpsilonPredictor"]
