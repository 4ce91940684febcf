"""Property: the solver loop refuses every denoiser output of the wrong shape, and never a right one (issue:
reliability, sdm_verify.solvers.base.Solver.__call__ and harness.nfe.CountedDenoiser).

x has a random shape (1 to 4 dimensions, sizes 1 to 4) and dtype (float32 / float64). A denoiser that answers one
of its first calls with a tensor of another shape (random, or a broadcastable variant of x's shape: a dimension
set to 1, a leading dimension dropped or added, a 0-dim scalar) must raise DenoiserOutputError naming the
denoiser, the solver and the step, whether it is passed bare or wrapped in count_nfe. A denoiser that always
answers with x's shape (in either float dtype) never raises, and the solver returns x's shape.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdm_verify import solvers
from sdm_verify.errors import DenoiserOutputError
from sdm_verify.harness.nfe import count_nfe

SOLVERS = ["euler", "heun", "rk4", "ddim", "dpm_solver_2", "dpmpp_2s", "dpmpp_2m", "dpmpp_3m", "unipc", "ipndm",
           "ipndm_v", "deis_tab2", "sdm", "sdm_dpmpp"]
GRIDS = [[10.0, 3.0, 1.0, 0.3], [5.0, 1.0, 0.2, 0.0]]  # 3 steps: every solver calls the denoiser >= 3 times
DTYPES = [torch.float32, torch.float64]

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


@st.composite
def wrong_shapes(draw, shape):
    """A shape different from `shape`: random (0 to 4 dims), or one that broadcasts against it."""
    variants = [tuple(1 if j == i else n for j, n in enumerate(shape)) for i in range(len(shape))]
    variants += [shape[1:], (1, *shape), (), tuple(n + 1 for n in shape)]
    candidates = st.one_of(st.sampled_from(variants), st.lists(st.integers(1, 4), max_size=4).map(tuple))
    return draw(candidates.filter(lambda s: s != shape))


def exact(y, sigma):
    return y / (1.0 + sigma * sigma)


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(data=st.data(), shape=shapes, dtype=st.sampled_from(DTYPES), name=st.sampled_from(SOLVERS),
       grid=st.sampled_from(GRIDS), bad_call=st.integers(1, 3), counted=st.booleans())
def test_a_wrong_output_shape_is_always_refused(data, shape, dtype, name, grid, bad_call, counted):
    wrong = data.draw(wrong_shapes(shape), label="wrong shape")
    calls = [0]

    def denoiser(y, sigma):
        calls[0] += 1
        out = exact(y, sigma)
        return torch.full(wrong, 0.5, dtype=out.dtype) if calls[0] == bad_call else out

    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(len(shape)))
    with pytest.raises(DenoiserOutputError) as info:
        solvers.get(name)(count_nfe(denoiser) if counted else denoiser, x * 5.0, grid)
    message = str(info.value)
    assert message.startswith("denoiser:") and f"solver {name!r}" in message and "step" in message, message
    assert calls[0] == bad_call  # refused at the bad call itself, nothing computed with it
    assert "\n" not in message


@PROPERTY
@given(shape=shapes, dtype=st.sampled_from(DTYPES), out_dtype=st.sampled_from(DTYPES),
       name=st.sampled_from(SOLVERS), grid=st.sampled_from(GRIDS), counted=st.booleans())
def test_a_right_output_shape_is_never_refused(shape, dtype, out_dtype, name, grid, counted):
    def denoiser(y, sigma):
        assert y.shape == shape
        return exact(y, sigma).to(out_dtype)  # another float dtype is accepted (the arithmetic promotes)

    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(len(shape))) * 5.0
    out = solvers.get(name)(count_nfe(denoiser) if counted else denoiser, x, grid)
    assert out.shape == x.shape and out.is_floating_point()
    if out_dtype == dtype:
        assert out.dtype == dtype
    assert bool(torch.isfinite(out).all())


@PROPERTY
@given(shape=shapes, dtype=st.sampled_from([torch.int64, torch.int32, torch.bool, torch.complex64]),
       name=st.sampled_from(SOLVERS))
def test_a_non_floating_output_is_refused(shape, dtype, name):
    x = torch.ones(shape, dtype=torch.float64)
    with pytest.raises(DenoiserOutputError, match=r"^denoiser: .*dtype"):
        solvers.get(name)(lambda y, s: torch.zeros(y.shape, dtype=dtype), x, GRIDS[0])
