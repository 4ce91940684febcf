"""Shared test configuration.

The oracle's tensors are tiny (batches of tens of points, d <= 8): torch's intra-op threads only add overhead there
(one denoiser call measured 0.3 ms on 1 thread, 8 ms on 2 threads of a loaded 2-core machine), so tests run
single-threaded.
"""

import torch

torch.set_num_threads(1)

# CI (CI=true) runs hypothesis with fixed examples, so a run's verdict never depends on the random seed; local runs
# keep exploring new examples.
import os  # noqa: E402

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# numpy/scipy BLAS threads compete on a loaded 2-core machine (numpy-heavy tests measured ~10x slower): one thread.
from threadpoolctl import threadpool_limits  # noqa: E402

threadpool_limits(limits=1, user_api="blas")


import pytest  # noqa: E402


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """The bad-input tests' probe (tests/_bad_inputs.py): scratch dir, counting denoiser, forbid(), cli()."""
    from _bad_inputs import Probe

    return Probe(tmp_path, monkeypatch)
