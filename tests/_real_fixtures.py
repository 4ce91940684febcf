"""An exact Gaussian mixture posing as an image model: the real-model harness measured against the oracle."""

from __future__ import annotations

import torch


class MixtureModel:
    """D(x, sigma) of an analytic mixture on flattened images of `shape` (prod(shape) = the mixture's d), with the
    attributes of sdm_verify.models.Denoiser that the harness reads."""

    format = "analytic-mixture"
    description = "exact Gaussian mixture posing as a model"
    sigma_data = 0.5
    label_dim = 0

    def __init__(self, gm, shape, sigma_min=0.002, sigma_max=80.0, name="mixture"):
        self.gm, self.shape = gm, tuple(shape)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.source = None
        self.module = torch.nn.Linear(1, 1)  # parameters give model_id something to hash
        torch.nn.init.constant_(self.module.weight, float(gm.d))
        torch.nn.init.constant_(self.module.bias, float(gm.K))

    def __call__(self, x, sigma):
        b = x.shape[0]
        return self.gm.denoiser(x.reshape(b, -1).double(), sigma).reshape(x.shape).to(x.dtype)
