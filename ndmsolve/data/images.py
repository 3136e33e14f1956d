"""Image data from the standard local files; nothing is downloaded.

- CIFAR-10: the "python version" batches (``cifar-10-batches-py/data_batch_1..5``,
  ``test_batch``), pickled dicts with ``b"data"`` (N, 3072) uint8 and ``b"labels"``.
  These are pickles: load only files you trust (the official archive).
- MNIST: the idx files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-...``), optionally gzipped.
- A folder of PNGs (8-bit greyscale or RGB, all one size): ``root/*.png``, or
  ``root/<class>/*.png`` with labels from the sorted class-folder names.

Loaders return ``(images, labels)``: images uint8 (N, C, H, W), labels int64 (N,).
``to_model_range`` maps uint8 to [-1, 1] for training; ``from_model_range`` maps back.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["load_cifar10", "load_mnist", "load_png_folder", "to_model_range", "from_model_range"]

PathLike = Union[str, os.PathLike]

_SPLITS = ("train", "test")


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


def _find_dir(root: Path, marker: str, candidates: tuple[str, ...], what: str, hint: str) -> Path:
    for sub in ("",) + candidates:
        d = root / sub
        if (d / marker).exists() or (d / (marker + ".gz")).exists():
            return d
    raise FileNotFoundError(
        f"{what} files not found under root={str(root)!r} (looked for {marker!r} in "
        f"{[str(root / c) for c in ('',) + candidates]}). ndmsolve does not download data: {hint}"
    )


def load_cifar10(root: PathLike, split: str = "train") -> tuple[Tensor, Tensor]:
    """CIFAR-10 from its python batches: images uint8 (N, 3, 32, 32), labels int64 (N,).

    ``root`` is the ``cifar-10-batches-py`` folder or a folder containing it.
    """
    _check_split(split)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    d = _find_dir(
        Path(root),
        names[0],
        ("cifar-10-batches-py",),
        "CIFAR-10",
        "fetch cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it",
    )
    images, labels = [], []
    for name in names:
        path = d / name
        if not path.exists():
            raise FileNotFoundError(f"CIFAR-10 batch {str(path)!r} is missing (root={str(root)!r})")
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{str(path)!r}: expected data of shape (N, 3072), got {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format): big-endian magic 0x00000803 / 0x00000801 + dims + bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"{str(path)!r} is not an idx file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{str(path)!r} is not an unsigned-byte idx file (header {raw[:4].hex()})")
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{str(path)!r}: truncated idx header ({ndim} dims declared)")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(
            f"{str(path)!r}: header says {dims} = {int(np.prod(dims))} values, file has {data.size}"
        )
    return data.reshape(dims)


def load_mnist(root: PathLike, split: str = "train") -> tuple[Tensor, Tensor]:
    """MNIST from its idx files: images uint8 (N, 1, 28, 28), labels int64 (N,).

    ``root`` holds the files directly, or in ``MNIST/raw`` or ``raw`` (torchvision's layout).
    """
    _check_split(split)
    prefix = "train" if split == "train" else "t10k"
    img_name, lab_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    d = _find_dir(
        Path(root),
        img_name,
        ("MNIST/raw", "raw", "mnist"),
        "MNIST",
        "fetch the four idx files from http://yann.lecun.com/exdb/mnist/ (or a mirror)",
    )

    def pick(name: str) -> Path:
        for p in (d / name, d / (name + ".gz")):
            if p.exists():
                return p
        raise FileNotFoundError(
            f"MNIST file {str(d / name)!r} (or .gz) is missing (root={str(root)!r})"
        )

    images, labels = _read_idx(pick(img_name)), _read_idx(pick(lab_name))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST: images {images.shape} and labels {labels.shape} do not match")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def load_png_folder(root: PathLike) -> tuple[Tensor, Tensor]:
    """Every PNG under ``root``: images uint8 (N, C, H, W), labels int64 (N,).

    PNGs directly in ``root`` get label 0; with class folders ``root/<class>/*.png`` the
    label is the class's index among the sorted folder names (torchvision's ImageFolder
    convention). Files are read in sorted path order. Greyscale ("L") gives C = 1, RGB
    C = 3; other modes (palette, alpha, 16-bit) and differing sizes are refused, naming the file.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"root={str(root)!r} is not a folder: put your images in it as "
            f"root/*.png or root/<class>/*.png (8-bit greyscale or RGB, one size)"
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.png")))
    files = [(p, 0) for p in sorted(root.glob("*.png"))]
    files += [(p, i) for i, c in enumerate(classes) for p in sorted((root / c).glob("*.png"))]
    if not files:
        raise FileNotFoundError(
            f"no .png files in {str(root)!r} or its class folders: put your images "
            f"there as root/*.png or root/<class>/*.png"
        )
    from PIL import Image

    images, labels, first = [], [], None
    for path, label in files:
        with Image.open(path) as im:
            if im.mode not in ("L", "RGB"):
                raise ValueError(
                    f"{str(path)!r} has PNG mode {im.mode!r}; expected 8-bit greyscale 'L' or "
                    f"'RGB' (convert it, e.g. with PIL's Image.convert)"
                )
            a = np.asarray(im, dtype=np.uint8)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if first is None:
            first = (path, a.shape)
        elif a.shape != first[1]:
            raise ValueError(
                f"{str(path)!r} has shape (C, H, W) = {a.shape}, but {str(first[0])!r} has "
                f"{first[1]}: all images must have one size and mode"
            )
        images.append(a)
        labels.append(label)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)


def to_model_range(x: Tensor, dtype: torch.dtype = torch.float32, n_bins: int = 256) -> Tensor:
    """Integers in {0..n_bins − 1} -> floats in [-1, 1]: x / ((n_bins − 1)/2) − 1.

    For 8-bit data (the default) x / 127.5 − 1 (0 -> −1, 255 -> 1); the digits have 17.
    """
    if x.dtype != torch.uint8:
        raise TypeError(f"x must be a uint8 tensor, got dtype {x.dtype}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or not 2 <= n_bins <= 256:
        raise ValueError(f"n_bins must be an int in 2..256, got {n_bins!r}")
    return x.to(dtype) / ((n_bins - 1) / 2) - 1.0


def from_model_range(x: Tensor, n_bins: int = 256) -> Tensor:
    """Floats in [-1, 1] -> uint8 levels 0..n_bins − 1, rounding to the nearest (clamped)."""
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")
    return ((x + 1.0) * ((n_bins - 1) / 2)).round().clamp(0, n_bins - 1).to(torch.uint8)
