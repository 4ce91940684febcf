"""Canonical variables <-> a diffusers scheduler's sample and a network's input and output.

Canonical variables (Karras et al. 2022, Eq. 1-3): x = x0 + sigma n, D = E[x0 | x], eps = E[n | x] = (x - D)/sigma.

Sample conventions (what the scheduler's `sample` is; `sample_scale(convention, sigma)` = sample / x):
    vp    x_vp = alpha x, alpha = 1/sqrt(1 + sigma^2): the DDPM marginal x_vp = sqrt(abar) x0 + sqrt(1 - abar) n with
          sigma^2 = (1 - abar)/abar (Ho et al. 2020; EDM Table 1, VP: s = 1/sqrt(1 + sigma^2)); diffusers
          `_sigma_to_alpha_sigma_t` returns (alpha, alpha sigma). DPMSolverMultistep/Singlestep, UniPC, DEIS.
    edm   the sample is x itself (k-diffusion style: EulerDiscrete, HeunDiscrete, LMSDiscrete, EDMEuler).
    flow  rectified flow x_t = (1 - t) x0 + t n (Liu et al. 2023; Esser et al. 2024): dividing by 1 - t gives
          x0 + t/(1 - t) n, so sigma = t/(1 - t), t = sigma/(1 + sigma) and x_t = x/(1 + sigma).
          FlowMatchEulerDiscrete, and DPM/UniPC/DEIS with use_flow_sigmas=True (alpha = 1 - t, sigma_t = t).
`scheduler.sigmas` hold sigma itself, except in the flow convention, where they hold t.

Processes (the model side: what the network sees and predicts; `model_output`, `denoised_from_output`):
    vp-eps  input x_vp, output eps = (x - D)/sigma                                        (prediction_type "epsilon")
    vp-v    input x_vp, output v = alpha_vp n - sigma_vp x0 (Salimans & Ho 2022), so E[v | x] = alpha (eps - sigma D)
            with alpha_vp = alpha, sigma_vp = alpha sigma                              (prediction_type "v_prediction")
            [diffusers inverts it as alpha x_vp - sigma_vp v = alpha^2 (x - sigma eps + sigma^2 D) = D]
    vp-x0   input x_vp, output D                                                       (prediction_type "sample")
    fm      input x_t = x/(1 + sigma), output u = n - x0, E[u | x] = eps - D           (prediction_type
            "flow_prediction"; diffusers: x0 = x_t - t u = (x - sigma eps + sigma D)/(1 + sigma) = D)
    edm     input c_in x, output F with D = c_skip x + c_out F: F = (D - c_skip x)/c_out, c_in = 1/sqrt(sigma^2 + sd^2),
            c_skip = sd^2/(sigma^2 + sd^2), c_out = sigma sd/sqrt(sigma^2 + sd^2), sd = sigma_data (EDM Table 1;
            diffusers EDMEulerScheduler.precondition_*); "edm-v": c_out with the opposite sign (v_prediction).
The VP and EDM-scale schedulers both hand the model x_vp (EulerDiscrete's `scale_model_input` divides x by
sqrt(sigma^2 + 1)), so the fake model always recovers x = input / input_scale(process, sigma).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Process:
    """How a network relates to canonical variables: its input scaling and its prediction type."""

    name: str
    input: str  # "vp" | "flow" | "edm"
    prediction: str  # diffusers prediction_type


PROCESSES = {p.name: p for p in (
    Process("vp-eps", "vp", "epsilon"),
    Process("vp-v", "vp", "v_prediction"),
    Process("vp-x0", "vp", "sample"),
    Process("fm", "flow", "flow_prediction"),
    Process("edm", "edm", "epsilon"),
    Process("edm-v", "edm", "v_prediction"),
)}


def get_process(name) -> Process:
    """The Process of a name in PROCESSES (a Process is returned as is); ValueError for an unknown one."""
    if isinstance(name, Process):
        return name
    try:
        return PROCESSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"process: unknown process {name!r}; known: {', '.join(PROCESSES)}") from None


def flow_time(sigma: float) -> float:
    """Rectified-flow time of a noise level: t = sigma/(1 + sigma) (t = 1 at sigma = inf)."""
    return 1.0 if math.isinf(sigma) else sigma / (1.0 + sigma)


def flow_sigma(t: float) -> float:
    """Noise level of a rectified-flow time: sigma = t/(1 - t) (inf at t = 1)."""
    return math.inf if t >= 1.0 else t / (1.0 - t)


def sample_scale(convention: str, sigma: float) -> float:
    """sample / x for a scheduler's sample convention ("vp", "edm", "flow"; module docstring)."""
    if convention == "edm":
        return 1.0
    if convention == "vp":
        return 0.0 if math.isinf(sigma) else 1.0 / math.hypot(1.0, sigma)
    if convention == "flow":
        return 0.0 if math.isinf(sigma) else 1.0 / (1.0 + sigma)
    raise ValueError(f"convention: expected 'vp', 'edm' or 'flow' (got {convention!r})")


def input_scale(process, sigma: float, sigma_data: float = 0.5) -> float:
    """network input / x of a process: alpha (vp), 1/(1 + sigma) (flow), c_in (edm)."""
    p = get_process(process)
    if p.input == "edm":
        return 1.0 / math.hypot(sigma, sigma_data)
    return sample_scale(p.input, sigma)


def _edm_coefficients(p: Process, sigma: float, sigma_data: float) -> tuple[float, float]:
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / math.hypot(sigma, sigma_data)
    return c_skip, (-c_out if p.prediction == "v_prediction" else c_out)


def model_output(process, x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_data: float = 0.5):
    """What a perfect network of `process` returns at canonical state x with D = denoised (module docstring)."""
    p = get_process(process)
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma: the network is evaluated at a finite sigma > 0 (got {sigma})")
    if p.input == "edm":
        c_skip, c_out = _edm_coefficients(p, sigma, sigma_data)
        return (denoised - c_skip * x) / c_out
    eps = (x - denoised) / sigma
    if p.prediction == "epsilon":
        return eps
    if p.prediction == "sample":
        return denoised
    if p.prediction == "v_prediction":
        return (eps - sigma * denoised) / math.hypot(1.0, sigma)
    return eps - denoised  # flow_prediction


def denoised_from_output(process, x: torch.Tensor, output: torch.Tensor, sigma: float, sigma_data: float = 0.5):
    """The inverse of `model_output`: D from the canonical state and a network output."""
    p = get_process(process)
    if p.input == "edm":
        c_skip, c_out = _edm_coefficients(p, sigma, sigma_data)
        return c_skip * x + c_out * output
    if p.prediction == "epsilon":
        return x - sigma * output
    if p.prediction == "sample":
        return output
    if p.prediction == "v_prediction":  # v = alpha (eps - sigma D) with eps = (x - D)/sigma
        alpha = 1.0 / math.hypot(1.0, sigma)
        return alpha**2 * (x - sigma * output / alpha)
    return (x - sigma * output) / (1.0 + sigma)  # u = eps - D  =>  sigma u = x - D - sigma D
