"""Noise sources for stochastic samplers: the harness owns the noise (`sdm_verify.solvers.stochastic`).

A source is called as noise(i, sigma, sigma_next) and returns a standard normal tensor shaped like the state it was
built for. Every source here is a function of its arguments (the same call gives the same draw), so a run replays
exactly:

    GaussianNoise  independent draws, each from a generator seeded by (seed, i, sigma, sigma_next): common random
                   numbers for runs on the same grid.
    BrownianNoise  the normalised increments of one Brownian motion W (torchsde's BrownianInterval):
                   (W(tau(sigma_next)) - W(tau(sigma))) / sqrt(tau(sigma_next) - tau(sigma)), tau = sigma_max - sigma
                   (the reverse SDE's time in EDM's form, t = sigma, runs backwards). Runs at N and 2N steps on nested
                   grids see one path: the 2N-step draws refine the N-step ones. Draws over the same interval are the
                   same draw, by construction.
    ZeroNoise      zeros (the mean column of the probe law, `sdm_verify.harness.stochastic_law`).
"""

from __future__ import annotations

import hashlib
import math
import struct

import torch

from ..errors import InputError
from ..grid import describe

__all__ = ["GaussianNoise", "BrownianNoise", "ZeroNoise"]


def _like(like) -> torch.Tensor:
    if not torch.is_tensor(like) or not like.is_floating_point() or like.ndim == 0:
        raise InputError(f"like: expected a floating-point tensor shaped like the sampler's state, got "
                         f"{describe(like)}")
    return like


def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed: must be a non-negative integer (got {seed!r})")
    return seed


class GaussianNoise:
    """Independent standard normal draws shaped like `like`, a pure function of (seed, i, sigma, sigma_next)."""

    def __init__(self, like: torch.Tensor, seed: int = 0):
        like = _like(like)
        self.shape, self.dtype, self.device, self.seed = tuple(like.shape), like.dtype, like.device, _seed(seed)

    def __call__(self, i: int, sigma: float, sigma_next: float) -> torch.Tensor:
        key = struct.pack("<qqdd", self.seed, int(i), float(sigma), float(sigma_next))
        g = torch.Generator().manual_seed(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1)
        return torch.randn(self.shape, generator=g, dtype=self.dtype).to(self.device)

    def __repr__(self) -> str:
        return f"GaussianNoise(shape={self.shape}, seed={self.seed})"


class BrownianNoise:
    """Normalised increments of one Brownian motion on tau in [0, sigma_max], tau = sigma_max - sigma (module doc).

    `increment(sigma, sigma_next)` is the raw increment W(tau(sigma_next)) - W(tau(sigma)) (variance
    sigma - sigma_next), for a reference path driven by the same motion (`sdm_verify.harness.strong`). `levy_area`:
    also keep the space-time Levy area (needed by torchsde's SRK reference solver). `dt`: the finest step expected
    (torchsde builds its interval tree for it up front; without it, very fine queries can exhaust the stack)."""

    def __init__(self, like: torch.Tensor, sigma_max: float, seed: int = 0, levy_area: bool = False,
                 dt: float | None = None):
        import torchsde

        like = _like(like)
        if not isinstance(sigma_max, (int, float)) or isinstance(sigma_max, bool) or not math.isfinite(sigma_max) \
                or sigma_max <= 0:
            raise InputError(f"sigma_max: must be a finite number > 0 (got {sigma_max!r})")
        self.sigma_max, self.seed = float(sigma_max), _seed(seed)
        self.bm = torchsde.BrownianInterval(
            t0=0.0, t1=self.sigma_max, size=tuple(like.shape), dtype=like.dtype, device=like.device,
            entropy=self.seed, levy_area_approximation="space-time" if levy_area else "none", dt=dt)

    def tau(self, sigma: float) -> float:
        sigma = float(sigma)
        if not 0.0 <= sigma <= self.sigma_max:
            raise InputError(f"sigma: {sigma:.6g} is outside this Brownian motion's range [0, {self.sigma_max:.6g}]")
        return self.sigma_max - sigma

    def increment(self, sigma: float, sigma_next: float) -> torch.Tensor:
        a, b = self.tau(sigma), self.tau(sigma_next)
        if not a < b:
            raise InputError(f"sigma_next: a Brownian increment needs sigma > sigma_next (got {float(sigma):.6g} -> "
                             f"{float(sigma_next):.6g})")
        return self.bm(a, b)

    def __call__(self, i: int, sigma: float, sigma_next: float) -> torch.Tensor:
        return self.increment(sigma, sigma_next) / math.sqrt(self.tau(sigma_next) - self.tau(sigma))

    def __repr__(self) -> str:
        return f"BrownianNoise(sigma_max={self.sigma_max}, seed={self.seed})"


class ZeroNoise:
    """Zeros shaped like `like`; records the distinct draw keys (i, sigma, sigma_next) in the order they are asked."""

    def __init__(self, like: torch.Tensor):
        like = _like(like)
        self.shape, self.dtype, self.device = tuple(like.shape), like.dtype, like.device
        self.keys: list[tuple[int, float, float]] = []
        self._seen: set = set()

    def __call__(self, i: int, sigma: float, sigma_next: float) -> torch.Tensor:
        key = (int(i), float(sigma), float(sigma_next))
        if key not in self._seen:
            self._seen.add(key)
            self.keys.append(key)
        return torch.zeros(self.shape, dtype=self.dtype, device=self.device)
