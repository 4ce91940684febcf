"""Wasserstein-2 distances that measure a sampler's error exactly (docs/theory.md §7).

    bures_w2, bures_w2_trace   two Gaussian laws: closed form (stable Procrustes form; textbook trace form)   bures
    w2_1d, w2_1d_laws          1-D: the pushforward of a Gaussian-mixture law against a Gaussian-mixture law  quantile
    w2_1d_cloud                1-D: a weighted point cloud against a Gaussian-mixture law, in closed form     quantile
    sync_error                 the synchronous-coupling upper bound (E||x_num - x_ref||^2)^{1/2}               samples
    pot_w2                     exact optimal transport between two point clouds (POT), optionally debiased     samples
    sliced_w2, sliced_w2_gmm   sliced W2: a different, smaller metric (SW2 <= W2 / sqrt(d))                   samples

Inputs are float64 torch tensors or array-likes; scalars come back as Python floats. Bad input raises ValueError
whose message starts with the argument's name.
"""

from .bures import bures_w2, bures_w2_trace
from .quantile import w2_1d, w2_1d_cloud, w2_1d_laws
from .samples import pot_w2, sliced_w2, sliced_w2_gmm, sync_error

__all__ = [
    "bures_w2",
    "bures_w2_trace",
    "w2_1d",
    "w2_1d_laws",
    "w2_1d_cloud",
    "sync_error",
    "pot_w2",
    "sliced_w2",
    "sliced_w2_gmm",
]
