"""A small digits classifier trained here: the feature network of the sample-quality metrics (`real.quality`).

Standard FID/KID use Inception-v3 features, whose weights only come by download; offline we train our own network on
the training split of sklearn's 8x8 digits (`digits.load_digits_images`) in a few seconds, with a fixed seed, and use
its penultimate activations as features (the same construction, smaller: Heusel et al. 2017; Binkowski et al. 2018).

Network: conv3x3(1->16) ReLU maxpool2, conv3x3(16->32) ReLU maxpool2, dropout, linear(128->64) ReLU = features,
linear(64->10) = logits. Features are the 64 penultimate activations standardised per unit with the training set's
mean and std (an affine layer fixed after training): the KID kernel (x.y/F + 1)^3 is neither shift- nor
scale-invariant, and raw ReLU activations share a large positive mean that would dominate x.y; standardising also
frees the metrics' scale from the run's arbitrary activation scale.

Training: AdamW (lr 2e-3, weight decay 1e-4), batch 64, 30 epochs, Gaussian input noise (std 0.3) and dropout 0.3 as
regularisers (the test split's last 297 images come from other writers: without them held-out accuracy is
0.93..0.95), in float64 on one thread (deterministic; float64 also keeps the run reproducible across CPUs, whose
float32 kernels round differently), about 4 s. Held-out accuracy 0.956 (284 of the 297 test images; seeds 0..4:
0.943..0.956); on a random 1500/297 split the same network reaches 0.99.

`digits_classifier()` returns one trained instance per process; with `cache_dir` (or the environment variable
SDM_VERIFY_CACHE) its weights are also kept on disk, keyed by a hash of the training settings, the training data and
the torch version. Nothing is ever downloaded.
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

from .digits import load_digits_images

__all__ = ["TrainSettings", "DigitsClassifier", "train_digits_classifier", "digits_classifier", "as_images"]

N_CLASSES = 10
_CACHE_FORMAT = "digits-classifier/3"  # bump when the network or its stored buffers change
CACHE_ENV = "SDM_VERIFY_CACHE"


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Everything that determines the trained weights (with the data and the torch version)."""

    epochs: int = 30
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    input_noise: float = 0.3
    dropout: float = 0.3
    seed: int = 0


