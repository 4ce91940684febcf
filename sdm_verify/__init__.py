"""sdm-verify: the systems under test (solvers, schedules, SDM) and the harness that measures them.

The public Python API, importable from the package root. Names are resolved lazily on first use, so
`import sdm_verify` stays light (no torch): the pytest plugin the package provides costs nothing in test runs that
do not use it.

    measure_order(solver, target, ...)      the measured convergence order of a solver (harness.convergence)
    check(spec_or_solver, claimed_order)    the conformance check behind `sdm-verify validate` (conformance)
    get_solver(name, **params)              a registered solver; available_solvers() lists them (solvers)
    get_schedule(name)                      a registered schedule; available_schedules() lists them (schedules)
    Solver                                  the declared solver interface (solvers.base)
    count_nfe(denoiser), CountedDenoiser    counted denoiser calls, the only source of NFE numbers (harness.nfe)
    ResultStore                             the resumable results store (harness.store)
    load_denoiser(path)                     a real denoiser behind D(x, sigma) (models)
    GridError, SolverDivergedError          the errors a solver run raises (errors)
    InputError, DenoiserOutputError,        bad input, refused on one line before any work (errors; exit status 2
    StoreError, OutputPathError             on the command line)
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

#: public name -> (module, attribute)
_PUBLIC = {
    "measure_order": ("sdm_verify.harness.convergence", "measure_order"),
    "OrderMeasurement": ("sdm_verify.harness.convergence", "OrderMeasurement"),
    "check": ("sdm_verify.conformance", "check"),
    "get_solver": ("sdm_verify.solvers", "get"),
    "available_solvers": ("sdm_verify.solvers", "available"),
    "Solver": ("sdm_verify.solvers", "Solver"),
    "get_schedule": ("sdm_verify.schedules", "get"),
    "available_schedules": ("sdm_verify.schedules", "available"),
    "count_nfe": ("sdm_verify.harness.nfe", "count_nfe"),
    "CountedDenoiser": ("sdm_verify.harness.nfe", "CountedDenoiser"),
    "ResultStore": ("sdm_verify.harness.store", "ResultStore"),
    "load_denoiser": ("sdm_verify.models", "load_denoiser"),
    "GridError": ("sdm_verify.errors", "GridError"),
    "SolverDivergedError": ("sdm_verify.errors", "SolverDivergedError"),
    "InputError": ("sdm_verify.errors", "InputError"),
    "DenoiserOutputError": ("sdm_verify.errors", "DenoiserOutputError"),
    "StoreError": ("sdm_verify.errors", "StoreError"),
    "OutputPathError": ("sdm_verify.errors", "OutputPathError"),
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    try:
        module, attr = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'sdm_verify' has no attribute {name!r}") from None
    value = getattr(import_module(module), attr)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
