"""Local truncation error of one solver step, by Taylor/phi-function expansion in the step size (sympy).

A step is written as a linear combination of values of the denoiser D (or of the noise prediction
eps = (x - D)/sigma) at nodes along the exact solution and compared with the exact variation-of-constants
solution (Lu et al. 2022, DPM-Solver Eq. (3.4), DPM-Solver++ Eq. (9); Hochbruck & Ostermann 2010, Acta
Numerica, Sec. 2). Canonical (EDM) variables, lambda = -log sigma, one step sigma_s -> sigma_t. `h` is the
public positive Symbol `analytic.symbolic.h`; weights may depend on h and on other symbols (step ratios r0,
r1, ..., see `ratio_symbols`); nodes c_j must not depend on h. d_k = d^k D/d lambda^k and
e_k = d^k eps/d(var)^k are derivatives at the current point (not Taylor coefficients).

form="data-lambda"  (DDIM, DPM-Solver++, UniPC with data prediction), h = lambda_t - lambda_s:
    update  x_t = (sigma_t/sigma_s) x_s + sum_j w_j D(lambda_s + c_j h)
    exact   x_t = (sigma_t/sigma_s) x_s + sum_k d_k h^(k+1) phi_(k+1)(-h)
form="noise-lambda" (DPM-Solver, noise prediction), h = lambda_t - lambda_s, e_k taken in lambda:
    update  x_t = x_s - sigma_s sum_j w_j eps(lambda_s + c_j h)
    exact   x_t = x_s - sigma_s sum_k e_k int_0^h e^(-tau) tau^k/k! dtau
    (from dx/dsigma = eps with sigma = sigma_s e^(-tau)); the error is reported in units of sigma_s, i.e.
    series = (update - exact)/sigma_s.
form="noise-sigma"  (quadrature of dx/dsigma = eps: Euler, Adams-Bashforth / DEIS rhoAB, iPNDM), e_k taken in
    sigma; here h stands for H = sigma_t - sigma_s (negative in practice; only used symbolically):
    update  x_t = x_s + sum_j w_j eps(sigma_s + c_j H)
    exact   x_t = x_s + sum_k e_k H^(k+1)/(k+1)!

phi_0(z) = e^z, phi_(k+1)(z) = (phi_k(z) - 1/k!)/z, i.e. phi_k(z) = sum_j z^j/(j+k)!.
Nodes: c = 0 the current point, c = -r0 the previous point (r0 = previous step / current step, in the form's
variable), c = -(r0 + r1) the one before, 0 < c < 1 a stage, c = 1 the target point.

`local_error` returns the series of (update - exact) in h up to h^max_power, the x_s terms cancelled exactly;
its lowest power h^(p+1) gives the local order p+1 and the global order p, its coefficient the error constant
in the derivative symbols d0, d1, ... (data) or e0, e1, ... (noise), see `derivative_symbols`.

Scope: values at the nodes are taken on the exact solution (Taylor expansion of D, or eps, in the form's
variable around the current point): the standard linear-multistep / exact-history analysis. For single-step
methods whose stages are evaluated at approximate points it gives the order conditions of the linear
(quadrature) part only: exact for order <= 2, it may overstate higher orders (the coupling conditions of
exponential Runge-Kutta methods, Hochbruck & Ostermann 2005, are not covered).

Python floats in weights or nodes (e.g. `0.5 * h` in a solver's coefficient code) are read as the rational
p/q, q <= 10^6, within 4 ulp of them (1/3 computed in floating point means 1/3), otherwise as the exact value
of the binary float. Write constants as integer ratios (h / 3) so as not to rely on this.

`SYMPY_OPS` is the math namespace (exp, expm1, log, sqrt) with sympy functions, expm1(z) = exp(z) - 1, so
that a solver's coefficient function written generically, `update_rule(h, ratios, ops) -> (weights, nodes)`,
can be evaluated symbolically; `rule_error(update_rule, form)` does exactly that.

Coefficients are exact but not factored: `LocalError.leading_factored()` is the form to show. Expansions of a
rule are cached when the caller names its code: `rule_error(..., fingerprint=code_fingerprint(rule))`, or any
result through `cached(fingerprint, compute)`: in process and on disk ($SDM_VERIFY_CACHE/symbolic, default
~/.cache/sdm-verify/symbolic; SDM_VERIFY_CACHE=off for none), keyed by the fingerprint, the sympy version and
this module's source.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace

import sympy
from sympy.polys.constructor import construct_domain

from .symbolic_cache import CACHE_ENV, cache_dir, cached, clear_memo, code_fingerprint, decode_expr, encode_expr

__all__ = [
    "h",
    "FORMS",
    "SYMPY_OPS",
    "phi",
    "derivative_symbols",
    "ratio_symbols",
    "LocalError",
    "local_error",
    "rule_error",
    "CACHE_ENV",
    "cache_dir",
    "cached",
    "clear_memo",
    "code_fingerprint",
    "encode_expr",
    "decode_expr",
]

#: The step size: h = lambda_t - lambda_s for the *-lambda forms, H = sigma_t - sigma_s for "noise-sigma".
h = sympy.Symbol("h", positive=True)

FORMS = ("data-lambda", "noise-lambda", "noise-sigma")

#: sympy versions of the math functions a solver's `update_rule(h, ratios, ops)` may use.
SYMPY_OPS = SimpleNamespace(
    exp=sympy.exp,
    expm1=lambda z: sympy.exp(z) - 1,
    log=sympy.log,
    sqrt=sympy.sqrt,
)


def phi(k: int, z) -> sympy.Expr:
    """phi_k(z) = (e^z - sum_{j<k} z^j/j!) / z^k: closed form of phi_(k+1) = (phi_k - 1/k!)/z, phi_0 = e^z."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k: must be an integer >= 0, got {k!r}")
    z = sympy.sympify(z)
    return (sympy.exp(z) - sum(z**j / sympy.factorial(j) for j in range(k))) / z**k


