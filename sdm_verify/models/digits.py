"""sklearn's 8x8 handwritten digits as diffusion training data, and the project's committed digits model.

Data: `sklearn.datasets.load_digits` (1797 images of the UCI optdigits test set, bundled with scikit-learn, so it
loads offline), pixel counts 0..16 scaled to [-1, 1] by x / 8 - 1, shape (N, 1, 8, 8).
Split (fixed, by position; the set cycles through the classes 0..9, so both parts are class-balanced):
    train  the first 1500 images  (146..153 per class)
    test   the last 297 images    (27..33 per class)
sigma_data is the standard deviation of all training pixels: 0.7501 (0.7521 over all 1797 images).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .own import load_own

__all__ = [
    "N_TRAIN",
    "load_digits_images",
    "measure_sigma_data",
    "save_image_grid",
    "image_grid",
    "digits_checkpoint",
    "load_digits_model",
]

#: size of the training part; the rest (297 images) is the test part
N_TRAIN = 1500
SPLITS = ("train", "test", "all")


def load_digits_images(split: str = "train", dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 1, 8, 8) in [-1, 1], labels (N,) int64) of the `split` ("train", "test" or "all")."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.as_tensor(data.images, dtype=torch.float64)[:, None] / 8.0 - 1.0
    labels = torch.as_tensor(data.target, dtype=torch.int64)
    part = {"train": slice(0, N_TRAIN), "test": slice(N_TRAIN, None), "all": slice(None)}[split]
    return images[part].to(dtype), labels[part]


def measure_sigma_data(images: torch.Tensor | None = None) -> float:
    """Standard deviation of all pixels (population form), by default of the training split."""
    if images is None:
        images, _ = load_digits_images("train", dtype=torch.float64)
    return float(images.double().std(unbiased=False))


def image_grid(images: torch.Tensor, nrow: int = 10, pad: int = 1, fill: float = 0.0) -> torch.Tensor:
    """Tile (N, 1, H, W) images into one (rows*(H+pad)-pad, nrow*(W+pad)-pad) float64 array, `fill` between tiles."""
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"images: expected a (N, 1, H, W) tensor of grey images, got {shape}")
    if not (isinstance(nrow, int) and nrow >= 1):
        raise ValueError(f"nrow: expected an int >= 1, got {nrow!r}")
    n, _, h, w = images.shape
    rows = -(-n // nrow)
    grid = torch.full((rows * (h + pad) - pad, nrow * (w + pad) - pad), float(fill), dtype=torch.float64)
    for i, img in enumerate(images.detach().to("cpu", torch.float64)):
        r, c = divmod(i, nrow)
        grid[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = img[0]
    return grid


def save_image_grid(images, path, nrow: int = 10, title=None) -> Path:
    """Save images in [-1, 1] as a grey grid PNG (matplotlib, no interpolation; ink +1 black on a white -1 background).

    `images` is a (N, 1, H, W) tensor, or a list of them drawn as panels side by side; `title` a string or one string
    per panel. Values are clipped to [-1, 1] for display only.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = list(images) if isinstance(images, list | tuple) else [images]
    titles = list(title) if isinstance(title, list | tuple) else [title] * len(panels)
    if len(titles) != len(panels):
        raise ValueError(f"title: expected {len(panels)} titles (one per panel), got {len(titles)}")
    grids = [image_grid(p, nrow) for p in panels]
    fig, axes = plt.subplots(1, len(grids), figsize=(4.2 * len(grids), 4.6), squeeze=False)
    for ax, grid, t in zip(axes[0], grids, titles, strict=True):
        ax.imshow(grid.clamp(-1, 1).numpy(), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        if t:
            ax.set_title(t, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def digits_checkpoint() -> Path:
    """The directory of the committed digits model (config.json + model.safetensors), inside the package."""
    return Path(__file__).resolve().parent / "checkpoints" / "digits-edm"


def load_digits_model(path=None, dtype: torch.dtype = torch.float64, device="cpu") -> torch.nn.Module:
    """The bare "edm-unet" module (forward(x, sigma) -> D, no range checks) of an own-format checkpoint directory,
    by default the committed digits model; weights loaded strictly, cast to `dtype` (float64: measurements), eval mode.
    `sdm_verify.models.load_denoiser("digits-edm")` gives the same network behind the checked Denoiser interface."""
    return load_own(digits_checkpoint() if path is None else path, device=device, dtype=dtype).module
