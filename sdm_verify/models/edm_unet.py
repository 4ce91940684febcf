"""A small EDM-preconditioned UNet (architecture "edm-unet"): the project's own trained denoiser.

Preconditioning (Karras et al. 2022, "Elucidating the design space...", Table 1), sd = sigma_data:
    c_skip = sd^2 / (sigma^2 + sd^2)        c_out = sigma sd / sqrt(sigma^2 + sd^2)
    c_in   = 1 / sqrt(sigma^2 + sd^2)       c_noise = ln(sigma) / 4
    D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)
so the network F only ever sees unit-variance inputs and targets, and D is the posterior-mean (x0) prediction of the
canonical process x = x0 + sigma n.

F is a UNet: ResBlocks (GroupNorm, SiLU, 3x3 convolutions, FiLM-style scale/shift from the noise embedding),
`num_blocks` per resolution level and one level per entry of `channel_mult` (2x2 average-pool down, nearest-neighbour
up), a ResBlock and a self-attention block at the lowest resolution, and a skip connection from every encoder block to
its mirror decoder block (channel concatenation). With 8x8 inputs and levels 32/64 it has
706,081 parameters.

**The noise embedding is deliberately smooth.** c_noise enters through Fourier features sin/cos(w_k c_noise) with LOW
frequencies only, w_k geometric in [1, fmax], fmax = 8 by default (over the trained range c_noise in [-1.55, 1.10]
the fastest feature makes ~3.4 periods). High-frequency embeddings (NCSN++-style Fourier features with frequencies up
to ~1000, or transformer-style positional embeddings of 1000 c_noise) let the learned field D(x, sigma) oscillate
in sigma between the training noise levels; the PF-ODE's right-hand side is then not smooth on the scale of fine
grids, and measured convergence orders collapse (EDM Heun measured ~1.2 instead of ~2.1 at 64-128 steps on the
digits model: docs/real-models.md §2). A solver-verification suite needs a field that is smooth in sigma.

The module works in float32 and float64 alike (`model.double()`); x must be in the parameters' dtype.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from . import architectures

__all__ = ["EDMPrecond", "UNet", "FourierEmbedding", "build_edm_unet"]


def _groups(channels: int, groups: int) -> int:
    """The largest divisor of `channels` that is <= `groups` (GroupNorm needs channels % groups == 0)."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