def derivative_symbols(form: str, n: int) -> tuple[sympy.Symbol, ...]:
    """The first n derivative symbols of a form: d0, d1, ... (data-lambda) or e0, e1, ... (noise forms)."""
    _check_form(form)
    prefix = "d" if form == "data-lambda" else "e"
    return tuple(sympy.Symbol(f"{prefix}{k}") for k in range(n))


def ratio_symbols(n: int) -> tuple[sympy.Symbol, ...]:
    """Positive step-ratio symbols r0, ..., r_(n-1) (r_j = size of the step j+1 back / current step)."""
    return tuple(sympy.Symbol(f"r{j}", positive=True) for j in range(n))


@dataclass(frozen=True)
class LocalError:
    """Leading term of update - exact = leading * h^local_order + O(h^(local_order+1)).

    The coefficients are exact but not factored (factoring high-order rules costs more than the expansion):
    `leading_factored()` is the form to display."""

    local_order: int  # p + 1: the power of h in the leading term
    global_order: int  # p = local_order - 1, or 0 when the update is inconsistent
    leading: sympy.Expr  # coefficient of h^local_order, linear in the derivative symbols
    series: sympy.Expr  # update - exact, truncated after h^max_power
    #: ((derivative symbol, its coefficient in `leading`), ...), by derivative order
    coefficients: tuple[tuple[sympy.Symbol, sympy.Expr], ...] = ()

    def leading_factored(self) -> sympy.Expr:
        """`leading` with each derivative's coefficient factored (sympy.factor): the form to show a reader."""
        if not self.coefficients:
            return self.leading
        return sympy.Add(*(sympy.factor(c) * s for s, c in self.coefficients))


