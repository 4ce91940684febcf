"""Bad inputs to the solvers, the solver loop, the counted denoiser and the schedules (issue: reliability).

Each row is refused with an InputError subclass whose message names the argument, before any denoiser call
(calls=0), or, for a denoiser whose output is wrong, right after the first call (calls=1) instead of being
broadcast into a wrong result. Format: tests/_bad_inputs.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _bad_inputs import Bad, check, parametrize

from analytic import processes
from sdm_verify import schedules, solvers
from sdm_verify.errors import DenoiserOutputError, GridError, InputError
from sdm_verify.harness.nfe import count_nfe
from sdm_verify.solvers.rk import Euler
from sdm_verify.studies.sdm.schedule import sdm as sdm_schedule

GRID = [10.0, 3.0, 1.0, 0.3]
VP = processes.get("vp")


def x0() -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, 12).reshape(4, 3) * 10.0


def run(name="euler", grid=GRID, x=None, callback=None, denoiser=None, **params):
    """A row's call: solver `name` on the probe's denoiser (or `denoiser(p)`), x (default x0()) and `grid`."""
    def call(p):
        den = p.denoiser if denoiser is None else denoiser(p)
        return solvers.get(name, **params)(den, x0() if x is None else x, grid, callback=callback)
    return call


def output(transform):
    """A denoiser built on the probe's (so its calls are counted) whose output is transform(D(x, sigma), x)."""
    return lambda p: (lambda y, s: transform(p.denoiser(y, s), y))


def forbid_steps(p):
    """No step of a registered Runge-Kutta solver may run before the refusal."""
    p.forbid("sdm_verify.solvers.rk.Euler.step")
    p.forbid("sdm_verify.solvers.rk.Heun.step")


def forbid_grid_maker(p):
    p.forbid("sdm_verify.schedules.grids.grid_from_map")


def forbid_sdm_build(p):
    p.forbid("sdm_verify.studies.sdm.schedule.build_initial_schedule")


def edm(*args, **kwargs):
    return lambda p: schedules.get("edm")(*args, **kwargs)


def sdm_sched(n=4, **kwargs):
    def call(p):
        kwargs.setdefault("denoiser", p.denoiser)
        kwargs.setdefault("x", x0())
        return sdm_schedule(n, 0.1, 10.0, **kwargs)
    return call


OUT = ("denoiser", "step")  # what every refusal of a denoiser output inside the solver loop names

