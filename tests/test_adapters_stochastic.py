"""The outside adapters as stochastic samplers: k-diffusion (eta != 0), diffusers (EulerAncestralDiscreteScheduler,
noise fed through its module's randn_tensor) and a plain callable declaring needs_noise = True.

Equivalences are against the registered samplers (written from the papers' formulas, not from these libraries),
fed the same pure GaussianNoise: the adapters key their draws (j, sigma, sigma_next) with j the running count of
draws, which equals the registered samplers' step index when there is one draw per step. The probe law
(harness.stochastic_law) must apply to each adapter (draws affine and keyed deterministically), and its exact law
must equal the registered twin's (an independent reading: each law is computed from its own sampler's runs).
"""

from __future__ import annotations

import pytest
import torch

import sdm_verify.solvers.ancestral  # noqa: F401  (registration, until the package imports the families)
import sdm_verify.solvers.dpmpp_sde  # noqa: F401
from analytic import Gaussian
from sdm_verify import schedules
from sdm_verify.adapters import spec
from sdm_verify.errors import InputError
from sdm_verify.harness.noise import GaussianNoise
from sdm_verify.harness.stochastic_law import StochasticGaussianMeter
from sdm_verify.solvers import get

F64 = torch.float64
TARGET = Gaussian([0.5, -1.0], [[1.0, 0.3], [0.3, 0.5]])
SMAX, SMIN = 20.0, 0.05


def _x(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SMAX * torch.randn(n, 2, generator=g, dtype=F64) + torch.tensor([0.5, -1.0], dtype=F64)


def _grid(n=10, zero=False):
    return schedules.edm(n, SMIN, SMAX, zero=zero).to(F64)


def _never(x, sigma):
    raise AssertionError("the denoiser must not be called")


def _kd(name, config=None):
    pytest.importorskip("torchsde")
    return spec.load(f"kdiffusion:{name}", config).solver


def _diffusers(name, config=None):
    pytest.importorskip("diffusers")
    return spec.load(f"diffusers:{name}", config).solver


def _run(sampler, grid, seed=3):
    x = _x()
    return sampler(TARGET.denoiser, x.clone(), grid, GaussianNoise(x, seed))


# ------------------------------------------------------------------------------------ declarations, eta = 0 path


def test_kdiffusion_default_eta_is_stochastic_and_eta0_stays_deterministic():
    s = _kd("sample_euler_ancestral")
    assert s.needs_noise is True and s.weak_order is None and s.strong_order is None and s.order is None
    assert s.claim_source == "k-diffusion states no order"
    assert any("eta = 1, s_noise = 1" in n for n in s.notes)
    det = _kd("sample_euler_ancestral", {"eta": 0})
    assert det.needs_noise is False and det.equivalent == "euler"
    x, grid = _x(), _grid()
    assert torch.allclose(det(TARGET.denoiser, x, grid), get("euler")(TARGET.denoiser, x, grid), rtol=1e-12,
                          atol=1e-12)


@pytest.mark.parametrize("name, config, message", [
    ("sample_heun", {"s_churn": 1.0}, "s_churn: sample_heun with s_churn=1.0 adds noise"),
    ("sample_euler", {"s_churn": 0.5}, "s_churn: sample_euler with s_churn=0.5 adds noise"),
    ("sample_euler_ancestral", {"eta": -1.0}, "--config: kdiffusion:sample_euler_ancestral: eta:"),
    ("sample_dpmpp_2m_sde", {"s_noise": 0.0}, "--config: kdiffusion:sample_dpmpp_2m_sde: s_noise:"),
])
def test_kdiffusion_refusals(name, config, message):
    with pytest.raises(InputError) as exc:
        _kd(name, config)
    assert message in str(exc.value)


# --------------------------------------------------------------------------------------- equal to the registered


@pytest.mark.parametrize("zero", [False, True])
def test_kdiffusion_euler_ancestral_equals_registered(zero):
    grid = _grid(zero=zero)
    got = _run(_kd("sample_euler_ancestral", {"eta": 1.0}), grid)
    want = _run(get("euler_ancestral", eta=1.0, s_noise=1.0), grid)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_kdiffusion_dpmpp_2m_sde_equals_registered_above_and_into_zero():
    for zero in (False, True):
        grid = _grid(zero=zero)
        got = _run(_kd("sample_dpmpp_2m_sde"), grid)
        want = _run(get("dpmpp_2m_sde", eta=1.0, s_noise=1.0, solver_type="midpoint"), grid)
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)
        grid_heun = _run(_kd("sample_dpmpp_2m_sde", {"solver_type": "heun", "eta": 0.5}), grid)
        want_heun = _run(get("dpmpp_2m_sde", eta=0.5, s_noise=1.0, solver_type="heun"), grid)
        torch.testing.assert_close(grid_heun, want_heun, rtol=1e-11, atol=1e-11)


