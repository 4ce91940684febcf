"""Counting network function evaluations (NFE): the only source of NFE numbers in results."""

from __future__ import annotations


class CountedDenoiser:
    """Wraps denoiser(x, sigma) and counts calls in `.nfe`; a batched call is one NFE."""

    def __init__(self, denoiser):
        if not callable(denoiser):
            raise TypeError("denoiser: must be callable as denoiser(x, sigma)")
        self.denoiser = denoiser
        self.nfe = 0

    def __call__(self, x, sigma, *args, **kwargs):
        self.nfe += 1
        return self.denoiser(x, sigma, *args, **kwargs)

    def reset(self) -> None:
        self.nfe = 0


def count_nfe(denoiser) -> CountedDenoiser:
    """Return a wrapper of `denoiser` whose `.nfe` attribute counts its calls."""
    return CountedDenoiser(denoiser)
