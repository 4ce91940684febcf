"""FD and KID through torchmetrics with the project's own feature networks, offline; plus what torchmetrics lacks.

torchmetrics' `FrechetInceptionDistance` and `KernelInceptionDistance` accept a custom feature extractor: any
nn.Module mapping a batch of images to (N, F) features, with a `num_features` attribute (else torchmetrics probes it
with a random 3x299x299 image, which a digits network cannot take). `FeatureNet` wraps a classifier of this project
(`models.classifier.DigitsClassifier` for 8x8 digits, `models.mnist_classifier.MnistClassifier` for 28x28 MNIST):
its forward returns the classifier's standardised penultimate activations in float64. torchmetrics then does what
`quality.py` does by hand: FD of the Gaussian fits (mean, unbiased covariance; its matrix square root through the
eigenvalues of Ca Cb) and KID (unbiased MMD^2 with the cubic kernel (x.y/F + 1)^3 on random subsets).

The networks run once per image set: `features(net, images)` computes the rows, and the metrics take rows through
`Rows`, the identity extractor (torchmetrics sees the feature rows as its "images"). That is the same computation as
passing `FeatureNet` (tested), and it lets the bootstrap reuse the rows.

Kept from `quality.py`, which torchmetrics does not have:
    bootstrap intervals (`quality.bootstrap`, "basic" for FD, whose finite-n bias is of the size of the distance;
    `quality.kid_bootstrap` for the unbiased MMD^2, whose resampled duplicates never pair with themselves),
    the nearest-neighbour memorisation check (`nn_distance`, here for images of any size),
    classifier accuracy and confidence of labelled samples.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .quality import bootstrap, gaussian_stats, kid_bootstrap

__all__ = ["FeatureNet", "Rows", "features", "tm_fd", "tm_kid", "nn_distance", "gaussian_fit_images",
           "quality_row", "mnist_quality"]


class FeatureNet(nn.Module):
    """A project classifier as torchmetrics' feature extractor: images -> (N, F) float64 standardised features."""

    def __init__(self, classifier):
        super().__init__()
        if not callable(getattr(classifier, "features", None)):
            raise InputError(f"classifier: expected a project classifier with .features(images), got "
                             f"{type(classifier).__name__}")
        self.classifier = classifier
        self.num_features = int(classifier.n_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.classifier.features(images), dtype=torch.float64)


class Rows(nn.Module):
    """The identity extractor: the "images" torchmetrics receives are feature rows (N, F) computed already."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.to(torch.float64)


def features(net, images) -> np.ndarray:
    """(N, F) float64 feature rows of `images` under a project classifier or a FeatureNet."""
    fn = net if isinstance(net, FeatureNet) else FeatureNet(net)
    return fn(images).numpy()


def _rows(a, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a, dtype=np.float64))
    if t.ndim != 2 or t.shape[0] < 2 or not bool(torch.isfinite(t).all()):
        raise InputError(f"{name}: expected finite feature rows (n >= 2, F), got shape {tuple(t.shape)}")
    return t


def tm_fd(feats_a, feats_b, extractor: nn.Module | None = None) -> float:
    """torchmetrics' FrechetInceptionDistance of two sets; with `extractor` (a FeatureNet) the sets are images,
    otherwise feature rows. Set a is passed as "real", b as "fake" (FD is symmetric)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if extractor is None:
        a, b = _rows(feats_a, "feats_a"), _rows(feats_b, "feats_b")
        if a.shape[1] != b.shape[1]:
            raise InputError(f"feats_b: expected {a.shape[1]} features (as the first set), got {b.shape[1]}")
        extractor = Rows(a.shape[1])
    else:
        a, b = torch.as_tensor(feats_a), torch.as_tensor(feats_b)
    metric = FrechetInceptionDistance(feature=extractor, normalize=True)
    metric.update(a, real=True)
    metric.update(b, real=False)
    return float(metric.compute())


