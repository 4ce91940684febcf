"""Profiles of the exponential integrators on the DDPM table: DPMSolverMultistep, DPMSolverSinglestep, UniPC, DEIS.

Their sample is x_vp = x/sqrt(1 + sigma^2) (or x_t = x/(1 + sigma) with use_flow_sigmas; conventions.py), their
timesteps index the DDPM table sigma_k = sqrt((1 - abar_k)/abar_k) (grids.py), and `final_sigmas_type` decides
whether the grid ends in 0.

Heuristics that change the order (config as given; each listed in the solver's `notes`):
    DPMSolverMultistep  lower_order_final (default True): with fewer than 15 steps the last step is first order
                        and the one before at most second order; euler_at_final: last step first order at every N.
    UniPCMultistep      lower_order_final (default True): step i uses order min(p, N - i) at every N, so on a grid
                        ending above 0 the last step is UniP-1 with no corrector: global error O(h^2) whatever p
                        (its constant ~ dD/dlambda = O(sigma_min^2): visible at sigma_min = 0.5, hidden at 0.002).
                        Into sigma = 0: solver_type "bh1" returns NaN; lower_order_final=False (bh1 or bh2)
                        returns +-inf.
    DEISMultistep       lower_order_final (default True): as DPMSolverMultistep, below 15 steps.
    DPMSolverSinglestep its order list ([1, 2, 3, 1, 2, 3, ...], lower_order_final) groups the grid into steps.
"""

from __future__ import annotations

from .conventions import PROCESSES, flow_sigma
from .scheduler_profile import SchedulerProfile


class VPExponentialProfile(SchedulerProfile):
    """DDPM-table exponential integrators: the sample is x_vp (or x_t with use_flow_sigmas)."""

    final_zero = "config"
    final_step = "first-order step into sigma = 0 (x <- D), 1 NFE"

    def sample_convention(self, cfg) -> str:
        return "flow" if cfg.get("use_flow_sigmas") else "vp"

    def processes(self, cfg) -> tuple[str, ...]:
        return ("vp-eps", "vp-v", "vp-x0", "fm")

    def process_of(self, cfg) -> str:
        if cfg.get("use_flow_sigmas") or cfg.get("prediction_type") == "flow_prediction":
            if cfg.get("use_flow_sigmas") and cfg.get("prediction_type") == "flow_prediction":
                return "fm"
            raise ValueError("config: use_flow_sigmas=True and prediction_type='flow_prediction' go together here "
                             "(the 'fm' process); other combinations are not supported")
        return super().process_of(cfg)

    def process_config(self, process: str) -> dict:
        return {"prediction_type": PROCESSES[process].prediction, "use_flow_sigmas": process == "fm"}

    def check(self, cfg) -> None:
        if str(cfg.get("algorithm_type", "")).startswith("sde-"):
            raise ValueError(f"config: algorithm_type {cfg['algorithm_type']!r} is a stochastic (SDE) sampler; the "
                             "suite validates ODE solvers")
        if cfg.get("variance_type") in ("learned", "learned_range"):
            raise ValueError("config: variance_type 'learned*' expects extra variance channels from the network; the "
                             "fake model predicts the mean only")
        if cfg.get("use_dynamic_shifting"):
            raise ValueError("config: use_dynamic_shifting needs a per-image `mu`; not supported")

    def order(self, cfg) -> int | None:
        return int(cfg["solver_order"])

    def sigma_range(self, sched, cfg):
        return None if cfg.get("use_flow_sigmas") else super().sigma_range(sched, cfg)

    def harness_timesteps(self, sched, cfg, sigmas):
        if cfg.get("use_flow_sigmas"):
            return cfg["num_train_timesteps"] * sigmas / (1.0 + sigmas)
        return super().harness_timesteps(sched, cfg, sigmas)

    def model_sigma(self, sched, cfg, t):
        if cfg.get("use_flow_sigmas"):
            return flow_sigma(t / cfg["num_train_timesteps"])
        return super().model_sigma(sched, cfg, t)

    @staticmethod
    def _modified(cfg) -> bool:
        return bool(cfg.get("thresholding"))


