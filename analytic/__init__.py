"""The oracle: exact float64 mathematics for PF-ODE samplers on Gaussian and Gaussian-mixture targets.

    gmm          the target laws and their closed forms (denoiser, score, Jacobian, marginals, quantiles)
    flows        the exact flow map (closed form for a Gaussian, DOP853 reference otherwise)
    calculus     the PF-ODE's exact derivatives: velocity, dD/dsigma, x'', the expansion rate (import it
                 as analytic.calculus: no cell of the theory sweep uses it)
    wasserstein  exact and estimated W2 (Bures, 1-D quantiles, point clouds)
    processes    the noise processes (VP, flow matching, ...) and their exact time changes
    symbolic     coefficient functions in sympy (the symbolic order check)
    guidance     classifier-free guidance on labelled mixtures (the guided denoiser, its Jacobian and reference flow),
                 the 1-D mixture's tilted law; guidance_joint: the joint-Gaussian case with its exact guided flow
    expectations closed-form expectations of test functions (moments, characteristic function, kernel MMD): the
                 exact side of a stochastic sampler's weak error on mixtures

This package never imports `sdm_verify` (the code it judges).
"""

from . import expectations, processes
from .flows import exact_flow, gaussian_flow_map, reference_flow
from .gmm import Gaussian, GaussianMixture
from .guidance import LabelledMixture, TiltedLaw1D, check_guidance_scale, guided_reference_flow
from .guidance_joint import JointGaussianGuidance
from .wasserstein import bures_w2, bures_w2_trace, pot_w2, sliced_w2, sliced_w2_gmm, sync_error, w2_1d, w2_1d_laws

__all__ = [
    "processes",
    "expectations",
    "GaussianMixture",
    "Gaussian",
    "LabelledMixture",
    "JointGaussianGuidance",
    "TiltedLaw1D",
    "check_guidance_scale",
    "guided_reference_flow",
    "gaussian_flow_map",
    "reference_flow",
    "exact_flow",
    "bures_w2",
    "bures_w2_trace",
    "w2_1d",
    "w2_1d_laws",
    "sync_error",
    "pot_w2",
    "sliced_w2",
    "sliced_w2_gmm",
]