def local_error(weights, nodes, form: str = "data-lambda", max_power: int = 7) -> LocalError:
    """Expand one step (weights w_j at nodes c_j, in the normalized `form`) against the exact solution.

    Raises ValueError("max_power: ...") when no error term appears up to h^max_power.
    """
    _check_form(form)
    if isinstance(max_power, bool) or not isinstance(max_power, int) or max_power < 1:
        raise ValueError(f"max_power: must be an integer >= 1, got {max_power!r}")
    ws = _as_exprs(weights, "weights")
    cs = _as_exprs(nodes, "nodes")
    if len(cs) != len(ws):
        raise ValueError(f"nodes: expected {len(ws)} entries to match weights, got {len(cs)}")
    for j, c in enumerate(cs):
        if h in c.free_symbols:
            raise ValueError(f"nodes: entry {j} depends on h ({c}); nodes are multiples of h")
    prefix = derivative_symbols(form, 1)[0].name[0]
    used = set().union(*(e.free_symbols for e in ws + cs))
    reserved = {s for s in used if re.fullmatch(prefix + r"\d+", s.name)}
    if reserved:
        raise ValueError(f"weights: use of the reserved derivative symbols {sorted(map(str, reserved))}")

    # Laurent coefficients of the weights, then exact arithmetic in one coefficient domain (rational functions
    # of the ratios, QQ(r0, r1, ...), where possible): cheap, and with an exact zero test.
    laurent = [_laurent(w, max_power, j) for j, w in enumerate(ws)]
    values = [a for terms in laurent for a in terms.values()]
    K, elems = construct_domain(values + cs, field=True)
    it = iter(elems)
    laurent = [{m: next(it) for m in terms} for terms in laurent]
    nodes_k = list(it)

    # coef[power][k]: coefficient of d_k h^power (or e_k h^power) in update - exact.
    coef: dict[int, dict[int, object]] = defaultdict(lambda: defaultdict(lambda: K.zero))
    for terms, c in zip(laurent, nodes_k, strict=True):
        k_max = max_power - min(terms, default=max_power)
        for m, a in terms.items():
            for k in range(max(k_max, 0) + 1):
                if m + k <= max_power:
                    coef[m + k][k] += a * (c**k if k else K.one) * K.from_sympy(1 / sympy.factorial(k))
    for k in range(max_power):
        for power, b in _exact_terms(form, k, max_power).items():
            coef[power][k] -= K.from_sympy(b)

    # noise-lambda: (update - exact)/sigma_s = -(sum_j w_j eps_j - exact integral)
    sign = -1 if form == "noise-lambda" else 1
    sym = derivative_symbols(form, 1 + max(k for row in coef.values() for k in row))
    series = sympy.S.Zero
    leading_power, leading, coefficients = None, sympy.S.Zero, ()
    for power in sorted(coef):
        terms = []
        for k, value in sorted(coef[power].items()):
            value = _nonzero_or_none(K, value)
            if value is not None:
                terms.append((sym[k], sign * value))
        term = sympy.Add(*(c * s for s, c in terms))
        if term != 0:
            series += term * h**power
            if leading_power is None:
                leading_power, leading, coefficients = power, term, tuple(terms)
    if leading_power is None:
        raise ValueError(f"max_power: no error term up to h^{max_power}; raise max_power")
    return LocalError(
        local_order=leading_power,
        global_order=max(leading_power - 1, 0),
        leading=leading,
        series=series,
        coefficients=coefficients,
    )


def rule_error(update_rule, form: str, n_ratios: int = 3, max_power: int = 7, *,
               fingerprint: str | None = None) -> LocalError:
    """`local_error` of a solver's `update_rule(h, ratios, ops) -> (weights, nodes)`, with h, r0, r1, ...
    symbolic (n_ratios positive ratio symbols are passed; a rule uses the ones it needs).

    With `fingerprint` (a string naming the code the rule evaluates, e.g. `code_fingerprint(update_rule)`), the
    result is cached under it and the expansion parameters (see `cached`): the same rule is expanded once."""
    def compute() -> LocalError:
        weights, nodes = update_rule(h, list(ratio_symbols(n_ratios)), SYMPY_OPS)
        return local_error(weights, nodes, form=form, max_power=max_power)

    if fingerprint is None:
        return compute()
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ValueError(f"fingerprint: must be a non-empty string, got {fingerprint!r:.60}")
    _check_form(form)
    key = json.dumps(["rule_error", fingerprint, form, n_ratios, max_power])
    return cached(key, compute, encode=_encode_local_error, decode=_decode_local_error)


