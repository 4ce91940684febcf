"""Every `*Scheduler` class diffusers exports, driven or refused in one line: `coverage()`.

A row: (name, status, reason). status "driven-ode" (DiffusersSolver; the order check and the as-shipped pass),
"driven-stochastic" (StochasticDiffusersSolver; the stochastic check and the as-shipped pass) or "refused".
"""

from __future__ import annotations

from .dependency import load_diffusers
from .profiles import PROFILES

#: one-line reasons of the refused classes (by name); a class not listed here and without a profile is refused
#: as "no adapter yet" with its module named
REFUSED = {
    "VQDiffusionScheduler": "discrete-token scheduler (VQ diffusion): not a continuous-state sampler",
    "AmusedScheduler": "masked-token scheduler (aMUSEd): not a continuous-state sampler",
    "BlockRefinementScheduler": "discrete block-refinement (masked token) scheduler: not a continuous-state sampler",
    "EntropyBoundScheduler": "discrete-token unmasking scheduler: not a continuous-state sampler",
    "RePaintScheduler": "inpainting scheduler: needs a known image and mask (resampling jumps)",
    "DDIMInverseScheduler": "inversion scheduler (image -> noise): needs a source image, not a sampler",
    "DPMSolverMultistepInverseScheduler": "inversion scheduler (image -> noise): needs a source image, not a sampler",
    "CMStochasticIterativeScheduler": "consistency model scheduler: needs a consistency-distilled model",
    "LCMScheduler": "latent consistency model scheduler: needs a consistency-distilled model, not a denoiser",
    "TCDScheduler": "trajectory consistency distillation scheduler: needs a distilled model, not a denoiser",
    "FlowMatchLCMScheduler": "flow-matching consistency scheduler: needs a consistency-distilled model",
    "SCMScheduler": "sCM (continuous-time consistency) scheduler: needs a consistency-distilled model",
    "FlowMapEulerDiscreteScheduler": "flow-map scheduler: needs a learned two-time flow map, not a denoiser",
    "PiflowScheduler": "pi-Flow scheduler: needs a policy network's per-step velocity model, not a denoiser",
    "HeliosDMDScheduler": "DMD-distilled scheduler: needs a distribution-matching-distilled generator",
    "UnCLIPScheduler": "unCLIP scheduler: learned-variance DDPM (extra variance channels from the network)",
    "DDPMWuerstchenScheduler": "Wuerstchen's own continuous-time DDPM on its latent prior: no adapter yet (stochastic)",
    "KarrasVeScheduler": "a deprecated dummy object in this diffusers (removed scheduler): nothing to drive",
    "ScoreSdeVeScheduler": "VE SDE predictor-corrector with Langevin corrector steps (stochastic): no adapter yet",
    "DPMSolverSDEScheduler": "Brownian-tree SDE sampler (torchsde BrownianTree noise): no adapter yet",
    "KDPM2AncestralDiscreteScheduler": "ancestral (stochastic) DPM-2: no adapter yet",
    "LTXEulerAncestralRFScheduler": "ancestral rectified-flow Euler (stochastic): no adapter yet",
    "SASolverScheduler": "SA-Solver (stochastic Adams): no adapter yet (the suite has its own sa_solver)",
    "CosineDPMSolverMultistepScheduler": "SDE-DPM-Solver++ on a cosine schedule (stochastic): no adapter yet",
    "DDIMParallelScheduler": "batched-parallel DDIM (ParaDiGMS batch_step_no_noise): same update as DDIM, no adapter",
    "DDPMParallelScheduler": "batched-parallel DDPM (ParaDiGMS): same update as DDPM, no adapter",
    "CogVideoXDDIMScheduler": "CogVideoX's DDIM with zero-terminal-SNR v-prediction table: no adapter yet",
    "CogVideoXDPMScheduler": "CogVideoX's DPM-Solver variant (stochastic): no adapter yet",
    "HeliosScheduler": "Helios' multi-stage video scheduler: no adapter yet",
    "MiniMaxH3Scheduler": "MiniMax H3 scheduler: no adapter yet",
    "RFD4ProteinaScheduler": "protein-structure (RFdiffusion/Proteina) scheduler on frames: not a Euclidean sampler",
    "DiscreteDDIMScheduler": "discrete-state DDIM: not a continuous-state sampler",
}


def scheduler_names() -> list[str]:
    """Every name in dir(diffusers) ending in 'Scheduler'."""
    return sorted(n for n in dir(load_diffusers()) if n.endswith("Scheduler"))


def coverage() -> list[tuple[str, str, str]]:
    """One row (name, status, reason) per `*Scheduler` class of diffusers (module docstring)."""
    diffusers = load_diffusers()
    rows = []
    for name in scheduler_names():
        profile = PROFILES.get(name)
        if profile is not None:
            stochastic = getattr(profile, "stochastic", False)
            if name == "DDIMScheduler":
                why = "eta = 0 (step's default) is the ODE (ddim); eta > 0 stochastic; needs clip_sample=false"
                rows.append((name, "driven-ode", why))
            elif name == "DDPMScheduler":
                rows.append((name, "driven-stochastic", "ancestral DDPM (needs clip_sample=false)"))
            else:
                rows.append((name, "driven-stochastic" if stochastic else "driven-ode", profile.final_step))
            continue
        reason = REFUSED.get(name)
        if reason is None:
            module = getattr(getattr(diffusers, name, None), "__module__", "?")
            reason = f"no adapter yet ({module})"
        rows.append((name, "refused", reason))
    return rows
