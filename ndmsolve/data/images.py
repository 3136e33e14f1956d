"""Image data from the standard local files; nothing is downloaded.

- CIFAR-10: the "python version" batches (``cifar-10-batches-py/data_batch_1..5``,
  ``test_batch``), pickled dicts with ``b"data"`` (N, 3072) uint8 and ``b"labels"``.
  These are pickles: load only files you trust (the official archive).
- MNIST: the idx files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-...``), optionally gzipped.

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

__all__ = ["load_cifar10", "load_mnist", "to_model_range", "from_model_range"]

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
    d = _find_dir(Path(root), names[0], ("cifar-10-batches-py",), "CIFAR-10",
                  "fetch cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it")
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
        raise ValueError(f"{str(path)!r}: header says {dims} = {int(np.prod(dims))} values, file has {data.size}")
    return data.reshape(dims)


def load_mnist(root: PathLike, split: str = "train") -> tuple[Tensor, Tensor]:
    """MNIST from its idx files: images uint8 (N, 1, 28, 28), labels int64 (N,).

    ``root`` holds the files directly, or in ``MNIST/raw`` or ``raw`` (torchvision's layout).
    """
    _check_split(split)
    prefix = "train" if split == "train" else "t10k"
    img_name, lab_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    d = _find_dir(Path(root), img_name, ("MNIST/raw", "raw", "mnist"), "MNIST",
                  "fetch the four idx files from http://yann.lecun.com/exdb/mnist/ (or a mirror)")

    def pick(name: str) -> Path:
        for p in (d / name, d / (name + ".gz")):
            if p.exists():
                return p
        raise FileNotFoundError(f"MNIST file {str(d / name)!r} (or .gz) is missing (root={str(root)!r})")

    images, labels = _read_idx(pick(img_name)), _read_idx(pick(lab_name))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST: images {images.shape} and labels {labels.shape} do not match")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def to_model_range(x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 in {0..255} -> floats in [-1, 1]: x / 127.5 − 1 (0 -> −1, 255 -> 1)."""
    if x.dtype != torch.uint8:
        raise TypeError(f"x must be a uint8 tensor, got dtype {x.dtype}")
    return x.to(dtype) / 127.5 - 1.0


def from_model_range(x: Tensor) -> Tensor:
    """Floats in [-1, 1] -> uint8, rounding to the nearest of the 256 levels (clamped)."""
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")
    return ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
