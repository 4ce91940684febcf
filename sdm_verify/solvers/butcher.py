"""Explicit Runge-Kutta methods as data: a Butcher tableau and one generic step in sigma.

On the EDM ODE dx/dsigma = eps(x, sigma) = (x - D(x, sigma))/sigma (Karras et al. 2022, Eq. 3), one step
sigma_s -> sigma_t, H = sigma_t - sigma_s, of the tableau (a, b, c) is (Butcher 2016, Numerical Methods for ODEs,
Sec. 23)
    k_i = eps(x_s + H sum_{j<i} a_ij k_j, sigma_s + c_i H),      x_t = x_s + H sum_i b_i k_i.
In the noise-sigma form of analytic/symbolic.py: update_rule(H) = (H b, c) and stage i's rule is (H a_i[:i], c[:i]);
the step (solvers/singlestep.py) evaluates exactly these. A step into sigma_t = 0 is one Euler step,
x <- x_s - sigma_s eps(x_s, sigma_s) = D(x_s, sigma_s) up to rounding, as in EDM (Karras et al. 2022, Alg. 1): the
later stages would need D at sigma = 0 or divide by it.

A tableau is checked on construction: a strictly lower triangular (explicit), c_i = sum_j a_ij (each stage at the
point its increment reaches) and sum_i b_i = 1 (consistency). Entries are exact (int, Fraction or "p/q").
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from numbers import Rational

from ..errors import InputError
from .base import combine, ode_derivative
from .singlestep import SingleStep

__all__ = ["ButcherTableau", "ExplicitRK"]


def _exact(value, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (Rational, str)):
        raise InputError(f"{name}: tableau entries must be exact (int, Fraction or 'p/q'), got {value!r}")
    try:
        return Fraction(value)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"{name}: cannot read {value!r} as a fraction") from None


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge-Kutta method: a (s x s, strictly lower triangular), weights b and nodes c (length s)."""

    a: tuple[tuple[Fraction, ...], ...]
    b: tuple[Fraction, ...]
    c: tuple[Fraction, ...]

    def __post_init__(self):
        s = len(self.b)
        if s < 1:
            raise InputError("b: a tableau needs at least one stage")
        b = tuple(_exact(v, f"b[{i}]") for i, v in enumerate(self.b))
        c = tuple(_exact(v, f"c[{i}]") for i, v in enumerate(self.c))
        if len(c) != s:
            raise InputError(f"c: expected {s} nodes (one per weight in b), got {len(c)}")
        if len(self.a) != s or any(len(row) != s for row in self.a):
            raise InputError(f"a: expected a {s} x {s} matrix")
        a = tuple(tuple(_exact(v, f"a[{i}][{j}]") for j, v in enumerate(row)) for i, row in enumerate(self.a))
        for i, row in enumerate(a):
            if any(row[j] != 0 for j in range(i, s)):
                raise InputError(f"a: row {i} has entries on or above the diagonal: not an explicit method")
            if sum(row) != c[i]:
                raise InputError(f"c: c[{i}] = {c[i]} differs from the row sum of a, {sum(row)}")
        if sum(b) != 1:
            raise InputError(f"b: the weights sum to {sum(b)}, not 1: the method is not consistent")
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "c", c)

    @property
    def stages(self) -> int:
        return len(self.b)


class ExplicitRK(SingleStep):
    """The generic explicit Runge-Kutta step of `tableau` in sigma (noise-sigma form); subclasses set `tableau`,
    `name` and `order`. Cost: one call per stage, and one for a step into sigma = 0."""

    tableau: ButcherTableau
    symbolic_form = "noise-sigma"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "tableau" in cls.__dict__:
            cls.nfe_per_step = cls.tableau.stages
            cls.final_step_nfe = 1 if cls.tableau.stages > 1 else None

    def update_rule(self, h, ratios, ops):
        """(H b, c): the weights of k_1..k_s and their nodes, in units of H = h."""
        return [h * w for w in self.tableau.b], list(self.tableau.c)

    def stage_rules(self, h, ops):
        """Stage i = 2..s as (H a_i[:i-1], c[:i-1]): its increment from the earlier stages."""
        a, c = self.tableau.a, self.tableau.c
        return [([h * w for w in a[i][:i]], list(c[:i])) for i in range(1, self.tableau.stages)]

    def into_zero(self, denoiser, x, sigma):
        return combine(x, [-sigma], [ode_derivative(x, denoiser(x, sigma), sigma)])
