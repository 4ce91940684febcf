"""What the order measurement imposes on a diffusers scheduler: `imposed_changes(solver)`, one row per key.

The user's config object is never changed (the adapter works on copies). For the order measurement the adapter runs
the scheduler on the harness's grids and in float64; each thing it imposes for that is listed here as a dict
(key, user, imposed, why) and shown in the verdict of `sdm-verify validate` and its --json ("imposed"). The
as-shipped pass (sdm_verify.conformance.shipped) runs the scheduler without any of these.
"""

from __future__ import annotations

import inspect

#: what "user" says for a key the user's config leaves at the class default
DEFAULT = "{value!r} (class default)"


def _user_value(solver, key: str) -> str:
    if key in solver.user_config:
        return repr(solver.user_config[key])
    params = inspect.signature(solver.cls.__init__).parameters
    default = params[key].default if key in params else None
    return DEFAULT.format(value=default)


def _row(key, user, imposed, why) -> dict:
    return {"key": key, "user": user, "imposed": imposed, "why": why}


def imposed_changes(solver) -> list[dict]:
    """The rows for `solver` (a DiffusersSolver): see the module docstring."""
    cfg, profile, name = solver.effective_config, solver.profile, solver.cls.__name__
    rows = []
    spacing = cfg.get("timestep_spacing")
    own = "set_timesteps(N)'s own grid" + (f" (timestep_spacing={spacing!r})" if spacing else "")
    if hasattr(profile, "impose"):
        how = ("the harness grid: abar = 1/(1 + s^2) of its points written into alphas_cumprod at the timesteps "
               "handed to step, final_alpha_cumprod / one set to the end point's")
    elif hasattr(profile, "impose_grid"):
        how = "the harness grid, written into the scheduler's own arrays in its own layout after set_timesteps(N)"
    else:
        how = "the harness grid, written into scheduler.sigmas and .timesteps after set_timesteps(N)"
    rows.append(_row("sigmas/timesteps", own, how, "the order is measured on families of grids (EDM rho = 7, "
                     "log-SNR) refined with N, the same for every solver"))
    if profile.final_zero == "config" and "final_sigmas_type" in cfg:
        rows.append(_row("final_sigmas_type", _user_value(solver, "final_sigmas_type"),
                         "'zero' on grids ending in 0, 'sigma_min' on grids ending above 0",
                         "the last step must land on the harness grid's last point"))
    harness_config = getattr(profile, "harness_config", None)
    if harness_config is not None:
        for key in sorted(set(harness_config(cfg, 1)) | set(harness_config(cfg, 10**6))):
            rows.append(_row(key, _user_value(solver, key), "per N: " + ", ".join(
                f"N={n}: {harness_config(cfg, n).get(key, 'unchanged')!r}" for n in (32, 512, 2048)),
                "uniform integer timestep strides of at least 2, so that the PRK midpoints are distinct timesteps"))
    if solver.keep_float64:
        user = "float32 inside step() (it casts the sample)" if profile.float32_cast else "the caller's dtype"
        rows.append(_row("dtype", user + "; a pipeline runs float32", "float64 sample and model output "
                         "(a Float64Tensor keeps float64 through step's casts)",
                         "float32 round-off (~1e-7) would hide orders above ~2"))
    if len(solver.processes) > 1:
        keys = sorted({k for p in solver.processes for k in profile.process_config(p)})
        user = ", ".join(f"{k}={_user_value(solver, k)}" for k in keys)
        rows.append(_row("/".join(keys), user, "each of the processes " + ", ".join(solver.processes) + " in turn",
                         "the order is measured for every network parameterization the scheduler accepts"))
    rows.append(_row("model", "a trained network", "the exact oracle denoiser of each target, its output in the "
                     "scheduler's prediction_type", "exact targets: the error measured is the sampler's alone"))
    for key, value in sorted(getattr(solver, "step_config", {}).items()):
        if key not in getattr(solver, "step_given", {}):
            rows.append(_row(key, f"{value!r} (step() default)", repr(value), f"a step() argument of {name}: "
                             "the adapter passes it to every step"))
    return rows


def imposed_text(rows: list[dict]) -> str:
    """The rows as the verdict's block of lines."""
    lines = ["imposed for the order measurement (the user's config is not changed; the as-shipped pass runs it "
             "as given):"]
    for r in rows:
        lines.append(f"  {r['key']}: {r['user']} -> {r['imposed']} ({r['why']})")
    return "\n".join(lines)
