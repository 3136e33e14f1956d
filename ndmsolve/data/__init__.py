"""Data: toy 1D/2D sets (seeded by a torch.Generator) and image loaders from local files."""
from .images import from_model_range, load_cifar10, load_mnist, to_model_range
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
    "TOY_DATASETS", "load_toy", "checkerboard", "two_moons", "eight_gaussians", "swiss_roll", "rings",
    "gaussian_mixture_1d", "gaussian_mixture_1d_log_prob",
    "load_cifar10", "load_mnist", "to_model_range", "from_model_range",
]
