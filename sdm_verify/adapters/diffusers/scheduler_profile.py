"""What the adapter knows about one diffusers scheduler class: `SchedulerProfile`, the base of every profile.

A profile answers, from the scheduler's effective config (a dict), the questions the solver asks: the sample
convention ("vp", "edm", "flow"; conventions.py), the processes a network of that scheduler may have and the config
keys that select one, the configs it cannot drive (stochastic samplers, learned variances), the claimed order and
the registered solver with the same update, the notes on heuristics that change the order, and the grid maps
(timestep <-> sigma; grids.py). The defaults describe a scheduler on the DDPM table (sigma_k = sqrt((1 - abar_k) /
abar_k)) whose sample is x itself; the subclasses in exponential_profiles.py and sigma_profiles.py override them.
"""

from __future__ import annotations

import numpy as np

from .conventions import PROCESSES
from .grids import sigma_of_timestep, timestep_of_sigma, vp_table


class SchedulerProfile:
    """What the adapter knows about one scheduler class. Methods take the scheduler's effective config (a dict)."""

    classes: tuple[str, ...] = ()  # the diffusers class names this profile drives
    layout = "per_step"  # one model call per grid point; "heun": HeunDiscrete's interleaved stages
    final_zero = "append"  # "config": final_sigmas_type decides; "append": always 0; "never": cannot step into 0
    final_step = "the scheduler's own step into sigma = 0, 1 NFE"
    float32_cast = False  # step() casts the sample to float32 (float64.py)

    def sample_convention(self, cfg) -> str:
        """What the scheduler's sample is: "vp", "edm" or "flow" (conventions.py)."""
        return "edm"

    def processes(self, cfg) -> tuple[str, ...]:
        """The processes (conventions.PROCESSES) a network of this scheduler may have."""
        return ("vp-eps", "vp-v", "vp-x0")

    def process_of(self, cfg) -> str:
        """The process the config selects."""
        for name in self.processes(cfg):
            if PROCESSES[name].prediction == cfg.get("prediction_type"):
                return name
        raise ValueError(f"config: prediction_type {cfg.get('prediction_type')!r} is not one of the processes "
                         f"{self.processes(cfg)} this adapter supports")

    def process_config(self, process: str) -> dict:
        """The config keys that select `process`."""
        return {"prediction_type": PROCESSES[process].prediction}

    def check(self, cfg) -> None:
        """Raise ValueError for configs the adapter cannot drive (stochastic samplers, learned variances...)."""

    def order(self, cfg) -> int | None:
        """The global order the scheduler claims (None: none)."""
        return None

    def equivalent(self, cfg) -> tuple[str, dict] | None:
        """(registered solver, its parameters) implementing the same update, or None."""
        return None

    def notes(self, cfg) -> list[str]:
        """Heuristics of this config that change the order or the final step, one sentence each."""
        return []

    def sigma_data(self, cfg) -> float:
        """sigma_data of the EDM preconditioning (edm processes only)."""
        return 0.5

    # grid conventions
    def sigma_is_flow_time(self, cfg) -> bool:
        """Whether `scheduler.sigmas` hold the flow time t rather than sigma."""
        return self.sample_convention(cfg) == "flow"

    def harness_timesteps(self, sched, cfg, sigmas: np.ndarray) -> np.ndarray:
        """The timesteps handed to the model at the grid's sigmas > 0 (grid="harness")."""
        return timestep_of_sigma(vp_table(sched), sigmas)

    def model_sigma(self, sched, cfg, t: float) -> float:
        """The sigma a network trained on the scheduler's table gives timestep t (grid="native")."""
        return sigma_of_timestep(vp_table(sched), t)

    def prepare(self, sched) -> None:
        """Called on the scheduler before its step loop (its sigmas set): speed-ups that leave step's arithmetic
        bitwise unchanged. None by default."""

    def sigma_range(self, sched, cfg):
        """(lowest, highest) sigma of the training table on the native grid (None: unbounded)."""
        table = vp_table(sched)
        return float(table[0]), float(table[-1])
