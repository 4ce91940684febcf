"""Bad inputs to the harness's public entry point `measure_order` (sdm_verify.harness.convergence): each refused on
one line naming the argument, before any solver run (run_cells and measure_run are forbidden in every row)."""

from __future__ import annotations

import math

from _bad_inputs import Bad, check, parametrize

from sdm_verify import measure_order
from sdm_verify.errors import InputError


def _forbid_runs(p):
    p.forbid("sdm_verify.harness.convergence.run_cells")
    p.forbid("sdm_verify.harness.convergence.measure_run")


def row(id, names, *args, **kwargs):
    """A measure_order(*args, **kwargs) row; defaults: solver euler on gmm-8d, ns (8, 16, 32)."""
    args = args or ("euler", "gmm-8d")
    kwargs.setdefault("ns", (8, 16, 32))
    return Bad(f"measure_order-{id}", lambda p: measure_order(*args, **kwargs), InputError, names, setup=_forbid_runs)


CASES = [
    row("solver-unknown", ("solver", "nosuch", "available"), "nosuch", "gmm-8d"),
    row("solver-not-callable", ("solver", "int"), 3, "gmm-8d"),
    row("solver-none", ("solver", "None"), None, "gmm-8d"),
    row("target-unknown", ("target", "gmm-99d"), "euler", "gmm-99d"),
    row("target-array", ("target", "ndarray"), "euler", __import__("numpy").zeros(3)),
    row("target-none", ("target",), "euler", None),
    row("process-unknown", ("process", "vq"), process="vq"),
    row("process-not-str", ("process",), process=1),
    row("schedule-unknown", ("schedule", "karras"), schedule="karras"),
    row("ns-two", ("ns", "at least 3"), ns=(8, 16)),
    row("ns-zero", ("ns", "0"), ns=(0, 8, 16)),
    row("ns-negative", ("ns", "-8"), ns=(-8, 8, 16)),
    row("ns-float", ("ns", "8.5"), ns=(8.5, 16, 32)),
    row("ns-bool", ("ns", "True"), ns=(True, 16, 32)),
    row("ns-decreasing", ("ns", "increasing"), ns=(32, 16, 8)),
    row("ns-repeated", ("ns", "increasing"), ns=(8, 8, 16)),
    row("ns-string", ("ns",), ns="8 16 32"),
    row("ns-int", ("ns",), ns=32),
    row("sigma-min-zero", ("sigma_min", "> 0"), sigma_min=0.0),
    row("sigma-min-nan", ("sigma_min", "finite"), sigma_min=math.nan),
    row("sigma-max-inf", ("sigma_max", "finite"), sigma_max=math.inf),
    row("sigma-min-above-max", ("sigma_min", "sigma_max"), sigma_min=90.0, sigma_max=80.0),
    row("sigma-max-string", ("sigma_max",), sigma_max="80"),
    row("store-path-string", ("store", "ResultStore"), store="results.sqlite"),
    row("solver-params-list", ("solver_params",), solver_params=[1]),
    row("solver-params-for-callable", ("solver_params",), lambda d, x, s: x, "gmm-8d", solver_params={"r": 1}),
    row("schedule-params-string", ("schedule_params",), schedule_params="rho=7"),
    row("claimed-nan", ("claimed", "finite"), claimed=math.nan),
    row("claimed-negative", ("claimed", "> 0"), claimed=-1),
    row("claimed-string", ("claimed",), claimed="2"),
    row("progress-string", ("progress",), progress="yes"),
    row("fit-keyword-typo", ("floor_factr", "fit keywords"), floor_factr=10),
]


@parametrize(CASES)
def test_refused(case, probe):
    check(case, probe)


def test_valid_neighbour_runs():
    """The rows' defaults are a valid call: the refusals above come from the one bad argument each."""
    assert measure_order("euler", "gmm-8d", ns=(8, 16, 32)).order is not None
