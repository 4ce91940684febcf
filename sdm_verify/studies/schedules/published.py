"""The published schedule optimisers scored against the optimum (issue 16, "The schedules scored"), each
`name(solver, target, n, sigma_min, sigma_max, **options) -> tensor` of n + 1 float64 sigmas, strictly decreasing,
sigma_max -> sigma_min exactly, computed from the oracle's interfaces only (target.denoiser, target.sample, the
reference flow, the registered solver). Formulas, sources and every choice are in each module's docstring:

    cos    Williams et al. 2024, score-difference cost equidistributed (as the SDM code re-implements it)  cos.py
    ays    Sabour et al. 2024, KL upper bound of the frozen-denoiser SDE, coordinate descent               ays.py
    gits   Chen et al. 2024, DP over one-step errors against a fine teacher trajectory                      gits.py
    oss    Pei et al. 2025, DP carrying the student's state against a many-step teacher                     oss.py
"""

from __future__ import annotations

from .ays import ays, klub
from .cos import cos, cos_costs
from .gits import gits, min_cost_path
from .oss import oss, oss_path

PUBLISHED = {"cos": cos, "ays": ays, "gits": gits, "oss": oss}

__all__ = ["PUBLISHED", "cos", "ays", "gits", "oss", "min_cost_path", "cos_costs", "klub", "oss_path"]
