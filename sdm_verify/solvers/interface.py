"""The declared solver interface: every capability the harness and the conformance check may read, listed once.

A solver maps x at sigmas[0] to x at sigmas[-1], solver(denoiser, x, sigmas) -> x, in canonical (EDM) variables:
x = x0 + sigma n, D(x, sigma) = E[x0 | x] and the probability-flow ODE dx/dsigma = (x - D(x, sigma))/sigma
(Karras et al. 2022, Eq. 3). Besides running, a solver declares what it claims and what it is: its order, its
cost in denoiser calls, what it does on a step into sigma = 0, its coefficient functions (for the symbolic order),
a registered twin with the same update, the processes it integrates in, and which identities hold for it.

Every declaration below has a default that holds for a solver that says nothing about it, so a reader takes
`solver.<name>` as it is, with no getattr default of its own (only adapters.spec.CallableSolver reads an outside
object's attributes, once, to declare them). The grid loop that most solvers share is
`sdm_verify.solvers.base.Solver`; a solver that runs its own loop (an adapter) overrides `__call__` instead.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from types import MappingProxyType

from ..errors import InputError
from . import registry

__all__ = ["SolverInterface", "has_coefficients", "DECLARED"]


class SolverInterface(abc.ABC):
    """What a solver declares about itself (class attributes and methods; each line: meaning, then default)."""

    # ------------------------------------------------------------------------------------------- the claim
    #: the name in tables and results (the registered name for a registered solver); default "solver"
    name: str = "solver"
    #: the claimed global order of the ODE solution error, O(h^order); None: no claim (then one must be given)
    order: float | None = None
    #: the conditions under which its paper states `order`, e.g. "uniform steps"; "": any smooth grid
    order_conditions: str = ""
    #: whether the solver is stochastic and is called with a noise source; False: a deterministic ODE solver
    needs_noise: bool = False
    #: claimed weak / strong order of a stochastic solver (needs_noise); None: no claim
    weak_order: float | None = None
    strong_order: float | None = None
    #: where the stated weak / strong orders come from (paper, section), or why none is claimed; "": not stated
    claim_source: str = ""
    #: whether the solver accepts a guided denoiser (classifier-free guidance); False: the plain D(x, sigma) only
    accepts_guidance: bool = False
    #: caveats about this configuration, in words (e.g. a heuristic that lowers the order); default none
    notes: tuple[str, ...] | list[str] = ()

    # -------------------------------------------------------------------------------------------- the cost
    #: denoiser calls per step on a grid ending above 0; default 1
    nfe_per_step: int = 1
    #: denoiser calls of a step into sigma = 0; None: a full step (multi-stage solvers take a 1-call step there)
    final_step_nfe: int | None = None
    #: whether nfe(n) / nfe_to_zero(n) are exact (False: a worst case, the count depends on the data); default True
    nfe_exact: bool = True
    #: whether the map x -> output depends on the batch it runs in (decisions made on the data); default False
    data_dependent: bool = False

    def nfe(self, n_steps: int) -> int:
        """Denoiser calls expected for `n_steps` steps on a grid ending above 0: nfe_per_step * n_steps.
        A solver that does not declare its cost sets `nfe = nfe_to_zero = None` (see adapters.spec.CallableSolver)."""
        return self.nfe_per_step * n_steps

    def nfe_to_zero(self, n_steps: int) -> int:
        """Expected calls when the last of the `n_steps` steps goes to sigma = 0: nfe(n - 1) + final_step_nfe."""
        if self.final_step_nfe is None:
            return self.nfe(n_steps)
        return self.nfe(n_steps - 1) + self.final_step_nfe

    # -------------------------------------------------------------------------------------- the final step
    #: what a step into sigma_next = 0 does, in words; "": not stated
    final_step: str = ""
    #: whether the solver can take a step into sigma = 0; False: defined only above 0 (diffusers' DEIS)
    steps_into_zero: bool = True

    # ---------------------------------------------------------------------------- the coefficient functions
    #: the normalized update form of `update_rule` (analytic.symbolic.FORMS: "data-lambda", "noise-lambda",
    #: "noise-sigma"); None: the solver exposes no coefficient functions (see has_coefficients)
    symbolic_form: str | None = None
    #: whether an active corrector follows each step, so that `corrector_rule` is the effective update; False
    corrector: bool = False

    def update_rule(self, h, ratios, ops) -> tuple[list, list]:
        """(weights, nodes) of one step in `symbolic_form`, h the step in the form's variable, ratios the previous
        step sizes / h, ops a math namespace (MATH_OPS or analytic.symbolic.SYMPY_OPS). Only with symbolic_form."""
        raise NotImplementedError(f"{type(self).__name__} exposes no coefficient functions (symbolic_form is None)")

    def stage_rules(self, h, ops) -> list[tuple[list, list]]:
        """(weights, nodes) of each intermediate stage of a single-step method, in `symbolic_form`; default []."""
        return []

    def corrector_rule(self, h, ratios, ops) -> tuple[list, list]:
        """(weights, nodes) of the corrected step (the new point at node 1), when `corrector` is True."""
        raise NotImplementedError(f"{type(self).__name__} has no corrector")

    # -------------------------------------------------------------------------------------------- the twin
    #: the registered solver that implements the same update (checked to rounding by conformance); None: none
    equivalent: str | None = None
    #: the parameters to configure `equivalent` with (e.g. lower_order_final); default none
    equivalent_params: Mapping = MappingProxyType({})

    def equivalent_solver(self) -> SolverInterface | None:
        """The registered `equivalent`, configured with `equivalent_params`; None without one."""
        if self.equivalent is None:
            return None
        return registry.get(self.equivalent, **self.equivalent_params)

    # ------------------------------------------------------------------------------------------ processes
    #: whether the registered solver integrates in a process's own time and must be built with `process=`; False
    needs_process: bool = False
    #: the processes the solver can be run for (each a different solver, see with_process); (): sigma space only
    processes: tuple[str, ...] = ()
    #: the (lowest, highest) sigma the solver is defined on; None: any
    sigma_range: tuple[float, float] | None = None

    def with_process(self, process: str) -> SolverInterface:
        """The same solver for another process (one of `processes`); without processes: ValueError."""
        raise InputError(f"process: {self.name} runs in sigma space and declares no processes (got {process!r})")

    # ----------------------------------------------------------------------------------------- identities
    #: whether the solver is exact on a point mass (whose flow is affine in sigma); False: reported, not judged
    point_mass_exact: bool = True
    #: why the point-mass identity does not hold exactly (read when point_mass_exact is False)
    point_mass_note: str = "the solver declares point_mass_exact = False"

    # ------------------------------------------------------------------------------------ the configuration
    def params(self) -> dict:
        """The parameters that distinguish this configured instance (result keys, repr); default {}."""
        return {}

    @abc.abstractmethod
    def __call__(self, denoiser: Callable, x, sigmas, callback=None):
        """Integrate from sigmas[0] to sigmas[-1]: x at sigmas[-1]. `callback(info)` after each step, if given."""


#: the names of every declaration above, in order (what an adapter around an outside solver may carry over)
DECLARED = (
    "name", "order", "order_conditions", "needs_noise", "weak_order", "strong_order", "claim_source",
    "accepts_guidance", "notes",
    "nfe_per_step", "final_step_nfe", "nfe_exact", "data_dependent", "nfe", "nfe_to_zero",
    "final_step", "steps_into_zero",
    "symbolic_form", "corrector", "update_rule", "stage_rules", "corrector_rule",
    "equivalent", "equivalent_params", "equivalent_solver",
    "needs_process", "processes", "sigma_range", "with_process",
    "point_mass_exact", "point_mass_note",
)


def has_coefficients(solver: SolverInterface) -> bool:
    """Whether `solver` exposes coefficient functions (`update_rule` in its `symbolic_form`)."""
    return solver.symbolic_form is not None
