"""GPU checks of the real-model harness (marker `gpu`: excluded from the default run; needs CUDA)."""

import pytest
import torch
from _real_fixtures import MixtureModel  # noqa: I001

from sdm_verify.harness.targets import get
from sdm_verify.real.distributed import auto_batch, exact_precision, select_device
from sdm_verify.real.harness import RealHarness, RealSettings

pytestmark = [pytest.mark.gpu, pytest.mark.real,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_tf32_is_switched_off():
    flags = exact_precision()
    assert flags["cuda_matmul_tf32"] is False and flags["cudnn_tf32"] is False


def test_gpu_measurements_match_cpu():
    model = MixtureModel(get("gmm-8d"), (2, 2, 2))
    pairs, ns = [("heun", "edm")], [16, 32, 64]
    cpu = RealHarness(model, RealSettings(seeds=8, rtol=1e-8), progress=False).run(pairs, ns)
    gpu = RealHarness(model, RealSettings(seeds=8, rtol=1e-8), device=select_device("cuda"), progress=False)
    got = gpu.run(pairs, ns)
    for a, b in zip(cpu, got, strict=True):
        # float64 on both devices: the same operations up to reduction order (~1e-15 relative per call)
        assert b.errors == pytest.approx(a.errors, rel=1e-9)


def test_auto_batch_fits_memory():
    model = MixtureModel(get("gmm-8d"), (2, 2, 2))
    b = auto_batch(model, select_device("cuda"), torch.float64)
    assert 1 <= b <= 1024
