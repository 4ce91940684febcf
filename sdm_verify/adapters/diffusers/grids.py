"""Grids: the sigma grid imposed on a scheduler, and the timestep <-> sigma maps of its training table.

    grid="harness"  the given EDM grid is imposed: after `set_timesteps(N)` (which initialises the scheduler's state)
        the adapter overwrites `scheduler.sigmas` (float64, in the scheduler's convention; HeunDiscrete's interleaved
        layout, `heun_layout`) and `scheduler.timesteps` (float64, the scheduler's own sigma -> t map, extended beyond
        its training table). The fake model maps each timestep to its sigma through a lookup of exactly those
        timesteps (`TimestepLookup`); any other timestep raises. A grid ending at sigma_min > 0 has no final step into
        0; for schedulers with `final_sigmas_type` the adapter sets it to match the grid ("sigma_min" / "zero";
        DPMSolverMultistep forces a first-order last step under "zero"). All other config keys are the contributor's.
    grid="native"   the scheduler chooses its own timesteps (`set_timesteps(n)` with its config) and the fake model
        maps a timestep to sigma as a network trained on the scheduler's table would: the training table sigma_k =
        sqrt((1 - abar_k)/abar_k) (float64 from the scheduler's float32 abar; `vp_table`), log-linear in fractional k
        (`sigma_of_timestep`); flow: sigma = t/(1 - t) with t = timestep/num_train_timesteps; EDM: sigma =
        exp(4 c_noise). `NativeSchedule.mismatch` reports the largest relative mismatch between the sigma the
        scheduler's update uses and the sigma of the timestep it hands the model (rounded timesteps, float32 tables,
        linear-vs-log interpolation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

GRIDS = ("harness", "native")


def vp_table(sched) -> np.ndarray:
    """sigma_k = sqrt((1 - abar_k)/abar_k), k = 0..T-1, in float64 from the scheduler's abar."""
    abar = sched.alphas_cumprod.double().numpy()
    return np.sqrt((1.0 - abar) / abar)


def timestep_of_sigma(table: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Fractional training step of sigma: log-linear in the table, extended linearly beyond its ends (harness only:
    the lookup, not this map, gives the fake model its sigma; the values only need to be distinct and ordered)."""
    ls, l = np.log(table), np.log(sigma)
    k = np.interp(l, ls, np.arange(len(ls), dtype=np.float64))
    lo, hi = l < ls[0], l > ls[-1]
    k[lo] = (l[lo] - ls[0]) / (ls[1] - ls[0])
    k[hi] = len(ls) - 1 + (l[hi] - ls[-1]) / (ls[-1] - ls[-2])
    return k


def sigma_of_timestep(table: np.ndarray, t: float) -> float:
    """A network trained on the table at fractional step t: log sigma interpolated linearly between the steps."""
    last = len(table) - 1
    if not 0.0 <= t <= last:
        raise ValueError(f"timestep: {t:g} is outside the training steps 0..{last}: no trained network was "
                         "conditioned on it")
    k = min(int(math.floor(t)), last - 1)
    w = t - k
    return math.exp((1.0 - w) * math.log(table[k]) + w * math.log(table[k + 1]))


def heun_layout(sigmas: np.ndarray, timesteps: np.ndarray, ends_zero: bool) -> tuple[np.ndarray, np.ndarray]:
    """HeunDiscrete's interleaved arrays for the grid s_0..s_n (timesteps t_k of the s_k > 0). Model call 2k is the
    Euler stage of step k (reads sigmas[2k], sigmas[2k+1]), call 2k+1 its correction at s_{k+1} (reads sigmas[2k],
    sigmas[2k+1] again): sigmas = [s0, s1, s1, ..., s_n, s_n], timesteps = [t0, t1, t1, ..., t_{n-1}, t_{n-1}, t_n].
    Into 0 the last step is its Euler stage alone (set_timesteps' own layout): sigmas [s0, s1, s1, ..., s_{n-1},
    s_{n-1}, 0], timesteps [t0, t1, t1, ..., t_{n-1}, t_{n-1}]."""
    n = len(sigmas) - 1
    if ends_zero:
        return (np.concatenate([sigmas[:1], np.repeat(sigmas[1:-1], 2), sigmas[-1:]]),
                np.concatenate([timesteps[:1], np.repeat(timesteps[1:n], 2)]))
    return (np.concatenate([sigmas[:1], np.repeat(sigmas[1:], 2)]),
            np.concatenate([timesteps[:1], np.repeat(timesteps[1:n], 2), timesteps[n:n + 1]]))


class TimestepLookup:
    """grid="harness": timestep -> sigma for exactly the timesteps the adapter set; any other timestep raises."""

    def __init__(self, scheduler: str, timesteps, sigmas):
        self.scheduler = scheduler
        self._sigma = {float(t): float(s) for t, s in zip(timesteps, sigmas, strict=True)}

    def __call__(self, t) -> float:
        try:
            return self._sigma[float(t)]
        except KeyError:
            raise ValueError(f"timestep: {self.scheduler} handed the model timestep {float(t)!r}, which the adapter "
                             "did not set") from None


@dataclass
class NativeSchedule:
    """A scheduler's own schedule for n steps (grid="native"): what its update uses and what the model is handed."""

    sigmas: torch.Tensor  # the sample's path in EDM sigma (consecutive duplicates of HeunDiscrete removed)
    timesteps: torch.Tensor  # one per model call, as the scheduler hands them
    update_sigmas: torch.Tensor  # per model call: the sigma the scheduler's update assumes there (EDM)
    model_sigmas: torch.Tensor  # per model call: the sigma of the timestep (the trained table, EDM)

    def _ratios(self) -> torch.Tensor:
        ok = torch.isfinite(self.update_sigmas) & (self.update_sigmas > 0)
        return self.model_sigmas[ok] / self.update_sigmas[ok]

    @property
    def mismatch(self) -> float:
        """max over calls of |sigma_model / sigma_update - 1|."""
        return float((self._ratios() - 1).abs().max())

    @property
    def lambda_mismatch(self) -> float:
        """max over calls of |log(sigma_model / sigma_update)|: the mismatch in half log-SNR."""
        return float(self._ratios().log().abs().max())
