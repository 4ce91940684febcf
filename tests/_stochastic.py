"""Shared data of the stochastic-sampler tests: a 2-D Gaussian target, an EDM grid written independently of
sdm_verify.schedules, and the grids every sampler is compared on."""

import math

import torch

from analytic import Gaussian

F64 = torch.float64
TARGET = Gaussian([0.5, -1.0], [[1.0, 0.3], [0.3, 0.5]])


def edm_grid(n: int, smax: float = 80.0, smin: float = 0.002, rho: float = 7.0, zero: bool = False) -> torch.Tensor:
    """Karras et al. 2022, Eq. 5: sigma_i = (smax^(1/rho) + i/n (smin^(1/rho) - smax^(1/rho)))^rho, i = 0..n."""
    i = torch.arange(n + 1, dtype=F64)
    s = (smax ** (1 / rho) + i / n * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return torch.cat([s, torch.zeros(1, dtype=F64)]) if zero else s


GRIDS = {
    "edm12": edm_grid(12),
    "edm9_to_zero": edm_grid(9, zero=True),
    "logsnr": torch.exp(torch.linspace(math.log(10.0), math.log(0.05), 8, dtype=F64)),
    "irregular_to_zero": torch.tensor([5.0, 3.1, 1.7, 0.9, 0.2, 0.0], dtype=F64),
}
