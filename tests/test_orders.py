"""sdm_verify.harness.orders: local slopes, asymptotic window and order fit on synthetic errors with known order.

Every expected value is computed here from the synthetic model e(N) = C N^-p (1 + a/N) (+ floor, + noise), whose
asymptotic order is p by construction; nothing is taken from the code under test.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from sdm_verify.harness.orders import OrderFit, fit_order, local_slopes

LN2 = math.log(2.0)
# An additive floor f with e > 100 f changes each log e by at most log(1 + 1/99); a local slope is a difference of
# two of them, divided by log 2.
FLOOR_SLOPE_SHIFT = math.log(1 + 1 / 99) / LN2


def model(ns, p, C=1.0, a=0.0, floor=0.0):
    ns = np.asarray(ns, dtype=np.float64)
    return C * ns**-p * (1 + a / ns) + floor


def drift(n0, n1, a):
    """|local slope - p| of C N^-p (1 + a/N) between n0 and n1: log((1 + a/n0) / (1 + a/n1)) / log(n1/n0)."""
    return abs(math.log((1 + a / n0) / (1 + a / n1)) / math.log(n1 / n0))


def test_local_slopes_exact_for_a_power_law_on_any_increasing_grid():
    ns = [3, 5, 8, 13, 21, 50]
    p = 1.7
    s = local_slopes(ns, model(ns, p, C=0.3))
    # log of a ratio of two correctly rounded powers: a few ulp of log e (~1e-16 * 10) over log(n1/n0) >= 0.4
    np.testing.assert_allclose(s, p, rtol=0, atol=1e-12)
    assert len(s) == len(ns) - 1


def test_pure_power_law_fits_exactly_on_the_whole_range():
    ns = 2 ** np.arange(1, 9)
    fit = fit_order(ns, model(ns, 3.0, C=7.0))
    assert fit.ok and fit.reason == ""
    assert fit.window == (0, len(ns) - 1)
    # least squares on exact log-linear data: rounding of the logs only
    assert abs(fit.order - 3.0) < 1e-10
    # equal slopes and zero residuals: the interval is the slope range widened by slope_tol/2 on each side
    assert fit.ci[0] == pytest.approx(2.95, abs=1e-9) and fit.ci[1] == pytest.approx(3.05, abs=1e-9)


def test_non_doubling_grid():
    ns = [10, 15, 23, 35, 53, 80]
    fit = fit_order(ns, model(ns, 0.75, C=2.0))
    # exact power law: rounding only
    assert fit.ok and abs(fit.order - 0.75) < 1e-10


def test_order_is_the_least_squares_slope_and_ci_contains_the_t_interval():
    rng = np.random.default_rng(0)
    ns = 2 ** np.arange(2, 12)
    e = model(ns, 2.0, C=3.0) * np.exp(0.02 * rng.standard_normal(len(ns)))
    fit = fit_order(ns, e, slope_tol=1.0)  # a wide tolerance: the window is the whole range
    assert fit.window == (0, len(ns) - 1)
    ref = stats.linregress(np.log(ns), -np.log(e))
    assert fit.order == pytest.approx(ref.slope, rel=1e-12)  # two implementations of the same formula
    half = stats.t.ppf(0.975, len(ns) - 2) * ref.stderr
    assert fit.ci[0] <= ref.slope - half * (1 - 1e-9) and fit.ci[1] >= ref.slope + half * (1 - 1e-9)


def test_sharp_pre_asymptotic_hump_is_excluded():
    # slope 3 from N=1 to N=16 (a decade and more), then exactly 2
    ns = 2 ** np.arange(0, 11)
    n0 = 16
    e = np.where(ns < n0, n0 / ns, 1.0) * ns**-2.0
    naive = -np.polyfit(np.log(ns), np.log(e), 1)[0]
    assert naive > 2.3  # what a fit over all points would claim (about 2.4): the test is meaningful
    fit = fit_order(ns, e)
    assert fit.window == (4, 10)  # N = 16 .. 1024: every slope there is exactly 2
    assert abs(fit.order - 2.0) < 1e-10  # exact power law on the window: rounding only
    assert fit.ci[0] <= 2.0 <= fit.ci[1]


def test_smooth_pre_asymptotic_hump_is_excluded():
    # e = N^-2 (1 + 64/N): slope ~3 for N << 64, 2 for N >> 64
    ns = 2 ** np.arange(1, 15)
    a = 64.0
    fit = fit_order(ns, model(ns, 2.0, a=a))
    naive = -np.polyfit(np.log(ns), np.log(model(ns, 2.0, a=a)), 1)[0]
    assert naive > 2.3
    assert fit.window[1] == len(ns) - 1
    # the fit is a positive-weighted mean of window slopes, all within slope_tol of the finest one, whose own
    # deviation from 2 is drift(n_{-2}, n_{-1}); so |order - 2| <= slope_tol + that
    tol = 0.1 + drift(ns[-2], ns[-1], a)
    assert abs(fit.order - 2.0) <= tol
    # window slopes must all be within slope_tol of each other, hence of 2 + drift of the finest
    assert all(s < 2.0 + tol for s in fit.window_slopes())
    assert fit.ci[0] <= 2.0 <= fit.ci[1]


def test_drift_inside_the_window_is_bracketed():
    # window N=16..64 with slopes 2.18, 2.10 (e = N^-2 (1 + 4.8/N)): the finest slope is 0.097 above the order,
    # more than slope_tol/2; the interval must still contain 2 (the drift bracket around the finest slope)
    ns = [8, 16, 32, 64]
    a = 4.8
    fit = fit_order(ns, model(ns, 2.0, a=a))
    assert fit.window == (1, 3)
    assert min(fit.window_slopes()) - 0.05 > 2.0  # the slope range alone would miss it
    assert fit.ci[0] <= 2.0 <= fit.ci[1]


def test_points_at_the_floor_are_excluded():
    ns = 2 ** np.arange(1, 13)
    f = 1e-9
    e = model(ns, 2.0, floor=f)
    last = int(np.flatnonzero(e > 100 * f)[-1])  # N = 2048: 2.4e-7 > 1e-7; N = 4096: 6e-8 + 1e-9 is not
    fit = fit_order(ns, e, floor=f)
    assert fit.window[1] == last
    assert abs(fit.order - 2.0) <= FLOOR_SLOPE_SHIFT  # a weighted mean of slopes each shifted <= that


def test_exact_zeros_allowed_below_a_floor():
    ns = 2 ** np.arange(1, 9)
    e = model(ns, 1.0)
    e[-2:] = 0.0
    fit = fit_order(ns, e, floor=1e-12)
    assert fit.ok and fit.window == (0, len(ns) - 3)
    assert math.isnan(fit.slopes[-1]) and math.isnan(fit.slopes[-2])
    json.dumps(fit.to_dict(), allow_nan=False)  # undefined slopes become None
    with pytest.raises(ValueError, match="^errors:"):
        fit_order(ns, e)  # floor=0: a zero error has no logarithm and no floor to explain it


def test_all_at_the_floor_gives_no_order_and_says_why():
    ns = 2 ** np.arange(1, 8)
    e = model(ns, 2.0, floor=1e-3)
    fit = fit_order(ns, e, floor=1e-3)  # 100 x floor = 0.1: only N=2 is above it
    assert fit.order is None and fit.ci is None and fit.window is None and not fit.ok
    assert fit.reason.startswith("errors within 100x of the reference floor from N=4")
    assert str(fit).startswith("no order: ")


def test_unsettled_slopes_give_no_order_and_list_them():
    ns = [8, 16, 32, 64]
    slopes = [0.83, 1.42, 1.91]
    e = [1.0]
    for s in slopes:
        e.append(e[-1] * 2.0**-s)
    fit = fit_order(ns, e)
    assert fit.order is None and not fit.ok
    assert fit.reason == "local slopes do not settle: 0.83, 1.42, 1.91"
    np.testing.assert_allclose(fit.slopes, slopes, atol=1e-12)  # exact construction, rounding only


def test_min_slopes_is_respected():
    ns = [8, 16, 32, 64, 128]
    e = [1.0, 1 / 4, 1 / 16, 1 / 32, 1 / 128]  # slopes 2, 2, 1, 2: only a 2-slope run at the coarse end
    fit = fit_order(ns, e, min_slopes=2)
    assert fit.window == (0, 2) and abs(fit.order - 2.0) < 1e-12
    fit3 = fit_order(ns, e, min_slopes=3)
    assert not fit3.ok


def test_str_and_to_dict():
    ns = 2 ** np.arange(6, 10)
    fit = fit_order(ns, model(ns, 2.0))
    assert re.fullmatch(r"order 2\.00 \[1\.95, 2\.05\] on N=64\.\.512 \(slopes 2\.00 2\.00 2\.00\)", str(fit))
    d = json.loads(json.dumps(fit.to_dict(), allow_nan=False))
    assert d["window"] == [0, 3] and d["ns"] == [64, 128, 256, 512] and d["ok"] is True
    assert isinstance(fit, OrderFit)


@pytest.mark.parametrize(
    "ns, errors, kwargs, arg",
    [
        ([1, 2], [1.0, 0.5], {}, "ns"),  # fewer than 3 points
        ([4, 2, 8], [1.0, 0.5, 0.2], {}, "ns"),  # not increasing
        ([2, 2, 4], [1.0, 0.5, 0.2], {}, "ns"),  # not strictly increasing
        ([0, 2, 4], [1.0, 0.5, 0.2], {}, "ns"),  # not positive
        ([1, 2.5, 4], [1.0, 0.5, 0.2], {}, "ns"),  # not integer
        ([[1, 2, 4]], [1.0, 0.5, 0.2], {}, "ns"),  # not 1-D
        (["a", "b", "c"], [1.0, 0.5, 0.2], {}, "ns"),
        ([1, 2, 4], [1.0, 0.5], {}, "errors"),  # length mismatch
        ([1, 2, 4], [1.0, float("nan"), 0.2], {}, "errors"),
        ([1, 2, 4], [1.0, 0.5, float("inf")], {}, "errors"),
        ([1, 2, 4], [1.0, -0.5, 0.2], {}, "errors"),
        ([1, 2, 4], [1.0, -0.5, 0.2], {"floor": 1.0}, "errors"),  # negative is never "below the floor"
        ([1, 2, 4], [1.0, 0.5, float("nan")], {"floor": 1.0}, "errors"),  # nor is nan
        ([1, 2, 4], [1.0, 0.5, 0.2], {"floor": -1.0}, "floor"),
        ([1, 2, 4], [1.0, 0.5, 0.2], {"floor_factor": 0.5}, "floor_factor"),
        ([1, 2, 4], [1.0, 0.5, 0.2], {"slope_tol": 0.0}, "slope_tol"),
        ([1, 2, 4], [1.0, 0.5, 0.2], {"slope_tol": float("nan")}, "slope_tol"),
        ([1, 2, 4], [1.0, 0.5, 0.2], {"min_slopes": 0}, "min_slopes"),
        ([1, 2, 4], [1.0, 0.5, 0.2], {"min_slopes": 3}, "ns"),  # 3 slopes need 4 points
    ],
)
def test_validation(ns, errors, kwargs, arg):
    with pytest.raises(ValueError, match=f"^{arg}:"):
        fit_order(ns, errors, **kwargs)


def test_local_slopes_validation():
    with pytest.raises(ValueError, match="^errors:"):
        local_slopes([1, 2, 4], [1.0, 0.5])
    with pytest.raises(ValueError, match="^ns:"):
        local_slopes([1, 1, 4], [1.0, 0.5, 0.1])


NS = 2 ** np.arange(2, 14)  # 4 .. 8192


@settings(max_examples=30, deadline=None)
@given(
    p=st.floats(0.5, 5.0),
    log_c=st.floats(-3.0, 3.0),
    a=st.floats(-2.0, 16.0),
    k=st.integers(6, len(NS) - 1),
    with_floor=st.booleans(),
)
def test_order_recovered_with_correction_and_floor(p, log_c, a, k, with_floor):
    C = 10.0**log_c
    g = model(NS, p, C=C, a=a)
    # a floor between the k-th and (k+1)-th clean errors: the last point above 100 x floor is k
    f = 0.0
    if with_floor and k < len(NS) - 1:
        f = math.sqrt(g[k] * g[k + 1]) / 99.0
    e = g + f
    last = int(np.flatnonzero(e > 100 * f)[-1])
    assert last == (k if f > 0 else len(NS) - 1)
    fit = fit_order(NS, e, floor=f)
    # The last three points are in the window: N_last >= 256, so the two finest slopes differ by at most
    # drift(64, 128, 16) - drift(128, 256, 16) = 0.07 plus FLOOR_SLOPE_SHIFT < 0.1.
    assert fit.ok and fit.window[1] == last and fit.window[1] - fit.window[0] >= 2
    # The order is a positive-weighted mean of window slopes, all within slope_tol of the finest one, which lies
    # within drift + floor shift of p.
    tol = 0.1 + drift(NS[last - 1], NS[last], a) + FLOOR_SLOPE_SHIFT
    assert abs(fit.order - p) <= tol


@settings(max_examples=30, deadline=None)
@given(
    p=st.floats(0.5, 5.0),
    log_c=st.floats(-3.0, 3.0),
    a=st.floats(-2.0, 16.0),
    u=st.lists(st.floats(-1.0, 1.0), min_size=len(NS), max_size=len(NS)),
)
def test_ci_covers_the_order_under_relative_noise(p, log_c, a, u):
    # multiplicative noise of relative size <= 1e-3; hypothesis may pick adversarial patterns (ramps, +-1 spikes)
    e = model(NS, p, C=10.0**log_c, a=a) * (1 + 1e-3 * np.asarray(u))
    fit = fit_order(NS, e)
    assert fit.ok and fit.window[1] == len(NS) - 1
    # Why it must cover: the noise moves a local slope by <= 2 * (-log(1 - 1e-3)) / log 2 = 0.0029 and the finest
    # slope's drift is <= drift(4096, 8192, 16) = 0.003, so the finest slope is within 0.006 of p, well inside
    # the +-slope_tol/2 = 0.05 the interval keeps around every window slope.
    assert fit.ci[0] <= p <= fit.ci[1]
    assert abs(fit.order - p) <= 0.1 + drift(NS[-2], NS[-1], a) + 2 * -math.log(1 - 1e-3) / LN2