def tm_kid(feats_a, feats_b, subsets: int = 100, subset_size: int = 1000, seed: int = 0,
           extractor: nn.Module | None = None) -> tuple[float, float]:
    """torchmetrics' KernelInceptionDistance (cubic kernel, gamma = 1/F, coef 1): (mean, std) over `subsets` random
    subsets of size min(subset_size, n_a, n_b); the subsets come from torch's global RNG, seeded `seed` inside a
    forked RNG state (the caller's state is untouched)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    if extractor is None:
        a, b = _rows(feats_a, "feats_a"), _rows(feats_b, "feats_b")
        extractor = Rows(a.shape[1])
    else:
        a, b = torch.as_tensor(feats_a), torch.as_tensor(feats_b)
    size = int(min(subset_size, a.shape[0], b.shape[0]))
    with warnings.catch_warnings():  # "will save all extracted features in buffer": a few thousand rows here
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=extractor, subsets=int(subsets), subset_size=size, normalize=True)
    metric.update(a, real=True)
    metric.update(b, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def nn_distance(x, ref) -> np.ndarray:
    """Euclidean pixel distance of each image of x to its nearest image in ref (any image shape; memorisation)."""
    a = np.asarray(torch.as_tensor(x).detach().cpu().double().flatten(1))
    r = np.asarray(torch.as_tensor(ref).detach().cpu().double().flatten(1))
    if a.shape[1] != r.shape[1]:
        raise InputError(f"ref: images of {r.shape[1]} pixels, x has {a.shape[1]}")
    d2 = (a * a).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2.0 * a @ r.T
    nearest = r[d2.argmin(axis=1)]
    return np.sqrt(((a - nearest) ** 2).sum(axis=1))


def gaussian_fit_images(train_images, n: int, seed: int = 0) -> torch.Tensor:
    """n images from N(mean, cov) of `train_images` (unbiased covariance, possibly singular): the baseline row."""
    flat = np.asarray(torch.as_tensor(train_images).double().flatten(1))
    mu, cov = gaussian_stats(flat, "train_images")
    w, v = np.linalg.eigh(cov)
    z = np.random.default_rng(seed).standard_normal((int(n), flat.shape[1]))
    x = mu + (z * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    return torch.as_tensor(x).reshape(int(n), *torch.as_tensor(train_images).shape[1:])


def quality_row(samples, reference, classifier, train_images, labels=None, n_boot: int = 200, level: float = 0.95,
                seed: int = 0) -> dict:
    """One row of the quality table: `samples` against `reference` images on `classifier`'s features.

        fd          torchmetrics FD, with quality.bootstrap's "basic" interval (clipped at 0)
        kid         torchmetrics subset KID (mean, std), and the unbiased MMD^2 on all rows with kid_bootstrap's
                    interval (the two estimate the same MMD^2; the subset mean is over subsets of size <= 1000)
        accuracy    when `labels` are given: fraction classified as their label, per class and overall, with a
                    bootstrap interval of the overall fraction
        confidence  mean max-softmax; nn_dist_train: mean pixel distance to the nearest training image
    """
    fs = features(classifier, samples)
    fr = features(classifier, reference)
    boot = dict(n_boot=n_boot, level=level, seed=seed)
    est, lo, hi = bootstrap(tm_fd, fs, fr, method="basic", **boot)
    mean, std = tm_kid(fs, fr, seed=seed)
    mmd, mlo, mhi = kid_bootstrap(fs, fr, **boot)
    prob = classifier.predict_proba(samples)
    row = {
        "n": int(fs.shape[0]),
        "fd": {"estimate": est, "lo": max(lo, 0.0), "hi": max(hi, 0.0)},
        "kid": {"subset_mean": mean, "subset_std": std, "mmd2": mmd, "lo": mlo, "hi": mhi},
        "confidence": float(prob.max(axis=1).mean()),
        "nn_dist_train": float(nn_distance(samples, train_images).mean()),
    }
    if labels is not None:
        y = np.asarray(torch.as_tensor(labels).cpu())
        hit = (prob.argmax(axis=1) == y).astype(float)
        acc, alo, ahi = bootstrap(np.mean, hit, **boot)
        row["accuracy"] = {"estimate": acc, "lo": alo, "hi": ahi,
                           "per_class": [float(hit[y == c].mean()) if np.any(y == c) else None
                                         for c in range(prob.shape[1])]}
    return row


def mnist_quality(model, ws=(1.0, 3.0), n_per_class: int = 50, steps: int = 18, seed: int = 0, n_boot: int = 200,
                  classifier=None, progress: bool = False) -> dict:
    """The MNIST model's quality table against the 1000 held-out test digits (models.mnist), on the features of
    the classifier trained on the training split (models.mnist_classifier):

        rows "train digits" (1000 training digits drawn with `seed`: what real data scores; their nearest-neighbour
        distance is to the other 3000 training digits), "gaussian fit" (1000
        draws of N(mean, cov) of the training digits: the baseline a model must beat), and "model w=<w>" for each
        guidance weight: n_per_class samples of each class, EDM Heun `steps` steps 80 -> 0.002 then into 0, in the
        model's dtype, start points seeded `seed`, with per-class classifier accuracy. Images are clipped to
        [-1, 1] before they are scored. "nn_dist_train_reference": the test digits' mean distance to their nearest
        training digit, the memorisation check's scale (a model copying its training set scores far below it).
    `model` is a class-conditional Denoiser (models.mnist.load_mnist_model) or a bare EDMPrecond module.
    """
    from .. import schedules, solvers
    from ..models.edm_unet_cond import guided
    from ..models.mnist import load_mnist_images
    from ..models.mnist_classifier import mnist_classifier

    clf = mnist_classifier() if classifier is None else classifier
    train, _ = load_mnist_images("train", dtype=torch.float64)
    test, _ = load_mnist_images("test", dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(train.shape[0], generator=gen)
    # the training-digits row's memorisation distance is to the other training digits (leave-them-out)
    rows = {"train digits": quality_row(train[perm[:1000]], test, clf, train[perm[1000:]], n_boot=n_boot,
                                        seed=seed),
            "gaussian fit": quality_row(gaussian_fit_images(train, 1000, seed=seed).clamp(-1, 1), test, clf, train,
                                        n_boot=n_boot, seed=seed)}
    labels = torch.arange(10).repeat_interleave(int(n_per_class))
    grid = schedules.get("edm")(int(steps), 0.002, 80.0, zero=True)
    dtype = getattr(model, "dtype", None) or next(model.parameters()).dtype
    for w in ws:
        g = torch.Generator().manual_seed(seed + 1)
        x = 80.0 * torch.randn(labels.shape[0], 1, 28, 28, generator=g, dtype=torch.float64).to(dtype)
        with torch.no_grad():
            out = torch.cat([solvers.get("heun")(guided(model, labels[i:i + 100], w), x[i:i + 100], grid)
                             for i in range(0, labels.shape[0], 100)])
        rows[f"model w={w:g}"] = quality_row(out.double().clamp(-1, 1), test, clf, train, labels=labels,
                                             n_boot=n_boot, seed=seed)
        if progress:
            print(f"w = {w:g}: accuracy {rows[f'model w={w:g}']['accuracy']['estimate']:.3f}", flush=True)
    return {"reference": "1000 held-out test digits (models.mnist split)", "steps": int(steps),
            "nn_dist_train_reference": float(nn_distance(test, train).mean()),
            "n_per_class": int(n_per_class), "rows": rows}
