"""The harness on the committed digits model (docs/real-models.md §4), float64 on CPU."""

import pytest
import torch

from sdm_verify.models import load_denoiser
from sdm_verify.models.digits import digits_checkpoint
from sdm_verify.real.harness import RealHarness, RealSettings, start_points

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def model():
    return load_denoiser(digits_checkpoint(), dtype=torch.float64)


@pytest.fixture(scope="module")
def measured(model):
    h = RealHarness(model, RealSettings(seeds=8, rtol=1e-7, batch=8), progress=False)
    return h, {c.solver: c for c in h.run([("euler", "edm"), ("heun", "edm")], [8, 16, 32, 64])}


def test_euler_and_heun_orders_on_the_digits_model(measured):
    _, cases = measured
    # the acceptance tolerance 0.25 (the real-model verdict): a trained field is smooth only approximately;
    # fitted on the median trajectory's error (see sdm_verify.real.harness.case_from_rows)
    assert cases["euler"].fit.ok and cases["euler"].fit.order == pytest.approx(1.0, abs=0.25)
    assert cases["heun"].fit.ok and cases["heun"].fit.order == pytest.approx(2.0, abs=0.25)


def test_reference_estimate_is_below_the_errors_it_judges(measured):
    h, cases = measured
    smallest = min(min(c.median_errors + c.errors) for c in cases.values())
    # the orders above are fitted only on errors 100x above the floor; the estimate is the coarser (1e-7) run's
    # error, the kept reference is ~100x better
    assert h.reference().estimate * 100 < smallest


def test_model_samples_beat_the_gaussian_fit():
    from sdm_verify import schedules, solvers
    from sdm_verify.real import quality

    model = load_denoiser(digits_checkpoint(), dtype=torch.float32)
    x = start_points((1, 8, 8), range(20_000, 20_256), 80.0).float()
    samples = solvers.get("heun")(model, x, schedules.get("edm")(10, 0.002, 80.0, zero=True)).double()
    ours = quality.sample_quality(samples, reference="train", n_boot=100)
    fit = quality.sample_quality(quality.gaussian_fit_samples(256, seed=0), reference="train", n_boot=100)
    # the classifier-feature distances separate the model from the Gaussian baseline: disjoint 95% intervals
    assert ours["fd_feat"]["hi"] < fit["fd_feat"]["lo"]
    assert ours["kid"]["hi"] < fit["kid"]["lo"]
    assert ours["confidence"]["lo"] > fit["confidence"]["hi"]


def test_float32_runs_keep_a_float64_reference_model():
    model32 = load_denoiser(digits_checkpoint(), dtype=torch.float32)
    h = RealHarness(model32, RealSettings(seeds=2, dtype="float32"), progress=False)
    x = start_points((1, 8, 8), range(2), 1.0)
    ref64 = load_denoiser(digits_checkpoint(), dtype=torch.float64)(x, 1.0)
    # the reference, decisions and floor evaluate a float64 copy: bitwise the float64 model, the measured model
    # stays float32 (its output differs at float32 rounding, ~1e-7, not 0)
    assert torch.equal(h._denoiser(torch.float64)(x, 1.0), ref64)
    assert h.model.dtype == torch.float32
    diff = float((h._denoiser()(x, 1.0).double() - ref64).abs().max())
    assert 0 < diff < 1e-4