CASES = [
    # ------------------------------------------------------------------------------ the grid (check_grid)
    Bad("grid-strings", run(grid=["10", "1"]), GridError, "sigmas", forbid_steps),
    Bad("grid-one-string", run(grid="10,3,1"), GridError, "sigmas", forbid_steps),
    Bad("grid-generator", run(grid=(s for s in GRID)), GridError, "sigmas", forbid_steps),
    Bad("grid-dict", run(grid={10.0: 1, 1.0: 2}), GridError, "sigmas", forbid_steps),
    Bad("grid-set", run(grid={10.0, 1.0}), GridError, "sigmas", forbid_steps),
    Bad("grid-none", run(grid=None), GridError, "sigmas", forbid_steps),
    Bad("grid-0d-tensor", run(grid=torch.tensor(10.0)), GridError, "sigmas", forbid_steps),
    Bad("grid-complex-tensor", run(grid=torch.tensor([10.0, 1.0], dtype=torch.complex128)), GridError, "sigmas",
        forbid_steps),
    Bad("grid-int-timesteps", run(grid=torch.tensor([999, 499, 0])), GridError, "sigmas", forbid_steps),
    Bad("grid-bools", run(grid=[True, False]), GridError, "sigmas", forbid_steps),
    Bad("grid-numpy-strings", run(grid=np.array(["10", "1"])), GridError, "sigmas", forbid_steps),
    Bad("grid-2d", run(grid=torch.ones(2, 2)), GridError, "sigmas", forbid_steps),
    Bad("grid-nan-entry", run(grid=[10.0, math.nan, 1.0]), GridError, "sigmas", forbid_steps),
    Bad("grid-increasing", run("heun", grid=[1.0, 3.0, 10.0]), GridError, "sigmas", forbid_steps),
    # ------------------------------------------------------------------------- x, callback, the denoiser
    Bad("x-list", run(x=[[1.0, 2.0, 3.0]]), InputError, "x", forbid_steps),
    Bad("x-numpy", run(x=np.ones((4, 3))), InputError, "x", forbid_steps),
    Bad("x-int-tensor", run(x=torch.ones(4, 3, dtype=torch.int64)), InputError, "x", forbid_steps),
    Bad("x-complex", run(x=torch.ones(4, 3, dtype=torch.complex64)), InputError, "x", forbid_steps),
    Bad("x-nan", run(x=torch.tensor([[0.0, math.nan, 1.0]])), InputError, "x", forbid_steps),
    Bad("x-inf", run("dpmpp_2m", x=torch.tensor([[0.0, -math.inf, 1.0]])), InputError, "x"),
    Bad("x-0dim", run(x=torch.tensor(3.0)), InputError, "x", forbid_steps),
    Bad("x-empty-batch", run(x=torch.zeros(0, 3)), InputError, "x", forbid_steps),
    Bad("x-meta-device", run(x=torch.empty(4, 3, device="meta")), InputError, "x", forbid_steps),
    Bad("callback-not-callable", run(callback="print"), InputError, "callback", forbid_steps),
    Bad("callback-not-callable-sdm", run("sdm", callback=1), InputError, "callback", forbid_steps),
    Bad("denoiser-not-callable", lambda p: solvers.get("euler")(None, x0(), GRID), InputError, "denoiser"),
    # --------------------------------------------- the denoiser's output (refused after its first call)
    Bad("out-b1-broadcast", run(denoiser=output(lambda d, y: d[:, :1])), DenoiserOutputError,
        OUT + ("euler", "(4, 1)"), calls=1),
    Bad("out-1d-broadcast", run("heun", denoiser=output(lambda d, y: d[:1])), DenoiserOutputError,
        OUT + ("heun", "(1, 3)"), calls=1),
    Bad("out-scalar", run("dpmpp_2m", denoiser=output(lambda d, y: d.mean())), DenoiserOutputError,
        OUT + ("dpmpp_2m",), calls=1),
    Bad("out-transposed", run("rk4", denoiser=output(lambda d, y: d.T.contiguous())), DenoiserOutputError,
        OUT + ("rk4", "(3, 4)"), calls=1),
    Bad("out-none", run("unipc", denoiser=output(lambda d, y: None)), DenoiserOutputError,
        OUT + ("unipc", "None"), calls=1),
    Bad("out-list", run("ipndm", denoiser=output(lambda d, y: d.tolist())), DenoiserOutputError,
        OUT + ("ipndm", "list"), calls=1),
    Bad("out-numpy", run("deis_tab2", denoiser=output(lambda d, y: d.numpy())), DenoiserOutputError,
        OUT + ("deis_tab2", "numpy"), calls=1),
    Bad("out-int-tensor", run("ddim", denoiser=output(lambda d, y: d.round().long())), DenoiserOutputError,
        OUT + ("ddim", "int64"), calls=1),
    Bad("out-complex", run("dpm_solver_2", denoiser=output(lambda d, y: d.to(torch.complex64))),
        DenoiserOutputError, OUT + ("dpm_solver_2", "complex"), calls=1),
    Bad("out-tuple", run("dpmpp_2s", denoiser=output(lambda d, y: (d,))), DenoiserOutputError,
        OUT + ("dpmpp_2s", "tuple"), calls=1),
    Bad("out-sdm-override", run("sdm", denoiser=output(lambda d, y: d[:, :1])), DenoiserOutputError,
        OUT + ("sdm",), calls=1),
    Bad("out-native-time", run("euler_t", process=VP, denoiser=output(lambda d, y: d[:1])), DenoiserOutputError,
        OUT + ("euler_t",), calls=1),
    Bad("out-counted-in-loop", run("midpoint", denoiser=lambda p: count_nfe(output(lambda d, y: d[:, :1])(p))),
        DenoiserOutputError, OUT + ("midpoint", "call 1"), calls=1),
    Bad("out-counted-direct", lambda p: count_nfe(output(lambda d, y: d.sum(1, keepdim=True))(p))(x0(), 1.0),
        DenoiserOutputError, ("denoiser", "call 1", "(4, 1)"), calls=1),
    Bad("count-nfe-not-callable", lambda p: count_nfe("model.pt"), InputError, "denoiser"),
    # ---------------------------------------------------------------- the solver registry and parameters
    Bad("solver-unknown-name", lambda p: solvers.get("dpm++2m"), InputError, ("name", "dpmpp_2m")),
    Bad("solver-name-not-string", lambda p: solvers.get(["euler"]), InputError, ("name", "euler")),
    Bad("solver-needs-process-name", lambda p: solvers.needs_process(None), InputError, "name"),
    Bad("solver-unknown-param", lambda p: solvers.get("euler", steps=10), InputError, "params"),
    Bad("solver-order-negative", lambda p: solvers.get("unipc", order=-1), InputError, "order"),
    Bad("solver-order-string", lambda p: solvers.get("unipc", order="2"), InputError, "order"),
    Bad("solver-deis-r-float", lambda p: solvers.get("deis_tab1", r=1.5), InputError, "r"),
    Bad("solver-ipndm-order-high", lambda p: solvers.get("ipndm", max_order=5), InputError, "max_order"),
    Bad("solver-r1-nan", lambda p: solvers.get("dpm_solver_2", r1=math.nan), InputError, "r1"),
    Bad("solver-lower-order-final-string", lambda p: solvers.get("unipc", lower_order_final="no"), InputError,
        "lower_order_final"),
    Bad("solver-disable-steps-none", lambda p: solvers.get("unipc", disable_corrector_steps=None), InputError,
        "disable_corrector_steps"),
    Bad("solver-tau-nan", lambda p: solvers.get("sdm", tau_k=math.nan), InputError, "tau_k"),
    Bad("solver-lambdas-string", lambda p: solvers.get("sdm", lambdas="1,0"), InputError, "lambdas"),
    Bad("solver-lambdas-wrong-length", run("sdm", lambdas=[1.0, 0.0]), InputError, "lambdas"),
    Bad("solver-missing-process", lambda p: solvers.get("heun_t"), InputError, "process"),
    Bad("solver-process-as-name", lambda p: solvers.get("heun_t", process="vp"), InputError, "process"),
    Bad("solver-with-unknown-process", lambda p: solvers.get("heun").with_process("vp"), InputError, "process"),
    Bad("solver-register-duplicate", lambda p: solvers.register("euler", Euler), InputError, "name"),
    Bad("solver-register-not-a-class", lambda p: solvers.register("my_euler", Euler()), InputError, "cls"),
    # ------------------------------------------------------------------------------------- schedules
    Bad("sched-n-zero", edm(0, 0.002, 80.0), InputError, "n", forbid_grid_maker),
    Bad("sched-n-negative", edm(-8, 0.002, 80.0), InputError, "n", forbid_grid_maker),
    Bad("sched-n-float", edm(8.0, 0.002, 80.0), InputError, "n", forbid_grid_maker),
    Bad("sched-n-bool", edm(True, 0.002, 80.0), InputError, "n", forbid_grid_maker),
    Bad("sched-n-huge", edm(10**12, 0.002, 80.0), InputError, "n", forbid_grid_maker),
    Bad("sched-sigma-min-zero", edm(8, 0.0, 80.0), InputError, "sigma_min", forbid_grid_maker),
    Bad("sched-sigma-min-negative", lambda p: schedules.get("logsnr")(8, -1.0, 80.0), InputError, "sigma_min",
        forbid_grid_maker),
    Bad("sched-sigma-max-nan", edm(8, 0.002, math.nan), InputError, "sigma_max", forbid_grid_maker),
    Bad("sched-sigma-max-inf", edm(8, 0.002, math.inf), InputError, "sigma_max", forbid_grid_maker),
    Bad("sched-min-above-max", edm(8, 80.0, 0.002), InputError, ("sigma_min", "sigma_max"), forbid_grid_maker),
    Bad("sched-sigma-string", edm(8, "0.002", 80.0), InputError, "sigma_min", forbid_grid_maker),
    Bad("sched-rho-zero", edm(8, 0.002, 80.0, rho=0), InputError, "rho", forbid_grid_maker),
    Bad("sched-rho-nan", edm(8, 0.002, 80.0, rho=math.nan), InputError, "rho", forbid_grid_maker),
    Bad("sched-zero-string", edm(8, 0.002, 80.0, zero="true"), InputError, "zero", forbid_grid_maker),
    Bad("sched-unknown-param", edm(8, 0.002, 80.0, sigma_data=0.5), InputError, "params", forbid_grid_maker),
    Bad("sched-process-missing", lambda p: schedules.get("time_quadratic")(8, 0.01, 80.0), InputError, "process",
        forbid_grid_maker),
    Bad("sched-process-as-name", lambda p: schedules.get("uniform_t")(8, 0.01, 80.0, process="vp"), InputError,
        "process", forbid_grid_maker),
    Bad("sched-unknown-name", lambda p: schedules.get("karras"), InputError, ("name", "edm")),
    Bad("sched-name-not-string", lambda p: schedules.get(7), InputError, "name"),
    Bad("sched-uses-process-unknown", lambda p: schedules.uses_process("vp"), InputError, "name"),
    Bad("sched-register-not-callable", lambda p: schedules.register("mine", "edm"), InputError, "schedule"),
    Bad("sched-register-duplicate", lambda p: schedules.register("edm", schedules.logsnr), InputError, "name"),
    Bad("sched-register-uses-process-string", lambda p: schedules.register("mine", schedules.edm, uses_process="no"),
        InputError, "uses_process"),
    Bad("sched-map-not-callable", lambda p: schedules.grid_from_map(80.0, 8, 0.002, 80.0, False), InputError,
        "sigma_of_u"),
    Bad("sched-map-wrong-shape", lambda p: schedules.grid_from_map(lambda u: torch.ones(3), 8, 0.002, 80.0, False),
        InputError, "sigma_of_u"),
    # ------------------------------------------------------------------- SDM's schedule (its arguments)
    Bad("sdm-sched-unknown-param", sdm_sched(eta=0.1), InputError, "params", forbid_sdm_build),
    Bad("sdm-sched-no-denoiser", sdm_sched(denoiser=None), InputError, "denoiser", forbid_sdm_build),
    Bad("sdm-sched-x-nan", sdm_sched(x=torch.full((4, 3), math.nan)), InputError, "x", forbid_sdm_build),
    Bad("sdm-sched-x-1d", sdm_sched(x=torch.ones(3)), InputError, "x", forbid_sdm_build),
    Bad("sdm-sched-n-one", sdm_sched(n=1), InputError, "n", forbid_sdm_build),
    Bad("sdm-sched-norm", sdm_sched(norm="l2"), InputError, "norm", forbid_sdm_build),
    Bad("sdm-sched-power-nan", sdm_sched(power=math.nan), InputError, "power", forbid_sdm_build),
    Bad("sdm-sched-eta-order", sdm_sched(eta_min=0.5, eta_max=0.1), InputError, "eta_max"),
    Bad("sdm-sched-out-broadcast", sdm_sched(denoiser=lambda y, s: y[:, :1] * 0.5), DenoiserOutputError,
        ("denoiser", "(4, 1)")),
]


