"""The scheduler classes the adapter can drive: diffusers class name -> its `SchedulerProfile`.

Equivalent registered solvers (the profile's `equivalent`; reproduced to round-off on the same grid, see
tests/test_adapter_diffusers.py): EulerDiscrete, EDMEuler and FlowMatchEulerDiscrete -> euler (Euler in flow time t
is DDIM: x' = (sigma'/sigma) x + (1 - sigma'/sigma) D); HeunDiscrete -> heun; DPMSolverMultistep dpmsolver++ midpoint
orders 1/2/3 -> ddim / dpmpp_2m / dpmpp_3m, dpmsolver order 1 -> dpm_solver_1; UniPC (predict_x0) bh1/bh2 order p
<= 3 -> unipc_<bh>_p<p>; DEIS order 1 -> dpm_solver_1; LMSDiscrete (step order 4) -> deis_tab3 on grids ending above
0. None: DEIS orders 2-3 (eps interpolated in log rho, not rho), DPM 2M "heun", dpmsolver multistep orders 2-3,
DPMSolverSinglestep orders 2-3 (its stages are grid points).
Stochastic (stochastic.py, stochastic_profiles.py): EulerAncestralDiscrete, DPMSolverMultistep sde-dpmsolver++, DDIM
(config key eta), DDPM.
"""

from __future__ import annotations

from .exponential_profiles import DEISProfile, DPMSolverSinglestepProfile, UniPCProfile
from .more_profiles import (
    EDMDPMSolverMultistepProfile,
    FlowMatchHeunProfile,
    IPNDMProfile,
    KDPM2Profile,
    PNDMProfile,
)
from .scheduler_profile import SchedulerProfile
from .sigma_profiles import (
    EDMEulerProfile,
    EulerDiscreteProfile,
    FlowMatchEulerProfile,
    HeunDiscreteProfile,
    LMSDiscreteProfile,
)
from .stochastic_profiles import DDIMProfile, DDPMProfile, DPMSolverMultistepSDEProfile, EulerAncestralProfile

PROFILES: dict[str, SchedulerProfile] = {
    name: profile
    for profile in (DPMSolverMultistepSDEProfile(), DPMSolverSinglestepProfile(), UniPCProfile(), DEISProfile(),
                    EulerDiscreteProfile(), HeunDiscreteProfile(), LMSDiscreteProfile(), FlowMatchEulerProfile(),
                    EDMEulerProfile(), EulerAncestralProfile(), DDIMProfile(), DDPMProfile(), KDPM2Profile(),
                    EDMDPMSolverMultistepProfile(), FlowMatchHeunProfile(), IPNDMProfile(), PNDMProfile())
    for name in profile.classes
}


def supported() -> list[str]:
    """Names of the diffusers scheduler classes the adapter can drive."""
    return list(PROFILES)
