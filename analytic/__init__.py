"""The oracle: exact float64 mathematics for PF-ODE samplers on Gaussian and Gaussian-mixture targets.

This package never imports `sdm_verify` (the code it judges).
"""

from . import processes
from .flows import gaussian_flow_map, reference_flow
from .gmm import Gaussian, GaussianMixture

__all__ = ["processes", "GaussianMixture", "Gaussian", "gaussian_flow_map", "reference_flow"]