def as_images(images, name: str = "images") -> torch.Tensor:
    """Digits as a float64 (N, 1, 8, 8) tensor; accepts (N, 1, 8, 8), (N, 8, 8) or (N, 64) arrays or tensors."""
    try:
        arr = np.asarray(images.detach().cpu() if torch.is_tensor(images) else images)
        x = torch.as_tensor(arr, dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected a numeric array of digits images, got {type(images).__name__}") from err
    if x.ndim == 2 and x.shape[1] == 64:
        x = x.reshape(-1, 1, 8, 8)
    elif x.ndim == 3 and x.shape[1:] == (8, 8):
        x = x[:, None]
    if x.ndim != 4 or x.shape[1:] != (1, 8, 8) or x.shape[0] < 1:
        raise ValueError(f"{name}: expected shape (N, 1, 8, 8), (N, 8, 8) or (N, 64) with N >= 1, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or inf")
    return x


class DigitsClassifier(nn.Module):
    """Tiny CNN for 8x8 digits in [-1, 1]; `features` are the 64 penultimate ReLU activations."""

    n_features = 64

    def __init__(self, dropout: float = 0.3):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(32 * 4, self.n_features), nn.ReLU(),
        )
        self.head = nn.Linear(self.n_features, N_CLASSES)
        # features = (penultimate activations - feature_mean) / feature_std, both fixed after training (see module doc)
        self.register_buffer("feature_mean", torch.zeros(self.n_features))
        self.register_buffer("feature_std", torch.ones(self.n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 10)."""
        return self.head(self.body(x))

    def _run(self, images, part) -> np.ndarray:
        x = as_images(images).to(next(self.parameters()).dtype)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = part(x)
        finally:
            self.train(was_training)
        return out.to(torch.float64).numpy()

    def features(self, images) -> np.ndarray:
        """Penultimate activations standardised with the training set's per-unit statistics, (N, 64) float64."""
        return self._run(images, lambda x: (self.body(x) - self.feature_mean) / self.feature_std)

    def standardise_features(self, images) -> None:
        """Fix feature_mean and feature_std from `images` (the training set): per-unit mean and standard deviation,
        the std floored at a tenth of the median unit's (dead or nearly dead units are centred, never blown up)."""
        self.feature_mean.zero_()
        self.feature_std.fill_(1.0)
        f = torch.as_tensor(self.features(images), dtype=self.feature_mean.dtype)
        std = f.std(dim=0)
        self.feature_mean.copy_(f.mean(dim=0))
        self.feature_std.copy_(torch.clamp(std, min=0.1 * float(std.median())))

    def predict_proba(self, images) -> np.ndarray:
        """Softmax class probabilities, (N, 10) float64."""
        return self._run(images, lambda x: torch.softmax(self(x), dim=1))

    def predict(self, images) -> np.ndarray:
        """Predicted labels, (N,) int64."""
        return self.predict_proba(images).argmax(axis=1)

    def accuracy(self, images, labels) -> float:
        labels = np.asarray(labels)
        pred = self.predict(images)
        if labels.shape != pred.shape:
            raise ValueError(f"labels: expected shape {pred.shape} (one per image), got {labels.shape}")
        return float((pred == labels).mean())


def _training_data() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_digits_images("train", dtype=torch.float64)
    return images, labels


def train_digits_classifier(settings: TrainSettings = TrainSettings(), images=None, labels=None) -> DigitsClassifier:
    """Train a `DigitsClassifier` (default data: the training split); returns it in eval mode, float64.

    Deterministic: float64, a private RNG state (the caller's global torch RNG is restored), one thread.
    """
    if not isinstance(settings, TrainSettings):
        raise ValueError(f"settings: expected a TrainSettings, got {type(settings).__name__}")
    if images is None:
        images, labels = _training_data()
    x = as_images(images)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if y.shape != (x.shape[0],) or int(y.min()) < 0 or int(y.max()) >= N_CLASSES:
        raise ValueError(f"labels: expected {x.shape[0]} integer labels in 0..9, got shape {tuple(y.shape)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)  # initial weights and dropout masks
            gen = torch.Generator().manual_seed(settings.seed)  # batches and input noise
            net = DigitsClassifier(settings.dropout).double()
            opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
            net.train()
            for _ in range(settings.epochs):
                order = torch.randperm(x.shape[0], generator=gen)
                for start in range(0, x.shape[0], settings.batch):
                    idx = order[start:start + settings.batch]
                    xb = x[idx] + settings.input_noise * torch.randn(x[idx].shape, generator=gen, dtype=x.dtype)
                    loss = nn.functional.cross_entropy(net(xb), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    finally:
        torch.set_num_threads(threads)
    net = net.eval().requires_grad_(False)
    net.standardise_features(x)
    return net


def _cache_key(settings: TrainSettings, images: torch.Tensor, labels: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(_CACHE_FORMAT.encode())
    h.update(json.dumps(dataclasses.asdict(settings), sort_keys=True).encode())
    h.update(torch.__version__.encode())
    h.update(images.to(torch.float64).contiguous().numpy().tobytes())
    h.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


_CACHE: dict[tuple, DigitsClassifier] = {}


def digits_classifier(settings: TrainSettings = TrainSettings(), cache_dir=None) -> DigitsClassifier:
    """The classifier trained on the training split with `settings`, trained once per process.

    cache_dir: a directory to keep the weights in (safetensors, file name keyed by the settings/data/torch hash);
    default: $SDM_VERIFY_CACHE if set, else no disk cache.
    """
    images, labels = _training_data()
    key = _cache_key(settings, images, labels)
    if (key, settings) in _CACHE:
        return _CACHE[(key, settings)]
    cache_dir = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV)
    path = Path(cache_dir) / f"digits-classifier-{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        from safetensors.torch import load_file

        net = DigitsClassifier(settings.dropout).double()
        net.load_state_dict(load_file(str(path)), strict=True)
        net = net.eval().requires_grad_(False)
    else:
        net = train_digits_classifier(settings, images, labels)
        if path is not None:
            from safetensors.torch import save_file

            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
            tmp.replace(path)
    _CACHE[(key, settings)] = net
    return net
