"""Data: toy 1D/2D sets (seeded by a torch.Generator), the built-in 8x8 digits and image
loaders from local files (MNIST, CIFAR-10, PNG folders)."""

from .digits import DIGITS_LEVELS, load_digits
from .images import from_model_range, load_cifar10, load_mnist, load_png_folder, to_model_range
from .toy import (
    TOY_DATASETS,
    checkerboard,
    eight_gaussians,
    gaussian_mixture_1d,
    gaussian_mixture_1d_log_prob,
    load_toy,
    rings,
    swiss_roll,
    two_moons,
)

__all__ = [
    "TOY_DATASETS",
    "load_toy",
    "checkerboard",
    "two_moons",
    "eight_gaussians",
    "swiss_roll",
    "rings",
    "gaussian_mixture_1d",
    "gaussian_mixture_1d_log_prob",
    "load_cifar10",
    "load_mnist",
    "load_png_folder",
    "load_digits",
    "DIGITS_LEVELS",
    "to_model_range",
    "from_model_range",
]
