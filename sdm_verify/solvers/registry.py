"""The solver registry. Family modules call `register` at import; `sdm_verify.solvers` imports every family."""

from __future__ import annotations

from ..errors import InputError

#: name -> (solver class, default parameters). The registry holds classes and imports none of them: the solver
#: interface uses it (a declared twin is a registered name), so it stays below the interface.
_REGISTRY: dict[str, tuple[type, dict]] = {}


def register(name: str, cls: type, **defaults) -> None:
    """Register `cls` configured with `defaults` under `name`."""
    if not isinstance(name, str) or not name:
        raise InputError(f"name: must be a non-empty string (got {name!r})")
    if not isinstance(cls, type):
        raise InputError(f"cls: must be a solver class, got {type(cls).__name__} ({cls!r:.40})")
    if name in _REGISTRY:
        raise InputError(f"name: solver {name!r} is already registered")
    _REGISTRY[name] = (cls, defaults)


#: listing order of the families (by module), then registration order within a family
_FAMILY_ORDER = ("rk", "native", "dpm", "unipc", "deis", "ipndm", "pndm", "momentum", "bdia", "sdm",
                 "sde", "ancestral", "dpmpp_sde", "sa_solver", "restart")


def _rank(item) -> tuple[int, int]:
    index, (name, (cls, _)) = item
    family = cls.__module__.rsplit(".", 1)[-1]
    return (_FAMILY_ORDER.index(family) if family in _FAMILY_ORDER else len(_FAMILY_ORDER), index)


def available(stochastic: bool = False) -> list[str]:
    """Names of the registered ODE solvers: Runge-Kutta first, then the exponential-integrator and multistep
    families. stochastic=True: the stochastic samplers instead (they take a noise source, `needs_noise`)."""
    return [name for _, (name, (cls, _)) in sorted(enumerate(_REGISTRY.items()), key=_rank)
            if bool(cls.needs_noise) == bool(stochastic)]


def _lookup(name) -> tuple[type, dict]:
    if not isinstance(name, str):
        raise InputError(f"name: expected a solver name (a string), got {type(name).__name__} ({name!r:.40}); "
                         f"available: {', '.join(available())}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"name: unknown solver {name!r}; available: {', '.join(available())}; stochastic: "
                         f"{', '.join(available(stochastic=True))}") from None


def get(name: str, **params) -> object:
    """A configured solver instance; unknown names and bad parameters raise InputError (a ValueError)."""
    cls, defaults = _lookup(name)
    try:
        solver = cls(**{**defaults, **params})
    except TypeError as exc:
        raise InputError(f"params: bad parameters for solver {name!r}: {exc}") from None
    solver.name = name
    return solver


def needs_process(name: str) -> bool:
    """Whether solver `name` integrates in a process's own time and so must be given `process=`."""
    cls, _ = _lookup(name)
    return bool(cls.needs_process)


def describe() -> list[dict]:
    """One row per registered solver: name, class, claimed order and its conditions, NFE for 10 steps (above 0 /
    into 0), final step, symbolic form (if it exposes its coefficients) and whether it needs a process."""
    rows = []
    for name in available():
        cls, defaults = _REGISTRY[name]
        solver = None if cls.needs_process else get(name)
        obj = solver if solver is not None else cls
        rows.append(dict(
            name=name, cls=cls.__name__, params=defaults, order=obj.order, order_conditions=obj.order_conditions,
            nfe_10=solver.nfe(10) if solver else 10 * cls.nfe_per_step,
            nfe_10_to_zero=solver.nfe_to_zero(10) if solver else None,
            final_step=obj.final_step, form=obj.symbolic_form, needs_process=bool(cls.needs_process),
        ))
    return rows