@parametrize(CASES)
def test_refused(case, probe):
    check(case, probe)


def test_enough_distinct_rows():
    assert len(CASES) >= 35


def test_valid_twins_of_the_rows_run():
    """The valid neighbours of the rows still work: float grids of any container, float16 x, a denoiser answering
    in another float dtype (accepted: the arithmetic promotes), requires_grad x, Python ints in a grid."""
    den = lambda y, s: y / (1.0 + s * s)  # noqa: E731
    e = solvers.get("euler")
    ref = e(den, x0(), GRID)
    for grid in (tuple(GRID), np.array(GRID), torch.tensor(GRID), torch.tensor(GRID, dtype=torch.float32),
                 [10, 3.0, 1, 0.3]):
        assert torch.equal(e(den, x0(), grid), ref)
    assert e(den, x0().half(), GRID).dtype == torch.float16
    assert e(lambda y, s: den(y, s).double(), x0(), GRID).shape == (4, 3)
    xg = x0().requires_grad_()
    e(den, xg, GRID).sum().backward()
    assert xg.grad is not None and xg.grad.shape == (4, 3)
    assert count_nfe(den)(x0(), 1.0).shape == (4, 3)
    assert len(schedules.get("edm")(10**4, 0.002, 80.0)) == 10**4 + 1


# --- the adapters that run their own loop get the same output check (grid.checked_denoiser) ---------------------

def _outside_euler(denoiser, x, sigmas):
    for s, t in zip(sigmas[:-1], sigmas[1:], strict=True):
        x = x + (t - s) * (x - denoiser(x, s)) / s
    return x


@pytest.mark.parametrize("shape", [(4, 1), (1, 3), (), (3, 4)])
def test_outside_callable_solver_refuses_a_broadcast_output(shape):
    from sdm_verify.adapters.spec import as_solver
    from sdm_verify.errors import DenoiserOutputError

    solver = as_solver(_outside_euler)
    x = torch.ones(4, 3, dtype=torch.float64)
    with pytest.raises(DenoiserOutputError, match=r"denoiser:.*_outside_euler.*call 1"):
        solver(lambda y, s: torch.zeros(shape, dtype=y.dtype), x, [2.0, 1.0, 0.5])
    # the right shape runs
    assert solver(lambda y, s: torch.zeros_like(y), x, [2.0, 1.0, 0.5]).shape == x.shape
