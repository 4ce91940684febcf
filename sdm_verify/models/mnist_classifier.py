"""A small MNIST classifier trained here on the training split: the feature network of FD/KID for the MNIST model
(`sdm_verify.real.metrics_tm`), and the judge of the class-conditional samples' labels.

`models.classifier` is built for 8x8 inputs (its linear layer takes 32 * 2 * 2 activations), so MNIST's 28x28 digits
get their own network, built the same way (standard FID/KID use Inception-v3 features, whose weights only come by
download; Heusel et al. 2017, Binkowski et al. 2018 construct the metrics on any feature network):

    conv3x3(1->16) ReLU maxpool2 (14), conv3x3(16->32) ReLU maxpool2 (7), conv3x3(32->32) ReLU maxpool2 (3),
    dropout, linear(288->64) ReLU = features, linear(64->10) = logits            (~33k parameters)

Features are the 64 penultimate activations standardised per unit with the training split's mean and std (the std
floored at a tenth of the median unit's), as in `models.classifier` (the KID kernel is neither shift- nor
scale-invariant).

Training: AdamW (lr 2e-3, weight decay 1e-4), batch 64, 8 epochs, Gaussian input noise (std 0.3) and dropout 0.3,
float32 on one thread with a private seeded RNG (deterministic on one CPU; float32 summation order can differ across
CPUs), about 30-60 s on one core. Held-out accuracy on the 1000 test digits: stated in docs/real-models.md §8 and
checked by tests/test_mnist_model.py. `mnist_classifier()` trains once per process; with `cache_dir` (or
$SDM_VERIFY_CACHE) the weights are kept on disk keyed by a hash of the settings, the data and the torch version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .mnist import load_mnist_images

__all__ = ["MnistTrainSettings", "MnistClassifier", "as_mnist_images", "train_mnist_classifier", "mnist_classifier"]

N_CLASSES = 10
_CACHE_FORMAT = "mnist-classifier/1"
CACHE_ENV = "SDM_VERIFY_CACHE"


@dataclasses.dataclass(frozen=True)
class MnistTrainSettings:
    epochs: int = 8
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    input_noise: float = 0.3
    dropout: float = 0.3
    seed: int = 0


def as_mnist_images(images, name: str = "images") -> torch.Tensor:
    """Digits as a float32 (N, 1, 28, 28) tensor; accepts (N, 1, 28, 28), (N, 28, 28) or (N, 784)."""
    try:
        arr = np.asarray(images.detach().cpu() if torch.is_tensor(images) else images, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name}: expected a numeric array of 28x28 images, got {type(images).__name__}") from err
    x = torch.as_tensor(arr)
    if x.ndim == 2 and x.shape[1] == 784:
        x = x.reshape(-1, 1, 28, 28)
    elif x.ndim == 3 and x.shape[1:] == (28, 28):
        x = x[:, None]
    if x.ndim != 4 or x.shape[1:] != (1, 28, 28) or x.shape[0] < 1:
        raise InputError(f"{name}: expected shape (N, 1, 28, 28), (N, 28, 28) or (N, 784), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{name}: contains NaN or inf")
    return x.float()


class MnistClassifier(nn.Module):
    """Small CNN for 28x28 digits in [-1, 1]; `features` are the 64 standardised penultimate activations."""

    n_features = 64

    def __init__(self, dropout: float = 0.3):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(32 * 3 * 3, self.n_features), nn.ReLU(),
        )
        self.head = nn.Linear(self.n_features, N_CLASSES)
        self.register_buffer("feature_mean", torch.zeros(self.n_features))
        self.register_buffer("feature_std", torch.ones(self.n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def _run(self, images, part, batch: int = 1000) -> np.ndarray:
        x = as_mnist_images(images)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = torch.cat([part(x[i:i + batch]) for i in range(0, x.shape[0], batch)])
        finally:
            self.train(was_training)
        return out.to(torch.float64).numpy()

    def features(self, images) -> np.ndarray:
        """(N, 64) float64: (penultimate activations - feature_mean) / feature_std."""
        return self._run(images, lambda x: (self.body(x) - self.feature_mean) / self.feature_std)

    def standardise_features(self, images) -> None:
        self.feature_mean.zero_()
        self.feature_std.fill_(1.0)
        f = torch.as_tensor(self.features(images), dtype=torch.float32)
        std = f.std(dim=0)
        self.feature_mean.copy_(f.mean(dim=0))
        self.feature_std.copy_(torch.clamp(std, min=0.1 * float(std.median())))

    def predict_proba(self, images) -> np.ndarray:
        return self._run(images, lambda x: torch.softmax(self(x), dim=1))

    def predict(self, images) -> np.ndarray:
        return self.predict_proba(images).argmax(axis=1)

    def accuracy(self, images, labels) -> float:
        labels = np.asarray(labels)
        pred = self.predict(images)
        if labels.shape != pred.shape:
            raise InputError(f"labels: expected shape {pred.shape} (one per image), got {labels.shape}")
        return float((pred == labels).mean())


def train_mnist_classifier(settings: MnistTrainSettings = MnistTrainSettings(), images=None,
                           labels=None) -> MnistClassifier:
    """Train a `MnistClassifier` (default data: the training split); eval mode, float32, deterministic on one CPU."""
    if images is None:
        images, labels = load_mnist_images("train")
    x = as_mnist_images(images)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if y.shape != (x.shape[0],) or int(y.min()) < 0 or int(y.max()) >= N_CLASSES:
        raise InputError(f"labels: expected {x.shape[0]} integer labels in 0..9, got shape {tuple(y.shape)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            gen = torch.Generator().manual_seed(settings.seed)
            net = MnistClassifier(settings.dropout)
            opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
            net.train()
            for _ in range(settings.epochs):
                order = torch.randperm(x.shape[0], generator=gen)
                for start in range(0, x.shape[0], settings.batch):
                    idx = order[start:start + settings.batch]
                    xb = x[idx] + settings.input_noise * torch.randn(x[idx].shape, generator=gen)
                    loss = nn.functional.cross_entropy(net(xb), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    finally:
        torch.set_num_threads(threads)
    net = net.eval().requires_grad_(False)
    net.standardise_features(x)
    return net


_CACHE: dict[str, MnistClassifier] = {}


def mnist_classifier(settings: MnistTrainSettings = MnistTrainSettings(), cache_dir=None) -> MnistClassifier:
    """The classifier trained on the training split with `settings`, trained once per process (see module doc)."""
    images, labels = load_mnist_images("train")
    h = hashlib.sha256()
    h.update(_CACHE_FORMAT.encode())
    h.update(json.dumps(dataclasses.asdict(settings), sort_keys=True).encode())
    h.update(torch.__version__.encode())
    h.update(images.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    key = h.hexdigest()[:16]
    if key in _CACHE:
        return _CACHE[key]
    cache_dir = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV)
    path = Path(cache_dir) / f"mnist-classifier-{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        from safetensors.torch import load_file

        net = MnistClassifier(settings.dropout)
        net.load_state_dict(load_file(str(path)), strict=True)
        net = net.eval().requires_grad_(False)
    else:
        net = train_mnist_classifier(settings, images, labels)
        if path is not None:
            from safetensors.torch import save_file

            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
            tmp.replace(path)
    _CACHE[key] = net
    return net
