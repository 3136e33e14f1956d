"""Data sets by name, as the command line names them: ``digits``, ``mnist``, ``cifar10``,
``png:DIR`` and the toy sets (``checkerboard``, ...).

``load_dataset(spec, split)`` returns a ``Dataset``: for images, integer pixels (N, C, H, W)
with their number of grey levels ``n_bins``; for toys, float points (N, d). Nothing is
downloaded: MNIST and CIFAR-10 come from ``root`` (see ``ndmsolve.data.images``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from .digits import DIGITS_LEVELS, load_digits
from .images import load_cifar10, load_mnist, load_png_folder, to_model_range
from .toy import TOY_DATASETS

__all__ = ["Dataset", "load_dataset", "IMAGE_SETS", "PNG_TEST_FRACTION", "TOY_TRAIN_SIZE"]

IMAGE_SETS = ("digits", "mnist", "cifar10", "png:DIR")
#: Share of a PNG folder without train/ and test/ subfolders held out as the test split.
PNG_TEST_FRACTION = 0.1
#: Points drawn for a toy set's train split (the test split is drawn after them).
TOY_TRAIN_SIZE = 50_000
TOY_TEST_SIZE = 5_000


@dataclass
class Dataset:
    """``x``: integer pixels (N, C, H, W) for images, float points (N, d) for toys.
    ``n_bins``: grey levels of an image set (None for toys)."""

    name: str
    x: Tensor
    n_bins: int | None

    @property
    def is_image(self) -> bool:
        return self.n_bins is not None

    @property
    def shape(self) -> tuple:
        return tuple(self.x.shape[1:])

    def model_range(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Training data: pixels mapped to [-1, 1] (images), or the points (toys)."""
        return to_model_range(self.x, dtype, self.n_bins) if self.is_image else self.x.to(dtype)


def _split_indices(n: int, split: str, seed: int, fraction: float) -> Tensor:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = max(1, round(n * fraction))
    return order[:n_test] if split == "test" else order[n_test:]


def load_dataset(
    spec: str, split: str = "train", *, root: Union[str, os.PathLike, None] = None, seed: int = 0
) -> Dataset:
    """The data set named ``spec`` (see the module docstring), ``split`` ``"train"`` or ``"test"``.

    ``root``: the folder holding MNIST's idx files or CIFAR-10's python batches.
    ``seed``: fixes the digits' and PNG folders' split and the toy sets' draws.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(spec, str):
        raise TypeError(f"data must be a name (str), got {type(spec).__name__}")
    if spec == "digits":
        return Dataset(spec, load_digits(split, seed=seed)[0], DIGITS_LEVELS)
    if spec in ("mnist", "cifar10"):
        if root is None:
            raise ValueError(
                f"data {spec!r} needs data_root: the folder holding its files "
                f"({'the four idx files' if spec == 'mnist' else 'cifar-10-batches-py'})"
            )
        loader = load_mnist if spec == "mnist" else load_cifar10
        return Dataset(spec, loader(root, split)[0], 256)
    if spec.startswith("png:"):
        folder = spec[4:]
        if not folder:
            raise ValueError("data 'png:DIR' needs a folder after 'png:', e.g. png:./my_images")
        sub = os.path.join(folder, split)
        if os.path.isdir(os.path.join(folder, "train")) and os.path.isdir(
            os.path.join(folder, "test")
        ):
            return Dataset(spec, load_png_folder(sub)[0], 256)
        x = load_png_folder(folder)[0]
        return Dataset(spec, x[_split_indices(x.shape[0], split, seed, PNG_TEST_FRACTION)], 256)
    if spec in TOY_DATASETS:
        g = torch.Generator().manual_seed(seed)
        train = TOY_DATASETS[spec](TOY_TRAIN_SIZE, generator=g)
        if split == "train":
            return Dataset(spec, train, None)
        return Dataset(spec, TOY_DATASETS[spec](TOY_TEST_SIZE, generator=g), None)
    raise ValueError(f"data must be one of {list(IMAGE_SETS) + sorted(TOY_DATASETS)}, got {spec!r}")