def test_diffusers_euler_ancestral_equals_registered_in_canonical_variables():
    # the adapter keeps float64 through step's float32 cast (keep_float64), and imposes the float64 grid: the only
    # differences left are the order of float64 operations (x + d (sigma_down - sigma) vs the same in the registered
    # sampler, sigma_up from the squared form), so rounding, ~1e-15 relative per step: 1e-10 leaves a wide margin
    s = _diffusers("EulerAncestralDiscreteScheduler")
    assert s.needs_noise is True and s.order is None and any("randn_tensor" in n for n in s.notes)
    for zero in (False, True):
        grid = _grid(zero=zero)
        got = _run(s, grid)
        want = _run(get("euler_ancestral", eta=1.0, s_noise=1.0), grid)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    x = _x()  # the scheduler's module gets its own randn_tensor back
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as module
    from diffusers.utils.torch_utils import randn_tensor
    s(TARGET.denoiser, x, _grid(), GaussianNoise(x, 0))
    assert module.randn_tensor is randn_tensor


# --------------------------------------------------------------------------------------------- the probe law


def _law(sampler, grid):
    return StochasticGaussianMeter(TARGET, SMAX, SMIN).law(sampler, grid)


@pytest.mark.parametrize("load, twin", [
    (lambda: _kd("sample_euler_ancestral"), lambda: get("euler_ancestral", eta=1.0)),
    (lambda: _kd("sample_dpmpp_2m_sde"), lambda: get("dpmpp_2m_sde", eta=1.0)),
    (lambda: _kd("sample_dpm_2_ancestral"), None),
    (lambda: _kd("sample_dpmpp_2s_ancestral"), None),
    (lambda: _kd("sample_dpmpp_sde"), None),
    (lambda: _kd("sample_dpmpp_3m_sde"), None),
    (lambda: _diffusers("EulerAncestralDiscreteScheduler"), lambda: get("euler_ancestral", eta=1.0)),
])
def test_probe_law_applies_to_each_adapter(load, twin):
    grid = _grid(6)
    law = _law(load(), grid)
    assert law.residual < 1e-9 and law.draws >= 5
    if twin is not None:
        ref = _law(twin(), grid)
        torch.testing.assert_close(law.mean, ref.mean, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(law.covariance, ref.covariance, rtol=1e-9, atol=1e-10)


# ------------------------------------------------------------------------------------------ a missing source


@pytest.mark.parametrize("load", [lambda: _kd("sample_euler_ancestral"), lambda: _kd("sample_dpmpp_3m_sde"),
                                  lambda: _diffusers("EulerAncestralDiscreteScheduler")])
def test_missing_noise_is_refused_before_any_denoiser_call(load):
    s = load()
    with pytest.raises(InputError, match="noise"):
        s(_never, _x(), _grid())
    with pytest.raises(InputError, match="noise"):
        s(_never, _x(), _grid(), noise="not callable")


# ------------------------------------------------------------------------------------------ a plain callable


def _callable_sampler():
    twin = get("euler_ancestral", eta=1.0)

    def sampler(denoiser, x, sigmas, noise):
        return twin(denoiser, x, sigmas, noise)

    sampler.needs_noise = True
    return sampler


def test_callable_declaring_needs_noise_is_called_with_noise():
    fn = _callable_sampler()
    s = spec.as_solver(fn)
    assert isinstance(s, spec.StochasticCallableSolver) and s.needs_noise is True
    grid = _grid()
    torch.testing.assert_close(_run(s, grid), _run(get("euler_ancestral", eta=1.0), grid), rtol=0, atol=0)
    with pytest.raises(InputError, match="noise"):
        s(_never, _x(), grid)
    spec.check_callable(fn, "sampler")  # four required arguments: accepted since it declares needs_noise

    def three(denoiser, x, sigmas):
        return x

    three.needs_noise = True
    with pytest.raises(spec.SpecError, match="sampler\\(denoiser, x, sigmas, noise\\)"):
        spec.check_callable(three, "three")
    assert type(spec.as_solver(lambda d, x, s: x)) is spec.CallableSolver


# ------------------------------------------------ DPMSolverMultistep sde-dpmsolver++, DDIM (eta), DDPM (fixed_small)
# Same update as the registered twin in canonical variables, same draws (one per step, j = step index), float64
# throughout (keep_float64; DDIM/DDPM get the grid's abar = 1/(1 + s^2) written into alphas_cumprod): only the order
# of float64 operations and the abar <-> sigma round trip differ, ~1e-15 relative per step; 1e-10 is a wide margin
# that a wrong coefficient (O(h) or O(h^2) per step, >= 1e-3 on these grids) cannot pass.

NEW = [
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "lower_order_final": False},
     lambda: get("dpmpp_2m_sde", eta=1.0, s_noise=1.0, solver_type="midpoint")),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun",
                                     "lower_order_final": False},
     lambda: get("dpmpp_2m_sde", eta=1.0, s_noise=1.0, solver_type="heun")),
    ("DDIMScheduler", {"eta": 0.5, "clip_sample": False}, lambda: get("ddim_eta", eta=0.5)),
    ("DDPMScheduler", {"clip_sample": False}, lambda: get("ddpm")),
]


