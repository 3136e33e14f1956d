"""scikit-learn's 8x8 handwritten digits: a built-in image set that needs no download.

1797 greyscale images of 8x8 pixels with 17 grey levels (0..16), bundled with
scikit-learn (the optional extra ``pip install -e '.[images]'``). 8x8 already divides by
2^3, so a U-Net with up to four levels takes it as is; ``size`` pads the border with
background (level 0) for deeper nets. Padding adds constant pixels that any model learns
quickly, which lowers bits/dim: compare models at the same size only.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["load_digits", "DIGITS_LEVELS", "DIGITS_N_TEST"]

#: Grey levels of the digits (pixel values 0..16).
DIGITS_LEVELS = 17
#: Images in the test split (the other 1500 train).
DIGITS_N_TEST = 297


def load_digits(split: str = "train", *, size: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The digits split: images uint8 (N, 1, size, size) in 0..16, labels int64 (N,).

    The split is a permutation of the 1797 images drawn with ``seed`` (the same on every
    machine): the first ``DIGITS_N_TEST`` = 297 are ``"test"``, the rest (1500) ``"train"``;
    ``split="all"`` gives every image in the original order. ``size`` >= 8 pads
    symmetrically with zeros (the background).
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8 or (size - 8) % 2:
        raise ValueError(
            f"size must be an even int >= 8 (the images are 8x8, padded evenly), got {size!r}"
        )
    try:
        from sklearn.datasets import load_digits as _sk_load
    except ImportError as e:
        raise ImportError(
            "the digits set comes with scikit-learn: pip install -e '.[images]' "
            "(or pip install scikit-learn)"
        ) from e
    bunch = _sk_load()
    images = torch.as_tensor(bunch.images).round().to(torch.uint8).unsqueeze(1)  # (1797, 1, 8, 8)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    if size > 8:
        p = (size - 8) // 2
        images = torch.nn.functional.pad(images, (p, p, p, p))
    if split == "all":
        return images, labels
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    idx = order[:DIGITS_N_TEST] if split == "test" else order[DIGITS_N_TEST:]
    return images[idx], labels[idx]
