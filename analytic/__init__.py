"""The oracle: exact float64 mathematics for PF-ODE samplers on Gaussian and Gaussian-mixture targets.

This package never imports `sdm_verify` (the code it judges).
"""

from . import processes
from .flows import gaussian_flow_map, reference_flow
from .gmm import Gaussian, GaussianMixture
from .wasserstein import bures_w2, bures_w2_trace, pot_w2, sliced_w2, sliced_w2_gmm, sync_error, w2_1d, w2_1d_laws

__all__ = [
    "processes",
    "GaussianMixture",
    "Gaussian",
    "gaussian_flow_map",
    "reference_flow",
    "bures_w2",
    "bures_w2_trace",
    "w2_1d",
    "w2_1d_laws",
    "sync_error",
    "pot_w2",
    "sliced_w2",
    "sliced_w2_gmm",
]
