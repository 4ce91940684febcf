"""Train the project's own digits denoiser: `python -m sdm_verify.models.train_digits [--seconds 240] [--steps N]
[--out DIR] [--seed 0] [--threads T]`.

Recipe (EDM, Karras et al. 2022, Sec. 5 and Table 1), on the 1500 training digits of `sdm_verify.models.digits`:
    ln sigma ~ N(-1.2, 1.2^2) with probability 0.9, uniform on [ln 0.002, ln 80] with probability 0.1;
    x = x0 + sigma n;  loss = lambda(sigma) |D(x, sigma) - x0|^2, averaged over pixels,
    lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 (= |F - F_target|^2: unit weight on the raw network output).
    Adam, lr 2e-3 with a linear warm-up over the first 200 steps; batch 128 drawn from per-epoch permutations;
    float32; EMA of the weights with decay min(0.999, (1 + k)/(10 + k)) at step k: the warm-up keeps the random
    initial weights out of a short run's average (a plain 0.999 EMA still gives them weight 0.999^k = 18% after
    1700 steps); it averages over roughly the last k/9 steps until k ~ 9000. The EMA weights are saved.
The uniform part is this project's addition: EDM's log-normal alone puts sigma = 80 at 4.6 standard deviations
(probability ~1e-6 per draw), the network then extrapolates in c_noise there and D(x, 80) missed the data mean by
0.26 RMS (0.008 is exact) in a first 2000-step run; the sampler and the loader's declared range [0.002, 80] need the
whole range trained.
Without --steps the run lasts --seconds of wall clock, so the step count depends on the machine: it is recorded in
config.json, and `--steps <that count> --seed <seed>` reproduces the weights (up to the CPU's float32 summation
order under a different thread count).

Writes DIR/config.json and DIR/model.safetensors (the own checkpoint format, sdm_verify.models.own) and
DIR/samples.png: 100 samples (EDM Heun, 18 steps, sigma 80 -> 0.002 then into 0, float64, seed fixed) beside 100
real test digits.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import schedules, solvers
from . import architectures
from .digits import digits_checkpoint, load_digits_images, measure_sigma_data, save_image_grid
from .own import save_denoiser

__all__ = ["train", "DEFAULT_ARCH", "sample", "main"]

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
P_MEAN, P_STD = -1.2, 1.2
#: probability of drawing ln sigma uniformly on [ln SIGMA_MIN, ln SIGMA_MAX] instead of from N(P_MEAN, P_STD^2)
P_UNIFORM = 0.1
#: builder kwargs of the committed model (sigma_data is added from the data)
DEFAULT_ARCH = {"in_channels": 1, "channels": 32, "channel_mult": [1, 2], "num_blocks": 2, "num_freqs": 16,
                "fmax": 8.0, "attn_heads": 1, "groups": 8, "label_dim": 0}
SAMPLE_SEED = 1234


def sample_sigma(batch: int, gen: torch.Generator, dtype=torch.float32, p_uniform: float = P_UNIFORM) -> torch.Tensor:
    """ln sigma ~ N(P_MEAN, P_STD^2), replaced with probability p_uniform by U[ln SIGMA_MIN, ln SIGMA_MAX]."""
    log_normal = P_MEAN + P_STD * torch.randn(batch, generator=gen, dtype=torch.float64)
    lo, hi = math.log(SIGMA_MIN), math.log(SIGMA_MAX)
    log_uniform = lo + (hi - lo) * torch.rand(batch, generator=gen, dtype=torch.float64)
    pick = torch.rand(batch, generator=gen, dtype=torch.float64) < p_uniform
    return torch.exp(torch.where(pick, log_uniform, log_normal)).to(dtype)


def edm_loss(model, x0: torch.Tensor, sigma_data: float, gen: torch.Generator,
             p_uniform: float = P_UNIFORM) -> torch.Tensor:
    """mean of lambda(sigma) (D(x0 + sigma n, sigma) - x0)^2, sigma from `sample_sigma`."""
    sigma = sample_sigma(x0.shape[0], gen, x0.dtype, p_uniform)
    noise = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    denoised = model(x0 + sigma[:, None, None, None] * noise, sigma)
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    return (weight[:, None, None, None] * (denoised - x0) ** 2).mean()


@torch.no_grad()
def apply_step(model, ema, opt, loss, step: int, ema_decay: float, losses: list) -> None:
    """One Adam step on `loss`, then the EMA update with the warm-up decay min(ema_decay, (1 + step)/(10 + step)),
    and the loss appended to `losses`; a non-finite loss raises FloatingPointError naming the step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    decay = min(ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(pm, 1 - decay)
    losses.append(float(loss.detach()))
    if not math.isfinite(losses[-1]):
        raise FloatingPointError(f"training diverged at step {step}: loss {losses[-1]}")


def sample(model, n: int = 100, steps: int = 18, seed: int = SAMPLE_SEED) -> torch.Tensor:
    """n samples of `model` (run in float64): EDM Heun on the EDM rho = 7 grid, 80 -> 0.002 then a step into 0."""
    model = copy.deepcopy(model).double().eval()
    shape = (n, model.net.conv_in.in_channels, 8, 8)
    gen = torch.Generator().manual_seed(seed)
    x = SIGMA_MAX * torch.randn(shape, generator=gen, dtype=torch.float64)
    grid = schedules.get("edm")(steps, SIGMA_MIN, SIGMA_MAX, zero=True)
    return solvers.get("heun")(lambda y, s: model(y, s), x, grid)


def train(out, *, seconds: float | None = 240.0, steps: int | None = None, seed: int = 0, batch: int = 128,
          lr: float = 2e-3, warmup: int = 200, ema_decay: float = 0.999, arch: dict | None = None,
          n_samples: int = 100, threads: int | None = None, progress: bool = True) -> dict:
    """Train, write the checkpoint (and samples.png when n_samples > 0) to `out`; returns the config written.

    `steps` trains exactly that many steps; otherwise training stops after `seconds` of wall clock. Runs on
    `threads` torch threads (default: all cores) and restores the previous thread count afterwards.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    try:
        return _train(out, seconds, steps, seed, batch, lr, warmup, ema_decay, arch, n_samples, progress)
    finally:
        torch.set_num_threads(previous)


def _train(out, seconds, steps, seed, batch, lr, warmup, ema_decay, arch, n_samples, progress) -> dict:
    if steps is None and seconds is None:
        raise ValueError("steps: give a number of steps or a time budget (seconds)")
    if steps is not None and not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    if steps is None and not (isinstance(seconds, int | float) and seconds > 0):
        raise ValueError(f"seconds: expected a time budget > 0, got {seconds!r}")
    if not (isinstance(batch, int) and batch >= 1):
        raise ValueError(f"batch: expected an int >= 1, got {batch!r}")
    out = Path(out)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    data, _ = load_digits_images("train", dtype=torch.float32)
    sigma_data = measure_sigma_data()
    kwargs = {**DEFAULT_ARCH, **(arch or {}), "sigma_data": sigma_data}
    model = architectures.build("edm-unet", **kwargs).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    losses: list[float] = []
    perm, pos = torch.randperm(len(data), generator=gen), 0
    bar = tqdm(total=steps, disable=not progress, desc="train digits", unit="step")
    start = time.perf_counter()
    step = 0
    while (step < steps) if steps is not None else (time.perf_counter() - start < seconds):
        if pos + batch > len(data):
            perm, pos = torch.randperm(len(data), generator=gen), 0
        x0 = data[perm[pos: pos + batch]]
        pos += batch
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup)
        loss = edm_loss(model, x0, sigma_data, gen)
        apply_step(model, ema, opt, loss, step, ema_decay, losses)
        step += 1
        bar.update(1)
        if step % 25 == 0 or step == steps:
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.4f}")
    bar.close()
    elapsed = time.perf_counter() - start

    chunk = 250
    config = {
        "format": "sdm-verify-denoiser",
        "format_version": 1,
        "architecture": "edm-unet",
        "kwargs": kwargs,
        "sigma_min": SIGMA_MIN,
        "sigma_max": SIGMA_MAX,
        "sigma_data": sigma_data,
        "shape": [kwargs["in_channels"], 8, 8],
        "label_dim": kwargs["label_dim"],
        "weights": "model.safetensors",
        "description": "EDM-preconditioned UNet (sdm_verify.models.edm_unet, smooth noise embedding) trained on "
        "sklearn's 8x8 digits; EMA weights. Reproduce: python -m sdm_verify.models.train_digits "
        f"--steps {step} --seed {seed} --threads {torch.get_num_threads()}",
        "training": {
            "steps": step,
            "seconds": round(elapsed, 1),
            "seed": seed,
            "final_loss": sum(losses[-chunk:]) / len(losses[-chunk:]),
            "final_loss_window": f"mean EDM-weighted loss of the last {min(chunk, step)} steps",
            "loss_per_250_steps": [round(sum(losses[i:i + chunk]) / len(losses[i:i + chunk]), 4)
                                   for i in range(0, len(losses), chunk)],
            "batch": batch,
            "lr": lr,
            "warmup_steps": warmup,
            "ema_decay": ema_decay,
            "p_mean": P_MEAN,
            "p_std": P_STD,
            "p_uniform": P_UNIFORM,
            "sigma_sampling": f"ln sigma ~ N({P_MEAN}, {P_STD}^2), w.p. {P_UNIFORM} U[ln {SIGMA_MIN}, ln {SIGMA_MAX}]",
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "data": "sklearn.datasets.load_digits, first 1500 images, x / 8 - 1 in [-1, 1]",
        },
    }
    save_denoiser(ema, out, config["architecture"], kwargs, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX,
                  sigma_data=sigma_data, shape=config["shape"], label_dim=config["label_dim"],
                  description=config["description"], training=config["training"], weights_dtype=torch.float32)
    if n_samples > 0:
        samples = sample(ema, n_samples)
        real, _ = load_digits_images("test")
        save_image_grid([samples, real[:n_samples]], out / "samples.png", nrow=10,
                        title=[f"model: EDM Heun 18 steps ({step} training steps)", "real test digits"])
    return config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdm_verify.models.train_digits",
                                     description="Train the digits EDM denoiser and write its checkpoint.")
    parser.add_argument("--seconds", type=float, default=240.0, help="wall-clock budget (ignored with --steps)")
    parser.add_argument("--steps", type=int, default=None, help="train exactly this many steps")
    parser.add_argument("--out", type=Path, default=digits_checkpoint(), help="checkpoint directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: all cores; on a loaded machine 1 thread avoids oversubscription)")
    args = parser.parse_args(argv)
    config = train(args.out, seconds=args.seconds, steps=args.steps, seed=args.seed, threads=args.threads)
    t = config["training"]
    print(f"wrote {args.out}: {t['steps']} steps in {t['seconds']} s, final loss {t['final_loss']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