class FourierEmbedding(nn.Module):
    """[c, sin(w_k c), cos(w_k c)]_k with w_k = fmax^(k/(K-1)), k = 0..K-1: smooth features of the scalar c_noise."""

    def __init__(self, num_freqs: int = 16, fmax: float = 8.0):
        super().__init__()
        if num_freqs < 1:
            raise ValueError(f"num_freqs: expected >= 1, got {num_freqs}")
        if not fmax >= 1.0:
            raise ValueError(f"fmax: expected a maximum frequency >= 1, got {fmax}")
        k = torch.arange(num_freqs, dtype=torch.float64)
        freqs = fmax ** (k / max(num_freqs - 1, 1))
        self.register_buffer("freqs", freqs.to(torch.float32))
        self.out_dim = 2 * num_freqs + 1

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        arg = c[:, None] * self.freqs.to(c.dtype)[None, :]
        return torch.cat([c[:, None], torch.sin(arg), torch.cos(arg)], dim=1)


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))); h = GN(h) * (1 + scale) + shift; out = (conv(SiLU(h)) + skip(x)) / sqrt(2)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin, groups), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout, groups), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return (h + self.skip(x)) * math.sqrt(0.5)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels: x + proj(softmax(q k^T / sqrt(d)) v), q, k, v from GN(x)."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"heads: {heads} does not divide the attention block's {channels} channels")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, hgt * wid).unbind(1)
        w = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) / math.sqrt(c // self.heads), dim=-1)
        out = torch.einsum("bhij,bhdj->bhdi", w, v).reshape(b, c, hgt, wid)
        return (x + self.proj(out)) * math.sqrt(0.5)


class UNet(nn.Module):
    """F(x_in, c_noise[, labels]): the raw network under the preconditioning."""

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2),
        num_blocks: int = 2,
        num_freqs: int = 16,
        fmax: float = 8.0,
        attn_heads: int = 1,
        groups: int = 8,
        label_dim: int = 0,
    ):
        super().__init__()
        if not channel_mult:
            raise ValueError("channel_mult: expected at least one resolution level")
        if num_blocks < 1:
            raise ValueError(f"num_blocks: expected >= 1, got {num_blocks}")
        emb_dim = 4 * channels
        self.label_dim = label_dim
        self.fourier = FourierEmbedding(num_freqs, fmax)
        self.emb = nn.Sequential(nn.Linear(self.fourier.out_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Linear(label_dim, emb_dim, bias=False) if label_dim else None
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)

        levels = [channels * m for m in channel_mult]
        self.down = nn.ModuleList()
        skips, c = [], channels
        for cl in levels:
            blocks = nn.ModuleList()
            for _ in range(num_blocks):
                blocks.append(ResBlock(c, cl, emb_dim, groups))
                c = cl
                skips.append(c)
            self.down.append(blocks)

        self.mid = ResBlock(c, c, emb_dim, groups)
        self.attn = SelfAttention(c, attn_heads, groups)

        self.up = nn.ModuleList()
        for cl in reversed(levels):
            blocks = nn.ModuleList()
            for _ in range(num_blocks):
                blocks.append(ResBlock(c + skips.pop(), cl, emb_dim, groups))
                c = cl
            self.up.append(blocks)
        self.norm_out = nn.GroupNorm(_groups(c, groups), c)
        self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.emb(self.fourier(c_noise))
        if self.label_emb is not None and labels is not None:
            emb = emb + self.label_emb(labels.to(emb.dtype))
        emb = F.silu(emb)

        h = self.conv_in(x)
        hs = []
        for i, blocks in enumerate(self.down):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            for block in blocks:
                h = block(h, emb)
                hs.append(h)
        h = self.attn(self.mid(h, emb))
        for i, blocks in enumerate(self.up):
            if i > 0:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            for block in blocks:
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


class EDMPrecond(nn.Module):
    """D(x, sigma, labels) = c_skip x + c_out F(c_in x, ln(sigma)/4) (Karras et al. 2022, Table 1)."""

    def __init__(self, net: nn.Module, sigma_data: float, label_dim: int = 0):
        super().__init__()
        if not (isinstance(sigma_data, int | float) and math.isfinite(sigma_data) and sigma_data > 0):
            raise ValueError(f"sigma_data: expected a finite number > 0, got {sigma_data!r}")
        self.net = net
        self.sigma_data = float(sigma_data)
        self.label_dim = int(label_dim)

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in, c_noise) at `sigma` (a tensor), in sigma's dtype."""
        sd2 = self.sigma_data**2
        root = torch.sqrt(sigma**2 + sd2)
        return sd2 / (sigma**2 + sd2), sigma * self.sigma_data / root, 1 / root, torch.log(sigma) / 4

    def _sigma(self, sigma, x: torch.Tensor) -> torch.Tensor:
        """sigma (float, 0-d or (B,) tensor) as a (B,) tensor in x's dtype and device; must be finite and > 0."""
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if s.ndim == 0:
            s = s.expand(x.shape[0])
        elif s.shape != (x.shape[0],):
            raise ValueError(f"sigma: expected a number or a ({x.shape[0]},) tensor, got shape {tuple(s.shape)}")
        if not bool(torch.all(torch.isfinite(s) & (s > 0))):
            raise ValueError("sigma: expected finite noise levels > 0 (the denoiser is not defined at sigma = 0)")
        return s

    def _labels(self, labels, x: torch.Tensor) -> torch.Tensor | None:
        if self.label_dim == 0:
            if labels is not None:
                raise ValueError("labels: this model is unconditional (label_dim = 0); pass labels=None")
            return None
        if labels is None:
            raise ValueError(f"labels: this model is class-conditional; expected ({x.shape[0]},) class indices "
                             f"or ({x.shape[0]}, {self.label_dim}) one-hot rows")
        labels = torch.as_tensor(labels, device=x.device)
        if labels.ndim == 1 and not labels.is_floating_point():
            labels = F.one_hot(labels.long(), self.label_dim)
        if labels.shape != (x.shape[0], self.label_dim):
            raise ValueError(f"labels: expected shape ({x.shape[0]},) or ({x.shape[0]}, {self.label_dim}), "
                             f"got {tuple(labels.shape)}")
        return labels.to(x.dtype)

    def forward(self, x: torch.Tensor, sigma, labels=None) -> torch.Tensor:
        if not torch.is_tensor(x) or x.ndim != 4:
            raise ValueError(f"x: expected a (B, C, H, W) tensor, got {type(x).__name__} "
                             f"{tuple(x.shape) if torch.is_tensor(x) else ''}")
        dtype = next(self.parameters()).dtype
        if x.dtype != dtype:
            raise ValueError(f"x: dtype {x.dtype} differs from the model's {dtype}; convert the model "
                             f"(model.to({x.dtype})) or x")
        s = self._sigma(sigma, x)
        c_skip, c_out, c_in, c_noise = (c[:, None, None, None] if i < 3 else c
                                        for i, c in enumerate(self.coefficients(s)))
        return c_skip * x + c_out * self.net(c_in * x, c_noise, self._labels(labels, x))


@architectures.register("edm-unet")
def build_edm_unet(
    sigma_data: float,
    in_channels: int = 1,
    channels: int = 32,
    channel_mult: tuple[int, ...] | list[int] = (1, 2),
    num_blocks: int = 2,
    num_freqs: int = 16,
    fmax: float = 8.0,
    attn_heads: int = 1,
    groups: int = 8,
    label_dim: int = 0,
) -> EDMPrecond:
    """The preconditioned denoiser module; all arguments are JSON-safe, so they are the checkpoint's `kwargs`."""
    net = UNet(in_channels, channels, tuple(channel_mult), num_blocks, num_freqs, fmax, attn_heads, groups, label_dim)
    return EDMPrecond(net, sigma_data, label_dim)
