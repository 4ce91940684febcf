"""diffusers pixel-space DDPM-style models (UNet2DModel + a discrete VP scheduler config) as an EDM denoiser.

Discrete VP schedule (Ho et al. 2020): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) n, abar_t = prod_{i<=t} (1 - beta_i),
t = 0..T-1. Dividing by sqrt(abar_t) gives EDM variables x = x_t / sqrt(abar_t) = x0 + sigma_t n with
    sigma_t = sqrt((1 - abar_t) / abar_t),       (Karras et al. 2022, Table 1, VP column, discretised)
so with alpha = 1/sqrt(1 + sigma^2) = sqrt(abar), x_vp = alpha x and sigma_vp = sigma alpha = sqrt(1 - abar):
    epsilon:       x0 = (x_vp - sigma_vp eps) / alpha        =>  D = x - sigma eps_hat(x_vp, t(sigma))
    v_prediction:  v = alpha eps - sigma_vp x0, x0 = alpha x_vp - sigma_vp v (alpha^2 + sigma_vp^2 = 1)
                                                             =>  D = alpha (x_vp - sigma v_hat)
    sample:        D = x0_hat.
t(sigma) is fractional (the UNet's sinusoidal embedding takes real t). Default "spline": a quintic interpolating
spline of t against F = log(1 + sigma^2) = -log abar through the table, so D is smooth in sigma (C^4) and the
measured order of a high-order solver is not capped by the interpolation; "linear": piecewise linear in log sigma,
which is only continuous, so D has a kink at every table node and solvers above order 2 measure ~2 once the grid is
finer than the table. Both agree with the table at integer t; between them the network was never trained, and any
smooth extension is as valid as another.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .base import Denoiser, ModelError, check_device, check_dtype, read_json_object

#: Nichol & Dhariwal 2021 (Eq. 17) clip of the cosine schedule's betas; diffusers' default max_beta
MAX_BETA = 0.999
#: cosine schedule offset s (Nichol & Dhariwal 2021, Sec. 3.2)
COSINE_S = 0.008
SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTIONS = ("epsilon", "v_prediction", "sample")
INTERPOLATIONS = ("spline", "linear")
#: the most timesteps a scheduler config may declare (real ones have 1000-4000; the table is built in memory)
MAX_TIMESTEPS = 1_000_000
_MISSING = "diffusers is not installed: pip install 'sdm-verify[diffusers]'"


# ------------------------------------------------------------------------------------------- the VP schedule


def vp_betas(config: dict) -> np.ndarray:
    """The float64 betas of a diffusers scheduler config (trained_betas, or beta_schedule with its parameters)."""
    if config.get("rescale_betas_zero_snr"):
        raise ModelError("scheduler config: rescale_betas_zero_snr (zero terminal SNR, sigma_T = inf) is not supported")
    trained = config.get("trained_betas")
    if trained is not None:
        if not isinstance(trained, (list, tuple, np.ndarray)) or not all(
                isinstance(b, (int, float, np.floating, np.integer)) and not isinstance(b, bool)
                for b in np.asarray(trained, dtype=object).reshape(-1)):
            raise ModelError(f"scheduler config: trained_betas must be a list of numbers, got {trained!r:.80}")
        betas = np.asarray(trained, dtype=np.float64).reshape(-1)
    else:
        T = config.get("num_train_timesteps", 1000)
        if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or not 2 <= T <= MAX_TIMESTEPS:
            raise ModelError(f"scheduler config: num_train_timesteps must be an integer in [2, {MAX_TIMESTEPS}], "
                             f"got {T!r}")
        T = int(T)
        schedule = config.get("beta_schedule", "linear")
        for key, default in (("beta_start", 1e-4), ("beta_end", 0.02)):
            v = config.get(key, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ModelError(f"scheduler config: {key} must be a finite number, got {v!r}")
        b0, b1 = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
        if schedule == "linear":  # Ho et al. 2020
            betas = np.linspace(b0, b1, T, dtype=np.float64)
        elif schedule == "scaled_linear":  # Rombach et al. 2022 (latent diffusion): linear in sqrt(beta)
            betas = np.linspace(math.sqrt(b0), math.sqrt(b1), T, dtype=np.float64) ** 2
        elif schedule == "squaredcos_cap_v2":  # Nichol & Dhariwal 2021: abar(u) ~ cos^2((u + s)/(1 + s) pi/2)
            f = np.cos((np.arange(T + 1, dtype=np.float64) / T + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2
            betas = np.minimum(1 - f[1:] / f[:-1], MAX_BETA)
        else:
            raise ModelError(f"scheduler config: beta_schedule {schedule!r} is not supported; supported: "
                             f"{', '.join(SCHEDULES)} or trained_betas")
    if betas.size < 2 or not np.all((betas > 0) & (betas < 1)):
        raise ModelError("scheduler config: betas must be at least 2 numbers in (0, 1)")
    return betas


def vp_alphas_cumprod(config: dict) -> np.ndarray:
    """abar_t = prod_{i<=t} (1 - beta_i) in float64 (summed in log space: exp(sum log1p(-beta)))."""
    return np.exp(np.cumsum(np.log1p(-vp_betas(config))))


class VPTable:
    """sigma_t = sqrt((1 - abar_t)/abar_t) on the smooth part of the table and the map sigma -> fractional t.

    The cosine schedule's clipped betas (beta = MAX_BETA at the last steps) break its smoothness: the table stops
    before the first clipped index, so the model's range is [sigma_0, sigma_{last unclipped}]."""

    def __init__(self, config: dict, interpolation: str = "spline"):
        if interpolation not in INTERPOLATIONS:
            raise ModelError(f"interpolation: expected one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        betas = vp_betas(config)
        clipped = np.nonzero(betas >= MAX_BETA)[0]
        n = int(clipped[0]) if clipped.size else betas.size
        if n < 6:
            raise ModelError(f"scheduler config: only {n} unclipped timesteps (beta < {MAX_BETA}); need at least 6")
        #: F_t = -log abar_t = log(1 + sigma_t^2), increasing in t
        self.F = -np.cumsum(np.log1p(-betas[:n]))
        self.sigmas = np.sqrt(np.expm1(self.F))
        self.t_nodes = np.arange(n, dtype=np.float64)
        self.interpolation = interpolation
        if interpolation == "spline":
            from scipy.interpolate import make_interp_spline

            self._spline = make_interp_spline(self.F, self.t_nodes, k=5)
        self.num_train_timesteps = betas.size

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def t(self, sigma: np.ndarray) -> np.ndarray:
        """Fractional timestep t(sigma), exact (up to rounding) at the table's sigma_t."""
        sigma = np.asarray(sigma, dtype=np.float64)
        if self.interpolation == "spline":
            t = self._spline(np.log1p(sigma * sigma))
        else:
            t = np.interp(np.log(sigma), np.log(self.sigmas), self.t_nodes)
        return np.clip(t, 0.0, self.t_nodes[-1])  # sigma inside the range's relative slack may round past an end


# ------------------------------------------------------------------------------------------------ the denoiser


class DiffusersDenoiser(Denoiser):
    """D(x, sigma) of a diffusers UNet2DModel trained on a discrete VP schedule (see the module docstring)."""

    promote_float64 = True  # diffusers computes the timestep embedding in float32 (`timesteps.float()`)

    def __init__(self, unet, table: VPTable, prediction_type: str, **kwargs):
        if prediction_type not in PREDICTIONS:
            raise ModelError(f"scheduler config: prediction_type {prediction_type!r} is not supported; supported: "
                             f"{', '.join(PREDICTIONS)}")
        self.table, self.prediction_type = table, prediction_type
        super().__init__(unet, sigma_min=table.sigma_min, sigma_max=table.sigma_max, **kwargs)

    def _forward(self, x, sigma, labels):
        t = torch.from_numpy(self.table.t(sigma.cpu().numpy()))
        t = t.to(device=self.device, dtype=torch.float64 if self.dtype == torch.float64 else torch.float32)
        view = (-1,) + (1,) * (x.ndim - 1)
        alpha = torch.rsqrt(1 + sigma * sigma).to(self.dtype).reshape(view)  # sqrt(abar) = 1/sqrt(1 + sigma^2)
        s = sigma.to(self.dtype).reshape(view)
        x_vp = alpha * x
        out = self.module(x_vp, t, class_labels=self._class_indices(labels), return_dict=False)[0]
        out = out[:, : self.shape[0]]  # a learned-variance UNet stacks (eps, variance) along channels
        if self.prediction_type == "epsilon":
            return x - s * out
        if self.prediction_type == "v_prediction":
            return alpha * (x_vp - s * out)
        return out

    @staticmethod
    def _class_indices(onehot):
        """UNet2DModel embeds class indices: one-hot rows only (soft labels cannot be embedded)."""
        if onehot is None:
            return None
        if not bool(((onehot == 0) | (onehot == 1)).all() and (onehot.sum(1) == 1).all()):
            raise ModelError("labels: a diffusers UNet2DModel takes class indices; got labels that are not one-hot")
        return onehot.argmax(1)


# -------------------------------------------------------------------------------------------------- loading


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 for the duration (diffusers must never reach for the hub)."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def is_diffusers_dir(path: Path) -> bool:
    """A pipeline directory (model_index.json) or a bare model directory (config.json with `_class_name`)."""
    path = Path(path)
    if (path / "model_index.json").is_file():
        return True
    try:
        return "_class_name" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _locate(path: Path) -> tuple[Path, str | None, Path, dict]:
    """(root, subfolder, scheduler config path, model_index or {}) of a pipeline or bare UNet directory."""
    if (path / "model_index.json").is_file():
        index = read_json_object(path / "model_index.json")
        unet = index.get("unet")
        if not unet:
            raise ModelError(f"path: pipeline {path} has no unet component (model_index.json: {sorted(index)})")
        sched = path / "scheduler" / "scheduler_config.json"
        if not sched.is_file():
            raise ModelError(f"path: pipeline {path} lacks its scheduler config {sched}")
        return path, "unet", sched, index
    candidates = [path / "scheduler_config.json", path / "scheduler" / "scheduler_config.json",
                  path.parent / "scheduler" / "scheduler_config.json"]
    for sched in candidates:
        if sched.is_file():
            return path, None, sched, {}
    raise ModelError(f"path: {path} is a bare diffusers model directory without a scheduler config (the VP noise "
                     f"schedule maps t to sigma); looked for {', '.join(str(c) for c in candidates)}")


def load_diffusers(path, device="cpu", dtype: torch.dtype = torch.float64, interpolation: str = "spline",
                   sigma_data: float = 0.5) -> DiffusersDenoiser:
    """Load a diffusers UNet2DModel (pipeline directory or bare UNet directory) with its VP scheduler config.

    sigma_data: 0.5 by default (diffusers pixel models see data in [-1, 1])."""
    check_dtype(dtype)
    check_device(device)
    if interpolation not in INTERPOLATIONS:
        raise ModelError(f"interpolation: expected one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    if isinstance(sigma_data, bool) or not isinstance(sigma_data, (int, float)) or not (
            math.isfinite(sigma_data) and sigma_data > 0):
        raise ModelError(f"sigma_data: expected a finite positive number, got {sigma_data!r}")
    path = Path(path)
    root, sub, sched_path, index = _locate(path)
    unet_dir = root / sub if sub else root
    unet_cfg = read_json_object(unet_dir / "config.json")
    cls = unet_cfg.get("_class_name")
    if cls != "UNet2DModel":
        raise ModelError(f"path: {unet_dir} holds a {cls}; only UNet2DModel (pixel or latent DDPM-style) is supported")
    if unet_cfg.get("time_embedding_type", "positional") != "positional":
        raise ModelError(f"path: {unet_dir}: time_embedding_type {unet_cfg.get('time_embedding_type')!r} is not "
                         f"supported (only 'positional' takes the fractional timesteps of a VP schedule)")
    if unet_cfg.get("class_embed_type") is not None:
        raise ModelError(f"path: {unet_dir}: class_embed_type {unet_cfg.get('class_embed_type')!r} is not supported "
                         f"(only an embedding table of num_class_embeds classes)")
    sched = read_json_object(sched_path)
    prediction = sched.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise ModelError(f"path: {sched_path}: prediction_type {prediction!r} is not supported; supported: "
                         f"{', '.join(PREDICTIONS)}")
    try:
        table = VPTable(sched, interpolation)
    except ModelError as exc:  # name the file the bad value is in
        raise ModelError(f"path: {sched_path}: {exc}") from None
    except (ValueError, TypeError) as exc:  # a schedule the spline cannot take (e.g. betas that do not increase F)
        raise ModelError(f"path: {sched_path}: the scheduler config gives no usable VP table: {exc}") from None
    try:  # imported once the configs are checked: a bad config is refused without the slow import
        from diffusers import UNet2DModel
    except ImportError:
        raise ImportError(_MISSING) from None
    with _offline():
        try:
            unet = UNet2DModel.from_pretrained(str(root), subfolder=sub, local_files_only=True,
                                              low_cpu_mem_usage=False)
        except (OSError, ValueError, RuntimeError, TypeError, KeyError, AttributeError) as exc:
            # TypeError/KeyError/AttributeError: a config.json with values of the wrong type (e.g. "in_channels": "x")
            msg = "; ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip()) or type(exc).__name__
            raise ModelError(f"path: cannot load the UNet2DModel from {unet_dir}: {msg}") from None
    c_in, c_out = int(unet.config.in_channels), int(unet.config.out_channels)
    if c_out not in (c_in, 2 * c_in):
        raise ModelError(f"path: {unet_dir}: out_channels {c_out} is neither in_channels {c_in} nor twice it")
    size = unet.config.sample_size
    hw = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    schedule = "trained_betas" if sched.get("trained_betas") is not None else sched.get("beta_schedule", "linear")
    notes = []
    if c_out == 2 * c_in:
        notes.append("learned variance: the first half of the output channels is used")
    if any(k in index for k in ("vqvae", "vae")):
        notes.append("latent-space model: D acts on the autoencoder's latents")
    if table.sigmas.size < table.num_train_timesteps:
        notes.append(f"range stops at t = {table.sigmas.size - 1}: later betas are clipped at {MAX_BETA}")
    params = sum(p.numel() for p in unet.parameters())
    description = (f"diffusers UNet2DModel ({params} parameters), {prediction} prediction, {schedule} VP schedule "
                   f"T = {table.num_train_timesteps}, t(sigma) by {interpolation} interpolation"
                   + "".join(f"; {n}" for n in notes))
    return DiffusersDenoiser(unet, table, prediction, sigma_data=sigma_data, shape=(c_in, *hw),
                             label_dim=int(unet.config.num_class_embeds or 0), format="diffusers", source=str(path),
                             description=description,
                             metadata={"unet": dict(unet.config), "scheduler": sched, "model_index": index},
                             device=device, dtype=dtype)