class DPMSolverMultistepProfile(VPExponentialProfile):
    classes = ("DPMSolverMultistepScheduler",)
    float32_cast = True

    def processes(self, cfg):
        return super().processes(cfg) if cfg.get("algorithm_type") == "dpmsolver++" else ("vp-eps", "vp-v", "vp-x0")

    def equivalent(self, cfg):
        if self._modified(cfg) or cfg.get("euler_at_final"):
            return None
        order, plus = int(cfg["solver_order"]), cfg["algorithm_type"] == "dpmsolver++"
        if order == 1:
            return ("ddim" if plus else "dpm_solver_1"), {}
        if not plus or cfg["solver_type"] != "midpoint" or order > 3:
            return None  # no registered multistep noise-prediction solver; "heun" 2M is another formula
        return {2: "dpmpp_2m", 3: "dpmpp_3m"}[order], {"lower_order_final": bool(cfg["lower_order_final"])}

    def notes(self, cfg):
        out = []
        if cfg.get("lower_order_final"):
            out.append("lower_order_final: below 15 steps the last step is first order and the one before at most "
                       "second (the registered dpmpp_* apply the dpm-solver rule, below 10 steps: equal for N < 10 "
                       "and N >= 15)")
        if cfg.get("euler_at_final"):
            out.append("euler_at_final: the last step is first order at every N (global order 1 on grids ending "
                       "above 0)")
        if int(cfg["solver_order"]) == 3 and cfg.get("algorithm_type") == "dpmsolver++":
            out.append("3M update = the registered dpmpp_3m (authors' coefficients), whose symbolic global order is 2")
        if int(cfg["solver_order"]) == 3 and cfg.get("algorithm_type") == "dpmsolver":
            out.append("third-order noise-prediction update: its D2 weight sigma_t ((e^h - 1 - h)/h^2 - 1/2) is half "
                       "the exact one, as in 3M (analytic.symbolic: leading error e2/12, global order 2)")
        return out


class DPMSolverSinglestepProfile(VPExponentialProfile):
    classes = ("DPMSolverSinglestepScheduler",)
    final_step = "the order list's last entry is 1 into sigma = 0 (x <- D), 1 NFE"

    def processes(self, cfg):
        return super().processes(cfg) if cfg.get("algorithm_type") == "dpmsolver++" else ("vp-eps", "vp-v", "vp-x0")

    def equivalent(self, cfg):
        if self._modified(cfg) or int(cfg["solver_order"]) != 1:
            return None  # orders 2, 3 take their stages at the grid's interior points: r varies with the grid
        return ("ddim" if cfg["algorithm_type"] == "dpmsolver++" else "dpm_solver_1"), {}

    def notes(self, cfg):
        return ["the grid's points are the stages: a step of order k spans k grid intervals (order list "
                "[1, 2, 3, 1, 2, 3, ...]); set_timesteps switches lower_order_final on when N is not a multiple of "
                "solver_order or the grid ends in 0, and a trailing lower-order step then limits the order",
                "order 2 (midpoint) on a grid uniform in lambda = the registered dpmpp_2s / dpm_solver_2 (r = 1/2) on "
                "every other grid point; order 3 takes its second stage with the order-2 midpoint update, not "
                "DPM-Solver-3's (registered dpm_solver_3)"]


class UniPCProfile(VPExponentialProfile):
    classes = ("UniPCMultistepScheduler",)
    final_step = "predictor step into sigma = 0 with the step's order: x <- D only when that order is 1"

    def order(self, cfg):
        # diffusers docstring: "The effective order of accuracy is `solver_order + 1` due to the UniC."
        return int(cfg["solver_order"]) + 1

    def equivalent(self, cfg):
        p = int(cfg["solver_order"])
        if self._modified(cfg) or not cfg.get("predict_x0", True) or cfg.get("solver_p") is not None or p > 3:
            return None
        params = {"lower_order_final": bool(cfg["lower_order_final"])}
        if cfg.get("disable_corrector"):
            params["disable_corrector_steps"] = tuple(int(k) for k in cfg["disable_corrector"])
        return f"unipc_{cfg['solver_type']}_p{p}", params

    def notes(self, cfg):
        out = []
        if cfg.get("lower_order_final"):
            out.append("lower_order_final: step i uses order min(p, N - i) at every N; on a grid ending above 0 the "
                       "last step is UniP-1 with no corrector after it, so the global error is O(h^2) for any p")
        else:
            out.append("lower_order_final=False with a grid ending in 0: the last predictor of order >= 2 divides by "
                       "rk = (lambda_prev - lambda_s)/h = 0 (h = inf): the output is infinite (+-inf, not NaN), "
                       "for bh1 and bh2 alike")
        if cfg.get("solver_type") == "bh1":
            out.append("bh1 with a grid ending in 0 (final_sigmas_type 'zero', the default): B(h) = -h = -inf times "
                       "the zero residual of the first-order last step is NaN")
        return out


class DEISProfile(VPExponentialProfile):
    classes = ("DEISMultistepScheduler",)
    final_zero = "never"
    final_step = "none: the schedule ends at the table's smallest sigma (the update divides by log rho)"

    def equivalent(self, cfg):
        if self._modified(cfg) or int(cfg["solver_order"]) != 1:
            return None  # "logrho": eps interpolated in log rho, not in rho = sigma as the registered deis_tab*
        return "dpm_solver_1", {}

    def notes(self, cfg):
        out = ["solver_type 'logrho': the Lagrange interpolant of eps is a polynomial in log(rho) (rho = sigma), "
               "integrated exactly in rho; the registered deis_tab* interpolate in rho itself: another update of "
               "the same order"]
        if cfg.get("lower_order_final"):
            out.append("lower_order_final: below 15 steps the last step is first order and the one before at most "
                       "second")
        if cfg.get("use_karras_sigmas"):
            out.append("use_karras_sigmas: set_timesteps repeats the last sigma, a zero-length final step")
        return out