def _encode_local_error(err: LocalError) -> dict:
    return dict(local_order=err.local_order, global_order=err.global_order, leading=encode_expr(err.leading),
                series=encode_expr(err.series), coefficients=[[encode_expr(s), encode_expr(c)]
                                                              for s, c in err.coefficients])


def _decode_local_error(doc) -> LocalError:
    if not isinstance(doc, dict) or set(doc) != {"local_order", "global_order", "leading", "series", "coefficients"}:
        raise ValueError("not an encoded LocalError")
    if any(type(doc[k]) is not int for k in ("local_order", "global_order")):
        raise ValueError("orders: not integers")
    coefficients = tuple((decode_expr(s), decode_expr(c)) for s, c in doc["coefficients"])
    if any(not isinstance(s, sympy.Symbol) for s, _ in coefficients):
        raise ValueError("coefficients: not by symbol")
    return LocalError(doc["local_order"], doc["global_order"], decode_expr(doc["leading"]),
                      decode_expr(doc["series"]), coefficients)


# ------------------------------------------------------------------------------------------------------------


def _check_form(form) -> None:
    if form not in FORMS:
        raise ValueError(f"form: expected one of {FORMS}, got {form!r}")


def _rationalize_float(x: sympy.Float) -> sympy.Rational:
    exact = sympy.Rational(float(x))
    near = exact.limit_denominator(10**6)
    return near if abs(near - exact) <= 4 * 2.0**-52 * abs(exact) else exact


def _as_exprs(values, name: str) -> list[sympy.Expr]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"{name}: expected a sequence, got {type(values).__name__}")
    if len(values) == 0:
        raise ValueError(f"{name}: must not be empty")
    out = []
    for j, v in enumerate(values):
        try:
            e = sympy.sympify(v)
        except (sympy.SympifyError, TypeError) as exc:
            raise ValueError(f"{name}: entry {j} is not a sympy expression ({exc})") from None
        e = e.replace(lambda a: a.is_Float, _rationalize_float)
        if e.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
            raise ValueError(f"{name}: entry {j} is not finite ({e})")
        out.append(e)
    return out


@lru_cache(maxsize=512)
def _h_series(expr: sympy.Expr, max_power: int) -> tuple[tuple[int, sympy.Expr], ...]:
    """Laurent coefficients of expr in h up to h^max_power, as ((power, coefficient), ...)."""
    fast = _exp_monomial(expr)
    if fast is not None:
        n, slope, const = fast  # expr = const h^n exp(slope h)
        powers = range(max_power - n + 1) if slope != 0 else range(min(0, max_power - n) + 1)
        return tuple((n + j, const * slope**j / sympy.factorial(j)) for j in powers)
    if expr.is_polynomial(h):
        s = sympy.expand(expr)
    else:
        s = sympy.series(expr, h, 0, max_power + 1)
        order = s.getO()
        if order is not None and sympy.degree(order.expr, h) <= max_power:  # pragma: no cover - sympy safety
            raise ValueError(f"weights: sympy returned too short a series for {expr}")
        s = sympy.expand(s.removeO())
    out = []
    for key, value in sympy.collect(s, h, evaluate=False).items():
        power = _power_of_h(key)
        if power is None or h in value.free_symbols:
            raise ValueError(f"weights: {expr} has no Laurent expansion in integer powers of h at 0")
        if power <= max_power:
            out.append((int(power), value))
    return tuple(out)


