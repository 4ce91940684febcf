"""Counting network function evaluations (NFE): the only source of NFE numbers in results."""

from __future__ import annotations

from ..grid import bad_output, check_denoiser, denoiser_output_error


class CountedDenoiser:
    """Wraps denoiser(x, sigma) and counts calls in `.nfe`; a batched call is one NFE.

    Every output is checked against its input (grid.denoiser_output_problem): a floating-point tensor of x's shape
    on x's device, else DenoiserOutputError naming the call. This also covers solvers that run their own loop
    (the outside adapters), which the registered solvers' loop (solvers.base.Solver) does not see."""

    def __init__(self, denoiser):
        check_denoiser(denoiser)
        self.denoiser = denoiser
        self.nfe = 0

    def __call__(self, x, sigma, *args, **kwargs):
        self.nfe += 1
        out = self.denoiser(x, sigma, *args, **kwargs)
        if bad_output(out, x):
            try:
                level = f"sigma {float(sigma):.6g}"
            except (TypeError, ValueError, RuntimeError):  # a per-sample sigma tensor
                level = f"sigma of shape {tuple(getattr(sigma, 'shape', ()))}"
            raise denoiser_output_error(out, x, f"call {self.nfe}, {level}")
        return out

    def reset(self) -> None:
        self.nfe = 0


def count_nfe(denoiser) -> CountedDenoiser:
    """Return a wrapper of `denoiser` whose `.nfe` attribute counts its calls."""
    return CountedDenoiser(denoiser)
