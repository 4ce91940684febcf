"""The diffusers findings of the README (18, 19), each a strict xfail against the installed diffusers: the assertion
states what the scheduler *should* do, and the xfail records that diffusers 0.42.1 does not. If a finding stops being
true, the test passes unexpectedly and fails, and the record must change."""

import pytest

diffusers = pytest.importorskip("diffusers")


@pytest.mark.xfail(strict=True, reason="finding 18: PNDMScheduler's class-default config ends with a zero-length step")
@pytest.mark.parametrize("n", [5, 10, 25, 50])
def test_pndm_default_config_last_step_moves(n):
    """With the class defaults (steps_offset = 0, set_alpha_to_one = False) the last timestep is 0 and the step after
    it uses final_alpha_cumprod = alphas_cumprod[0]: the same noise level. The last model call moves nothing."""
    s = diffusers.PNDMScheduler()
    s.set_timesteps(n)
    t = int(s.timesteps[-1])
    prev = t - s.config.num_train_timesteps // n
    alpha_t = float(s.alphas_cumprod[t])
    alpha_prev = float(s.alphas_cumprod[prev]) if prev >= 0 else float(s.final_alpha_cumprod)
    assert alpha_prev != alpha_t


def test_pndm_stable_diffusion_config_last_step_moves():
    """The finding is the default config's: with steps_offset = 1 (Stable Diffusion's scheduler config) the last step
    goes from t = 1 to alphas_cumprod[0], a real step."""
    s = diffusers.PNDMScheduler(steps_offset=1)
    s.set_timesteps(10)
    t = int(s.timesteps[-1])
    assert t == 1 and float(s.final_alpha_cumprod) != float(s.alphas_cumprod[t])