def _exp_monomial(expr: sympy.Expr) -> tuple[int, sympy.Expr, sympy.Expr] | None:
    """(n, a, c) with expr = c h^n exp(a h), a and c free of h; None for any other shape."""
    n, slope, const = 0, sympy.S.Zero, sympy.S.One
    for factor in sympy.Mul.make_args(expr):
        if h not in factor.free_symbols:
            const *= factor
        elif factor == h:
            n += 1
        elif factor.is_Pow and factor.base == h and factor.exp.is_Integer:
            n += int(factor.exp)
        elif isinstance(factor, sympy.exp) and factor.args[0].is_polynomial(h):
            poly = sympy.Poly(factor.args[0], h)
            if poly.degree() > 1:
                return None
            slope += poly.coeff_monomial(h)
            const *= sympy.exp(poly.coeff_monomial(1))
        else:
            return None
    return n, slope, const


def _power_of_h(key: sympy.Expr) -> int | None:
    """n for a key h^n of sympy.collect (1, h, h**n with integer n), None otherwise."""
    if key == 1:
        return 0
    if key == h:
        return 1
    if key.is_Pow and key.base == h and key.exp.is_Integer:
        return int(key.exp)
    return None


def _split(expr: sympy.Expr) -> list[tuple[sympy.Expr, sympy.Expr]]:
    """expr = sum of free * hpart with free independent of h; distributes products over sums, nothing else."""
    if h not in expr.free_symbols:
        return [(expr, sympy.S.One)]
    if expr.is_Add:
        return [pair for arg in expr.args for pair in _split(arg)]
    if expr.is_Mul:
        out = [(sympy.S.One, sympy.S.One)]
        for factor in expr.args:
            out = [(f1 * f2, p1 * p2) for f1, p1 in out for f2, p2 in _split(factor)]
        return out
    return [(sympy.S.One, expr)]


def _laurent(w: sympy.Expr, max_power: int, j: int) -> dict[int, sympy.Expr]:
    """Laurent coefficients of a weight: h-free factors split off, each h-part expanded once (cached)."""
    grouped: dict[sympy.Expr, sympy.Expr] = defaultdict(lambda: sympy.S.Zero)
    for free, hpart in _split(w):
        grouped[hpart] += free
    out: dict[int, sympy.Expr] = defaultdict(lambda: sympy.S.Zero)
    try:
        for hpart, free in grouped.items():
            for power, value in _h_series(hpart, max_power):
                out[power] += free * value
    except ValueError as exc:
        raise ValueError(f"weights: entry {j}: {str(exc).removeprefix('weights: ')}") from None
    except (NotImplementedError, sympy.PoleError) as exc:
        raise ValueError(f"weights: entry {j} cannot be expanded in h ({exc})") from None
    return dict(out)


def _exact_terms(form: str, k: int, max_power: int) -> dict[int, sympy.Expr]:
    """Coefficient of the k-th derivative in the exact increment, by power of h (closed-form series)."""
    if form == "noise-sigma":  # H^(k+1)/(k+1)!
        return {k + 1: 1 / sympy.factorial(k + 1)} if k + 1 <= max_power else {}
    out = {}
    for j in range(max_power - k):
        if form == "data-lambda":  # h^(k+1) phi_(k+1)(-h) = sum_j (-1)^j h^(j+k+1)/(j+k+1)!
            out[j + k + 1] = sympy.Integer(-1) ** j / sympy.factorial(j + k + 1)
        else:  # int_0^h e^(-tau) tau^k/k! dtau = sum_j (-1)^j h^(j+k+1) / (j! k! (j+k+1))
            out[j + k + 1] = sympy.Integer(-1) ** j / (sympy.factorial(j) * sympy.factorial(k) * (j + k + 1))
    return out


def _nonzero_or_none(K, value) -> sympy.Expr | None:
    """The coefficient as a sympy expression, or None when it is zero (exact in QQ(...); simplify in EX)."""
    if not value:
        return None
    expr = K.to_sympy(value)
    if K.is_EX and sympy.simplify(expr) == 0:
        return None
    return expr
