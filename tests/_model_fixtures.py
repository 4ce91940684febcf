"""Checkpoint fixtures for tests/test_models_load.py, each written by the tests themselves (nothing downloads).

- a tiny own-format architecture ("test-tiny-precond": EDM preconditioning around one 3x3 conv),
- a tiny diffusers pipeline (UNet2DModel + DDPMScheduler, save_pretrained),
- a synthetic NVlabs persistent pickle, produced by a test-side re-statement of the `torch_utils.persistence`
  protocol: a persistent object pickles as REDUCE(torch_utils.persistence._reconstruct_persistent_obj, (meta,)),
  meta = {type: "class", version: 6, module_src, class_name, state = the object's __dict__}.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch

from sdm_verify.models import architectures

# ------------------------------------------------------------------------------------------ own-format module

TINY_ARCH = "test-tiny-precond"


class TinyPrecond(torch.nn.Module):
    """D = c_skip x + c_out F(c_in x, c_noise) with F a 3x3 conv scaled by (1 + c_noise / 4) plus a label bias
    (Karras et al. 2022, Table 1: c_skip = sd^2/(s^2+sd^2), c_out = s sd/sqrt(s^2+sd^2), c_in = 1/sqrt(s^2+sd^2),
    c_noise = ln(s)/4)."""

    def __init__(self, channels: int = 2, sigma_data: float = 0.5, label_dim: int = 0):
        super().__init__()
        self.sigma_data = sigma_data
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.label_bias = torch.nn.Parameter(torch.randn(max(label_dim, 1), channels)) if label_dim else None

    def forward(self, x, sigma, labels=None):
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
        sd = self.sigma_data
        c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
        c_in, c_noise = 1 / (s**2 + sd**2).sqrt(), s.log() / 4
        f = self.conv(c_in * x) * (1 + c_noise / 4)
        if labels is not None:
            f = f + (labels @ self.label_bias)[:, :, None, None]
        return c_skip * x + c_out * f


if TINY_ARCH not in architectures._BUILDERS:
    architectures.register(TINY_ARCH)(TinyPrecond)


# ---------------------------------------------------------------------------------------- diffusers pipeline

TINY_UNET = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                 norm_num_groups=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8)


def tiny_unet(seed: int = 0, **overrides):
    """A 45k-parameter UNet2DModel whose weights are perturbed so that no layer is zero-initialised."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(**{**TINY_UNET, **overrides})
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet.eval()


def save_pipeline(directory: Path, unet, **scheduler_kwargs) -> Path:
    """A DDPMPipeline directory (model_index.json, unet/, scheduler/) written with save_pretrained."""
    from diffusers import DDPMPipeline, DDPMScheduler

    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**scheduler_kwargs)).save_pretrained(str(directory))
    return directory


# ---------------------------------------------------------------------------------- NVlabs persistent pickle

PRECOND_SOURCE = '''
import numpy as np
import torch
from torch_utils import persistence
from torch_utils import misc

with open(MARKER_PATH, "a") as _f:      # a side effect at import: shows whether this source ever ran
    _f.write("executed\\n")


@persistence.persistent_class
class Mix(torch.nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(channels, channels) / channels)

    def forward(self, x):
        return torch.einsum("oc,bchw->bohw", self.weight.to(x.dtype), x)


@persistence.persistent_class
class TinyEDMPrecond(torch.nn.Module):
    def __init__(self, img_resolution, img_channels, label_dim=0, sigma_min=0.002, sigma_max=80.0, sigma_data=0.5):
        super().__init__()
        self.img_resolution, self.img_channels, self.label_dim = img_resolution, img_channels, label_dim
        self.sigma_min, self.sigma_max, self.sigma_data = sigma_min, sigma_max, sigma_data
        self.mixes = torch.nn.ModuleList([Mix(img_channels)])  # persistent blocks inside a torch container
        self.conv = torch.nn.Conv2d(img_channels, img_channels, 1)
        self.label_map = torch.nn.Parameter(torch.randn(max(label_dim, 1), img_channels))

    def forward(self, x, sigma, class_labels=None, force_fp32=False):
        x = x.to(torch.float32)                                   # as NVlabs' EDMPrecond does
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
        dtype = torch.float32
        c_skip = self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + self.sigma_data ** 2).sqrt()
        c_in = 1 / (self.sigma_data ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
        h = (c_in * x).to(dtype)
        F_x = (self.conv(h) + self.mixes[0](h)) * (1 + misc.const_like(x, np.float32(0.25)) * c_noise)
        if self.label_dim:
            F_x = F_x + (class_labels.to(torch.float32) @ self.label_map)[:, :, None, None]
        assert F_x.dtype == dtype
        return c_skip * x + c_out * F_x.to(torch.float32)
'''


def tiny_edm_reference(state: dict, x: torch.Tensor, sigma: torch.Tensor, onehot=None, sigma_data=0.5):
    """TinyEDMPrecond's D computed here in float64 from its parameters (an independent statement of its forward)."""
    x = x.double()
    s = sigma.double().reshape(-1, 1, 1, 1)
    sd2 = sigma_data**2
    c_skip, c_out, c_in = sd2 / (s**2 + sd2), s * sigma_data / (s**2 + sd2).sqrt(), 1 / (s**2 + sd2).sqrt()
    h = c_in * x
    w = state["conv.weight"].double()[:, :, 0, 0] + state["mixes.0.weight"].double()
    f = torch.einsum("oc,bchw->bohw", w, h) + state["conv.bias"].double()[None, :, None, None]
    f = f * (1 + 0.25 * s.log() / 4)
    if onehot is not None:
        f = f + (onehot.double() @ state["label_map"].double())[:, :, None, None]
    return c_skip * x + c_out * f