@pytest.mark.parametrize("name, config, twin", NEW)
@pytest.mark.parametrize("zero", [False, True])
def test_new_diffusers_samplers_equal_registered_twin(name, config, twin, zero):
    s = _diffusers(name, config)
    assert s.needs_noise is True and s.order is None and s.twin == twin().name
    grid = _grid(zero=zero)
    torch.testing.assert_close(_run(s, grid), _run(twin(), grid), rtol=1e-10, atol=1e-10)


def test_dpm_sde_default_lower_order_final_differs_only_below_15_steps_above_zero():
    s = _diffusers("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"})
    twin = get("dpmpp_2m_sde", eta=1.0, s_noise=1.0, solver_type="midpoint")
    assert any("lower_order_final" in n for n in s.notes)
    for n, zero in ((10, True), (15, False), (20, False)):
        torch.testing.assert_close(_run(s, _grid(n, zero)), _run(twin, _grid(n, zero)), rtol=1e-10, atol=1e-10)
    gap = (_run(s, _grid(10)) - _run(twin, _grid(10))).abs().max()
    assert gap > 1e-3  # the last step is first order in diffusers (N < 15), second order in the twin


def test_ddpm_one_step_law_is_exact_on_point_mass():
    # DDPM samples the exact bridge posterior: from x ~ N(x0, s^2 I), x' ~ N(x0, s'^2 I) exactly (D = x0)
    x0 = torch.tensor([0.5, -1.0], dtype=F64)
    s = _diffusers("DDPMScheduler", {"clip_sample": False})
    grid = torch.tensor([2.0, 0.7], dtype=F64)
    g = torch.Generator().manual_seed(1)
    n = 20000
    x = x0 + 2.0 * torch.randn(n, 2, generator=g, dtype=F64)
    out = s(lambda y, sigma: x0.expand_as(y), x, grid, GaussianNoise(x, 5))
    se = 0.7 / n ** 0.5
    assert (out.mean(0) - x0).abs().max() < 5 * se
    assert (out.var(0) / 0.49 - 1).abs().max() < 5 * (2 / n) ** 0.5


def test_ddim_eta_zero_is_deterministic_ddim_and_eta_is_validated():
    s = _diffusers("DDIMScheduler", {"clip_sample": False})
    assert s.needs_noise is False and s.equivalent == "ddim" and s.order == 1
    x, grid = _x(), _grid()
    torch.testing.assert_close(s(TARGET.denoiser, x, grid), get("ddim")(TARGET.denoiser, x, grid), rtol=1e-10,
                               atol=1e-10)
    e = _diffusers("DDIMScheduler", {"clip_sample": False, "eta": 1.0})
    assert "eta=1.0" in e.name and e.params()["config"]["eta"] == 1.0 and e.with_process("vp-v").step_config["eta"] == 1
    for bad in ({"clip_sample": False, "eta": 2.0}, {"eta": 0.5}, {"clip_sample": False, "eta": "x"}):
        with pytest.raises(spec.SpecError):
            _diffusers("DDIMScheduler", bad)
    with pytest.raises(spec.SpecError, match="sde-dpmsolver"):
        _diffusers("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver"})


@pytest.mark.parametrize("name, config, twin", NEW)
def test_probe_law_applies_to_new_diffusers_samplers(name, config, twin):
    grid = _grid(6)
    law = _law(_diffusers(name, config), grid)
    assert law.residual < 1e-9 and law.draws >= 5
    ref = _law(twin(), grid)
    torch.testing.assert_close(law.mean, ref.mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(law.covariance, ref.covariance, rtol=1e-9, atol=1e-10)


def test_probe_law_on_gauss_4d_target():
    from sdm_verify.harness import targets
    grid = _grid(6)
    for name, config, _ in NEW:
        StochasticGaussianMeter(targets.get("gauss-4d"), SMAX, SMIN).law(_diffusers(name, config), grid)


@pytest.mark.parametrize("name, config, twin", NEW)
def test_new_diffusers_missing_noise_refused_before_any_denoiser_call(name, config, twin):
    s = _diffusers(name, config)
    with pytest.raises(InputError, match="noise"):
        s(_never, _x(), _grid())
