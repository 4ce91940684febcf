"""Every `sample_*` function of k-diffusion's sampling module, driven or refused in one line: `coverage()`.

A row: (name, status, reason), status one of
    "driven-ode"          its default config is deterministic (s_churn = 0): KDiffusionSolver, the order check
                          (conformance.check) and the as-shipped pass (conformance.shipped_kdiffusion)
    "driven-stochastic"   its default config draws noise (eta = 1): KDiffusionSDESolver, the stochastic items
                          (conformance.stochastic) and the as-shipped pass with k-diffusion's own noise
    "driven-shipped"      not a grid sampler but a fixed-step one on its own grid (sample_dpm_fast: sigma_min,
                          sigma_max and an NFE budget n): the as-shipped pass and a float64 order on its own grid
                          (shipped_kdiffusion.fast_order); no harness grid can be given to it, so no conformance check
    "refused"             cannot be measured at all, with the reason
A `sample_*` function this table does not know (a newer k-diffusion) is refused as "no adapter yet".

`claim(name)` gives the claimed order of the default config and its source: the adapter's (Karras et al. 2022; Lu
et al. 2022, 2022b) for the ODE samplers, none for the stochastic ones (k-diffusion states no weak order).
"""

from __future__ import annotations

import inspect

from .kdiffusion import SAMPLERS, load_sampling

#: the samplers that are not grid samplers: (status, one-line reason)
SPECIAL = {
    "sample_dpm_fast": ("driven-shipped", "DPM-Solver-fast (Lu et al. 2022, arXiv 2206.00927): its own "
                        "uniform-logSNR grid from (sigma_min, sigma_max, n NFE), orders 3,..,3 then 1 or 2; "
                        "as-shipped pass and a float64 order on that grid, no harness grid"),
    "sample_dpm_adaptive": ("refused", "adaptive step size (DPM-Solver-12/23 with PID error control, Lu et al. 2022): "
                            "no fixed grid to measure an order on, its cost set by rtol/atol, not by N"),
}

#: one-line descriptions of the driven grid samplers (what is run in the default config)
DESCRIPTION = {
    "sample_euler": "Euler on dx/dsigma (Karras et al. 2022 Alg. 2, s_churn = 0); step into 0: Euler (x <- D)",
    "sample_heun": "Heun (Karras et al. 2022 Alg. 2, s_churn = 0); step into 0: Euler (x <- D)",
    "sample_dpm_2": "DPM-Solver-2 in noise-prediction form, sigma_mid = sqrt(sigma sigma_next); into 0: Euler",
    "sample_lms": "linear multistep (order 4) Adams-Bashforth in sigma, coefficients by quadrature; into 0: the "
                  "polynomial integrated to 0",
    "sample_dpmpp_2m": "DPM-Solver++(2M) (Lu et al. 2022b); step into 0: x <- D",
    "sample_euler_ancestral": "ancestral Euler, eta = 1 (k-diffusion's default): stochastic",
    "sample_dpm_2_ancestral": "ancestral DPM-2, eta = 1: stochastic",
    "sample_dpmpp_2s_ancestral": "ancestral DPM-Solver++(2S), eta = 1: stochastic",
    "sample_dpmpp_sde": "DPM-Solver++ SDE (2S form, r = 1/2), eta = 1, Brownian-tree noise by default: stochastic",
    "sample_dpmpp_2m_sde": "DPM-Solver++(2M) SDE (midpoint), eta = 1, Brownian-tree noise by default: stochastic",
    "sample_dpmpp_3m_sde": "DPM-Solver++(3M) SDE, eta = 1, Brownian-tree noise by default: stochastic",
}


def sampler_names() -> list[str]:
    """Every `sample_*` function of the installed k-diffusion's sampling module, sorted."""
    sampling = load_sampling()
    return sorted(n for n in dir(sampling) if n.startswith("sample_") and inspect.isfunction(getattr(sampling, n)))


def stochastic_by_default(name: str) -> bool:
    """Whether `name` draws noise in its default config (its `eta` default != 0; s_churn defaults to 0)."""
    meta = SAMPLERS.get(name)
    if meta is None or meta.stochastic is None:
        return False
    param = inspect.signature(getattr(load_sampling(), name)).parameters.get(meta.stochastic)
    return param is not None and param.default != 0


def status(name: str) -> tuple[str, str]:
    """(status, reason) of one sampler (module docstring)."""
    if name in SPECIAL:
        return SPECIAL[name]
    if name in SAMPLERS:
        kind = "driven-stochastic" if stochastic_by_default(name) else "driven-ode"
        return kind, DESCRIPTION.get(name, "grid sampler run through the k-diffusion adapter")
    return "refused", "no adapter yet (a sample_* function unknown to sdm_verify.adapters.kdiffusion)"


def coverage() -> list[tuple[str, str, str]]:
    """One row (name, status, reason) per `sample_*` function of k_diffusion.sampling (module docstring)."""
    return [(name, *status(name)) for name in sampler_names()]


def claim(name: str) -> tuple[float | None, str]:
    """(claimed order of the default config, its source). Stochastic defaults: no weak order is claimed."""
    if name == "sample_dpm_fast":
        return 3.0, "DPM-Solver-3 steps (Lu et al. 2022), measured on n = 3m - 1 NFE (last step order 2)"
    meta = SAMPLERS.get(name)
    if meta is None or stochastic_by_default(name):
        return None, "k-diffusion states no order for its stochastic samplers"
    if name == "sample_lms":
        return 4.0, "linear multistep of order 4 (its default `order`)"
    return (None if meta.order is None else float(meta.order)), "sdm_verify.adapters.kdiffusion.SAMPLERS"