def _fake_reconstruct(meta):  # pickled by reference only; the loader under test must never call it
    raise AssertionError("the fixture's reconstruct function is never called")


_fake_reconstruct.__module__ = "torch_utils.persistence"
_fake_reconstruct.__qualname__ = _fake_reconstruct.__name__ = "_reconstruct_persistent_obj"


class FixtureEasyDict(dict):
    """Pickles as dnnlib.util.EasyDict (EDM2's top-level object)."""


FixtureEasyDict.__module__, FixtureEasyDict.__qualname__ = "dnnlib.util", "EasyDict"


class RawPersistent:
    """A persistent record with arbitrary source (e.g. one that must never run)."""

    def __init__(self, src: str, class_name: str, state: dict):
        self.meta = dict(type="class", version=6, module_src=src, class_name=class_name, state=state)

    def __reduce__(self):
        return (_fake_reconstruct, (self.meta,))


class Evil:
    """Reduces to builtins.exec: a global the restricted unpickler must refuse before it could run."""

    def __init__(self, marker: Path):
        self.code = f"open({str(marker)!r}, 'a').write('evil ran\\n')"

    def __reduce__(self):
        return (exec, (self.code,))


@contextlib.contextmanager
def _fixture_modules(current_src: list):
    """Fixture-side torch_utils / dnnlib modules, in sys.modules only while building and pickling."""
    names = ("torch_utils", "torch_utils.persistence", "torch_utils.misc", "dnnlib", "dnnlib.util")
    saved = {n: sys.modules.get(n) for n in names}
    mods = {n: types.ModuleType(n) for n in names}

    def persistent_class(cls):
        src = current_src[0]

        def __reduce__(self):
            meta = dict(type="class", version=6, module_src=src, class_name=cls.__name__, state=dict(self.__dict__))
            return (_fake_reconstruct, (meta,))

        cls.__reduce__ = __reduce__
        return cls

    def const_like(ref, value):
        return torch.as_tensor(np.asarray(value), dtype=ref.dtype, device=ref.device)

    mods["torch_utils.persistence"].persistent_class = persistent_class
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _fake_reconstruct
    mods["torch_utils.misc"].const_like = const_like
    mods["torch_utils"].persistence = mods["torch_utils.persistence"]
    mods["torch_utils"].misc = mods["torch_utils.misc"]
    mods["dnnlib.util"].EasyDict = FixtureEasyDict
    mods["dnnlib"].util = mods["dnnlib.util"]
    sys.modules.update(mods)
    try:
        yield
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def build_tiny_edm(marker: Path, *, label_dim: int = 0, resolution: int = 4, channels: int = 2, seed: int = 0,
                   sigma_min: float = 0.002, sigma_max: float = 80.0):
    """(source, module) of TinyEDMPrecond built directly from its source (the marker file is written, then removed)."""
    src = PRECOND_SOURCE.replace("MARKER_PATH", repr(str(marker)))
    current = [src]
    with _fixture_modules(current):
        mod = types.ModuleType("_fixture_tiny_edm")
        exec(compile(src, "<fixture tiny edm>", "exec"), mod.__dict__)
        torch.manual_seed(seed)
        net = mod.TinyEDMPrecond(resolution, channels, label_dim=label_dim, sigma_min=sigma_min, sigma_max=sigma_max)
        with torch.no_grad():
            net.conv.bias.add_(0.3)
    marker.unlink(missing_ok=True)
    return src, net.eval()


def write_persistent_pickle(path: Path, src: str, net, *, top: str = "easydict", evil: Path | None = None,
                            poison: bool = True) -> Path:
    """Pickle `net` the way NVlabs' training loop does: {"ema": net, "loss_fn": ..., "dataset_kwargs": ...}.

    top: "easydict" (EDM2: dnnlib.util.EasyDict) or "dict" (EDM). poison: add a loss_fn whose source raises if
    ever run. evil: put an object reducing to builtins.exec first."""
    current = [src]
    entries = {}
    if evil is not None:
        entries["evil"] = Evil(evil)
    entries["ema"] = net
    if poison:
        entries["loss_fn"] = RawPersistent("raise RuntimeError('loss_fn source must never run')\n", "Loss", {})
    entries["dataset_kwargs"] = FixtureEasyDict(class_name="training.dataset.ImageFolderDataset", path="/x")
    with _fixture_modules(current), open(path, "wb") as f:
        pickle.dump(FixtureEasyDict(entries) if top == "easydict" else dict(entries), f, protocol=4)
    return path


# ------------------------------------------------------------------------------------------- VP schedule math


def linear_vp_sigmas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """sigma_t = sqrt((1 - abar_t)/abar_t) of the DDPM linear schedule, abar_t = prod_{i<=t}(1 - beta_i) (float64)."""
    betas = np.array([beta_start + (beta_end - beta_start) * i / (T - 1) for i in range(T)])
    abar = np.cumprod(1.0 - betas)
    return np.sqrt((1.0 - abar) / abar)


def timestep_embedding_f64(t: float, dim: int) -> np.ndarray:
    """DDPM's sinusoidal embedding in float64 as diffusers' Timesteps(flip_sin_to_cos=True, freq_shift=0) defines it:
    [cos(t w_k), sin(t w_k)], w_k = 10000^(-k/(dim/2)), k = 0..dim/2-1 (Vaswani et al. 2017; Ho et al. 2020)."""
    half = dim // 2
    w = np.exp(-math.log(10000.0) * np.arange(half) / half)
    return np.concatenate([np.cos(t * w), np.sin(t * w)])
