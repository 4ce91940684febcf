"""Real-model loaders (sdm_verify.models): format detection, the diffusers VP -> EDM mapping against direct UNet calls
and the schedule formulas, NVlabs pickles (refused without trust, nothing executed; with trust equal to the module
built from its source), the own format's round trip, and the Denoiser's argument checks. Every checkpoint is written
by the tests (tests/_model_fixtures.py); nothing downloads."""

import json
import math
import pickle

import numpy as np
import pytest
import torch
from _model_fixtures import (
    TINY_ARCH,
    TinyPrecond,
    build_tiny_edm,
    linear_vp_sigmas,
    save_pipeline,
    timestep_embedding_f64,
    tiny_edm_reference,
    tiny_unet,
    write_persistent_pickle,
)

from sdm_verify.models import (
    Denoiser,
    ModelError,
    UntrustedPickleError,
    detect_format,
    float64_compute,
    load_denoiser,
    save_denoiser,
)
from sdm_verify.models.diffusers_unet import VPTable, vp_alphas_cumprod

pytestmark = pytest.mark.real
F64 = torch.float64


# ----------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def diffusers_dirs(tmp_path_factory):
    """One tiny UNet saved three times: epsilon, v_prediction and sample prediction pipelines, plus a bare UNet
    directory without a scheduler config."""
    pytest.importorskip("diffusers")
    root = tmp_path_factory.mktemp("diffusers")
    unet = tiny_unet()
    dirs = {p: save_pipeline(root / p, unet, num_train_timesteps=1000, prediction_type=p)
            for p in ("epsilon", "v_prediction", "sample")}
    unet.save_pretrained(str(root / "bare"))
    dirs["bare"] = root / "bare"
    return dirs


@pytest.fixture(scope="module")
def direct_unet(diffusers_dirs):
    """The fixture's UNet loaded straight through diffusers (float32), for independent reference calls."""
    from diffusers import UNet2DModel

    return UNet2DModel.from_pretrained(str(diffusers_dirs["epsilon"]), subfolder="unet", local_files_only=True,
                                       low_cpu_mem_usage=False).eval()


@pytest.fixture
def nv(tmp_path):
    """An unconditional synthetic NVlabs pickle: (path, marker file, module built directly from the source)."""
    marker = tmp_path / "executed.txt"
    src, net = build_tiny_edm(marker)
    return write_persistent_pickle(tmp_path / "network-snapshot.pkl", src, net), marker, net


def _own_checkpoint(tmp_path, label_dim=0, weights_dtype=F64, seed=0):
    torch.manual_seed(seed)
    module = TinyPrecond(channels=2, sigma_data=0.7, label_dim=label_dim).double()
    d = save_denoiser(module, tmp_path / "ckpt", TINY_ARCH, {"channels": 2, "sigma_data": 0.7, "label_dim": label_dim},
                      sigma_min=0.002, sigma_max=80.0, sigma_data=0.7, shape=(2, 4, 4), label_dim=label_dim,
                      description="tiny test model", training={"steps": 0}, weights_dtype=weights_dtype)
    return d, module


# ------------------------------------------------------------------------------------------------ own format


def test_own_round_trip_float64_is_exact(tmp_path):
    d, module = _own_checkpoint(tmp_path)
    den = load_denoiser(d)
    assert (den.format, den.shape, den.label_dim, den.sigma_data) == ("sdm-verify", (2, 4, 4), 0, 0.7)
    assert (den.sigma_min, den.sigma_max, den.dtype) == (0.002, 80.0, F64)
    x = torch.randn(5, 2, 4, 4, dtype=F64)
    sigma = torch.tensor([0.002, 0.1, 1.0, 10.0, 80.0], dtype=F64)
    with torch.no_grad():
        expected = module(x, sigma)
    # float64 weights stored and loaded bit for bit, the same float64 operations: equal, not merely close
    assert torch.equal(den(x, sigma), expected)
    # the config file and the weights file name the same checkpoint
    for p in (d / "config.json", d / "model.safetensors"):
        assert detect_format(p) == "sdm-verify"
        assert torch.equal(load_denoiser(p)(x, sigma), expected)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["format"] == "sdm-verify-denoiser" and cfg["format_version"] == 1 and cfg["training"] == {"steps": 0}


def test_own_float32_weights_equal_the_rounded_module(tmp_path):
    d, module = _own_checkpoint(tmp_path, weights_dtype=torch.float32)
    rounded = TinyPrecond(channels=2, sigma_data=0.7).double()
    rounded.load_state_dict({k: v.float().double() for k, v in module.state_dict().items()})
    x, sigma = torch.randn(3, 2, 4, 4, dtype=F64), 0.5
    with torch.no_grad():
        expected = rounded(x, torch.full((3,), sigma, dtype=F64))
    # the stored weights are exactly the float32 roundings of the module's; the rest is the same float64 algebra
    assert torch.equal(load_denoiser(d)(x, sigma), expected)


def test_dtype_and_device_handling(tmp_path):
    d, module = _own_checkpoint(tmp_path)
    den32 = load_denoiser(d, dtype=torch.float32, device="cpu")
    assert den32.dtype == torch.float32 and den32.module.conv.weight.dtype == torch.float32
    x = torch.randn(4, 2, 4, 4, dtype=F64)
    y32 = den32(x, 1.0)
    # decided: the output comes back in the input's dtype (float64 here) whatever the model computes in
    assert y32.dtype == F64 and y32.device == x.device
    assert den32(x.float(), 1.0).dtype == torch.float32
    with torch.no_grad():
        exact = module(x, torch.full((4,), 1.0, dtype=F64))
    # a float32 evaluation of an O(1) output: relative error a few float32 ulps (2^-24 ~ 6e-8) per operation
    assert (y32 - exact).abs().max() <= 1e-5 * exact.abs().max()
    assert den32.to(dtype=F64) is den32 and den32.module.conv.weight.dtype == F64
    with pytest.raises(ModelError, match="^dtype:"):
        den32.to(dtype=torch.int32)


def test_own_format_errors(tmp_path):
    d, _ = _own_checkpoint(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    # missing weights file
    (d / "model.safetensors").rename(d / "moved.safetensors")
    with pytest.raises(ModelError, match="^path: weights file not found"):
        load_denoiser(d)
    # weights of another shape: strict load, names the mismatching key
    torch.manual_seed(1)
    other = TinyPrecond(channels=3)
    save_denoiser(other, tmp_path / "other", TINY_ARCH, {"channels": 3}, sigma_min=0.002, sigma_max=80.0,
                  sigma_data=0.5, shape=(3, 4, 4))
    (tmp_path / "other" / "model.safetensors").rename(d / "model.safetensors")
    with pytest.raises(ModelError, match=r"^path: weights .* do not fit architecture .*conv\.weight: expected"):
        load_denoiser(d)
    # a config lacking keys, another format version, an unregistered architecture
    for change, pattern in ((lambda c: c.pop("sigma_data"), "lacks the key"),
                            (lambda c: c.update(format_version=2), "format_version 2"),
                            (lambda c: c.update(architecture="no-such-arch"), "unknown architecture")):
        bad = json.loads(json.dumps(cfg))
        change(bad)
        (d / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=pattern):
            load_denoiser(d)
    # save refuses a module that the named architecture could not load back
    with pytest.raises(ModelError, match="^module: its state_dict does not fit"):
        save_denoiser(TinyPrecond(channels=2), tmp_path / "x", TINY_ARCH, {"channels": 3}, sigma_min=0.002,
                      sigma_max=80.0, sigma_data=0.5, shape=(2, 4, 4))
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------- argument checks


def test_call_checks(tmp_path):
    d, _ = _own_checkpoint(tmp_path)
    den = load_denoiser(d)
    x = torch.zeros(2, 2, 4, 4, dtype=F64)
    with pytest.raises(ModelError, match=r"^x: expected shape \(B, 2, 4, 4\), got \(2, 2, 4\)"):
        den(x[..., 0], 1.0)
    with pytest.raises(ModelError, match=r"^x: expected shape \(B, 2, 4, 4\), got \(2, 3, 4, 4\)"):
        den(torch.zeros(2, 3, 4, 4, dtype=F64), 1.0)
    for bad in (0.001, 100.0, float("nan"), torch.tensor([1.0, 81.0], dtype=F64)):
        with pytest.raises(ModelError, match=r"^sigma: .* outside the model's noise range \[0.002, 80\]"):
            den(x, bad)
    with pytest.raises(ModelError, match=r"^sigma: expected a float, a 0-d tensor or a \(2,\) tensor"):
        den(x, torch.ones(3, dtype=F64))
    # the relative slack 1e-6 admits grid endpoints rounded past the range, nothing more
    den(x, 80.0 * (1 + 5e-7))
    den(x, torch.tensor(0.002 * (1 - 5e-7)))
    with pytest.raises(ModelError, match="^labels: this model is unconditional"):
        den(x, 1.0, labels=torch.tensor([0, 1]))


def test_labels_conditional_own_model(tmp_path):
    d, module = _own_checkpoint(tmp_path, label_dim=3)
    den = load_denoiser(d)
    assert den.label_dim == 3
    x, sigma = torch.randn(2, 2, 4, 4, dtype=F64), torch.tensor([0.5, 2.0], dtype=F64)
    onehot = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=F64)
    with torch.no_grad():
        expected = module(x, sigma, onehot)
    assert torch.equal(den(x, sigma, torch.tensor([2, 0])), expected)  # indices become the one-hot rows
    assert torch.equal(den(x, sigma, onehot), expected)
    same = den.with_labels(torch.tensor([2, 0]))
    assert torch.equal(same(x, sigma), expected) and same.sigma_max == 80.0
    with torch.no_grad():
        assert torch.equal(den.with_labels(1)(x, sigma), module(x, sigma, torch.tensor([[0.0, 1, 0]] * 2, dtype=F64)))
    with pytest.raises(ModelError, match=r"^labels: this model is class-conditional \(label_dim = 3\)"):
        den(x, sigma)
    with pytest.raises(ModelError, match=r"^labels: class indices must lie in \[0, 2\], got \[0, 3\]"):
        den(x, sigma, torch.tensor([0, 3]))
    with pytest.raises(ModelError, match=r"^labels: expected one-hot labels of shape \(2, 3\), got \(2, 4\)"):
        den(x, sigma, torch.zeros(2, 4))
    with pytest.raises(ModelError, match=r"^labels: expected class indices of shape \(2,\)"):
        den(x, sigma, torch.tensor([1]))


def test_denoiser_wraps_any_module_and_validates_metadata():
    module = TinyPrecond(channels=1, sigma_data=0.5).double()
    den = Denoiser(module, sigma_min=0.01, sigma_max=10.0, sigma_data=0.5, shape=(1, 3, 3))
    x = torch.randn(2, 1, 3, 3, dtype=F64)
    with torch.no_grad():
        assert torch.equal(den(x, 0.5), module(x, torch.full((2,), 0.5, dtype=F64)))
    for kwargs, arg in (({"sigma_min": 0.0}, "sigma_min"), ({"sigma_max": float("inf")}, "sigma_min, sigma_max"),
                        ({"sigma_data": -1.0}, "sigma_data"), ({"shape": (1, 0, 3)}, "shape")):
        base = dict(sigma_min=0.01, sigma_max=10.0, sigma_data=0.5, shape=(1, 3, 3))
        with pytest.raises(ModelError, match=f"^{arg}"):
            Denoiser(module, **{**base, **kwargs})


# --------------------------------------------------------------------------------------- detection and paths


def test_detection_and_path_errors(tmp_path, nv):
    d, _ = _own_checkpoint(tmp_path)
    assert detect_format(d) == "sdm-verify"
    assert detect_format(nv[0]) == "nvlabs-pickle"
    with pytest.raises(ModelError, match=r"^path: no such file or directory: .*nowhere"):
        load_denoiser(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="^path: .* not a checkpoint directory .* accepted: .*NVlabs"):
        load_denoiser(empty)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    torch.save({"w": torch.ones(2)}, tmp_path / "weights.pt")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    for p in (plain, tmp_path / "weights.pt", tmp_path / "other.json"):
        with pytest.raises(ModelError, match="^path: .* not in a checkpoint format .* accepted: .*diffusers"):
            load_denoiser(p)
    with pytest.raises(ModelError, match="^path: .* not a checkpoint directory .* pass the .pkl file itself"):
        load_denoiser(nv[0].parent)


# ---------------------------------------------------------------------------------------- diffusers mapping


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_alphas_cumprod_match_ddpm_scheduler(schedule):
    DDPMScheduler = pytest.importorskip("diffusers").DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule=schedule)
    ours = vp_alphas_cumprod(dict(sched.config))
    theirs = sched.alphas_cumprod.double().numpy()
    # diffusers forms betas and the cumulative product in float32: relative error <= T * 2^-24 = 6e-5
    assert ours.shape == theirs.shape and np.allclose(ours, theirs, rtol=1000 * 2.0**-24, atol=0)


def test_vp_table_range_and_nodes():
    cfg = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
    sig = linear_vp_sigmas()
    for interp in ("spline", "linear"):
        table = VPTable(cfg, interp)
        # the range is the table's [sigma_0, sigma_{T-1}] (docs/real-models.md §3: [0.0100, 157.4]); float64 products of
        # 1000 factors in two orders: relative 1e-12
        assert math.isclose(table.sigma_min, sig[0], rel_tol=1e-12) and math.isclose(table.sigma_max, sig[-1],
                                                                                     rel_tol=1e-12)
        assert math.isclose(sig[0], 0.0100005, rel_tol=1e-6) and math.isclose(sig[-1], 157.407, rel_tol=1e-5)
        # t(sigma_k) = k at every node: interpolation is exact there up to the spline solve's rounding (~1e-13)
        assert np.abs(table.t(sig) - np.arange(1000)).max() < 1e-9


def test_spline_t_of_sigma_is_smooth_linear_has_kinks():
    """A C^2 t(log sigma) has second difference quotients that converge as h -> 0; a piecewise-linear one has kinks
    of fixed size, so its maximal quotient doubles when h halves (the jump in slope divided by h)."""
    cfg = {"num_train_timesteps": 1000, "beta_schedule": "linear"}
    ratios = {}
    for interp in ("spline", "linear"):
        table = VPTable(cfg, interp)
        q = []
        for h in (1e-3, 5e-4):
            u = np.arange(math.log(table.sigma_min) + 0.01, math.log(table.sigma_max) - 0.01, h)
            q.append(np.abs(np.diff(table.t(np.exp(u)), 2)).max() / h**2)
        ratios[interp] = q[1] / q[0]
        dense = table.t(np.exp(np.linspace(math.log(table.sigma_min), math.log(table.sigma_max), 100001)))
        assert (np.diff(dense) > 0).all()  # t(sigma) strictly increasing
    # smooth: the quotient converges (measured 1 + 1e-7); kinked: it grows like 1/h (measured 1.83)
    assert abs(ratios["spline"] - 1) < 1e-3 and ratios["linear"] > 1.5


def test_diffusers_epsilon_matches_direct_unet_calls_float32(diffusers_dirs, direct_unet):
    den = load_denoiser(diffusers_dirs["epsilon"], dtype=torch.float32)
    assert den.format == "diffusers" and den.shape == (1, 8, 8) and den.label_dim == 0 and den.sigma_data == 0.5
    sig = linear_vp_sigmas()
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 8)
    for k in (0, 1, 37, 500, 998, 999):
        s = float(sig[k])
        with torch.no_grad():
            eps = direct_unet(x / math.sqrt(1 + s * s), torch.full((2,), float(k))).sample
        expected = x - s * eps
        got = den(x, s)
        # same float32 UNet at the same integer t (t(sigma_k) = k to 1e-9, exact once rounded to float32); only
        # the scalings' roundings differ: relative 1e-5 of the output (a few float32 ulps through ~20 layers)
        assert (got - expected).abs().max() <= 1e-5 * expected.abs().max(), k


def test_float64_compute_makes_the_timestep_embedding_float64():
    pytest.importorskip("diffusers")
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0.0, 1.5, 999.25], dtype=F64)
    exact = np.stack([timestep_embedding_f64(float(v), 32) for v in t])
    plain = get_timestep_embedding(t, 32, flip_sin_to_cos=True, downscale_freq_shift=0).double().numpy()
    with float64_compute():
        promoted = get_timestep_embedding(t, 32, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert promoted.dtype == F64
    # float64 sin/cos of arguments up to 1e3: absolute error ~1e3 * 2^-53 ~ 1e-13
    assert np.abs(promoted.numpy() - exact).max() < 1e-12
    # without the promotion diffusers rounds t w_k to float32: errors ~1e3 * 2^-24 ~ 6e-5, far above float64's
    assert np.abs(plain - exact).max() > 1e-6


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_diffusers_float64_predictions_match_direct_calls(diffusers_dirs, direct_unet, prediction):
    den = load_denoiser(diffusers_dirs[prediction])
    assert den.dtype == F64 and den.format == "diffusers"
    unet = direct_unet
    sig = linear_vp_sigmas()
    torch.manual_seed(1)
    x = torch.randn(2, 1, 8, 8, dtype=F64)
    unet64 = type(unet).from_config(unet.config).double().eval()
    unet64.load_state_dict({k: v.double() for k, v in unet.state_dict().items()})
    for k in (0, 250, 999):
        s = float(sig[k])
        abar = 1.0 / (1.0 + s * s)  # sigma^2 = (1 - abar)/abar
        x_t = math.sqrt(abar) * x  # the DDPM sample whose EDM counterpart is x
        with torch.no_grad(), float64_compute():
            out = unet64(x_t, torch.full((2,), float(k), dtype=F64)).sample
        if prediction == "epsilon":  # x0 = (x_t - sqrt(1 - abar) eps)/sqrt(abar)   (Ho et al. 2020, Eq. 4)
            x0 = (x_t - math.sqrt(1 - abar) * out) / math.sqrt(abar)
        elif prediction == "v_prediction":  # x0 = sqrt(abar) x_t - sqrt(1 - abar) v   (Salimans & Ho 2022)
            x0 = math.sqrt(abar) * x_t - math.sqrt(1 - abar) * out
        else:
            x0 = out
        # float64 throughout (both sides promoted); the scaling formulas differ in form: relative 1e-11
        assert (den(x, s) - x0).abs().max() <= 1e-11 * x0.abs().max(), (prediction, k)
    # float32 and float64 evaluations of the same weights agree to float32 precision
    den32 = load_denoiser(diffusers_dirs[prediction], dtype=torch.float32)
    y64, y32 = den(x, 3.0), den32(x, 3.0)
    assert (y64 - y32).abs().max() <= 1e-5 * y64.abs().max()


def test_diffusers_detection_range_and_errors(diffusers_dirs, tmp_path):
    assert detect_format(diffusers_dirs["epsilon"]) == "diffusers"
    assert detect_format(diffusers_dirs["bare"]) == "diffusers"
    assert detect_format(diffusers_dirs["epsilon"] / "unet" / "config.json") == "diffusers"
    den = load_denoiser(diffusers_dirs["epsilon"])
    x = torch.zeros(1, 1, 8, 8, dtype=F64)
    with pytest.raises(ModelError, match=r"^sigma: 0.005 is outside the model's noise range \[0.0100005, 157.407\]"):
        den(x, 0.005)
    with pytest.raises(ModelError, match=r"^sigma: 200 is outside"):
        den(x, 200.0)
    with pytest.raises(ModelError, match="^path: .* bare diffusers model directory without a scheduler config"):
        load_denoiser(diffusers_dirs["bare"])
    # the bare UNet directory loads once a scheduler config sits beside it
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in diffusers_dirs["bare"].iterdir():
        (bare / f.name).write_bytes(f.read_bytes())
    (bare / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler", "beta_schedule": "linear",
                                                            "num_train_timesteps": 1000}))
    assert torch.equal(load_denoiser(bare)(x + 1, 1.0), den(x + 1, 1.0))
    (bare / "scheduler_config.json").write_text(json.dumps({"beta_schedule": "sigmoid"}))
    with pytest.raises(ModelError, match="beta_schedule 'sigmoid' is not supported"):
        load_denoiser(bare)


# ------------------------------------------------------------------------------------------- NVlabs pickles


def test_nvlabs_refused_without_trust_and_nothing_runs(nv):
    path, marker, _ = nv
    with pytest.raises(UntrustedPickleError, match=r"^path: .* embeds Python source code .* trust_pickle=True "
                                                   r"\(CLI: --trust-pickle\)"):
        load_denoiser(path)
    assert not marker.exists()  # the embedded source never ran


def test_nvlabs_trusted_equals_direct_module(nv):
    path, marker, net = nv
    import sys

    before = {n: sys.modules.get(n) for n in ("torch_utils", "torch_utils.persistence", "torch_utils.misc", "dnnlib")}
    den = load_denoiser(path, trust_pickle=True, dtype=torch.float32)
    assert marker.read_text() == "executed\n"  # the network's source ran once; the poisoned loss_fn never did
    assert {n: sys.modules.get(n) for n in before} == before  # stubs only while loading
    assert (den.format, den.shape, den.label_dim, den.sigma_range) == ("nvlabs-pickle", (2, 4, 4), 0, (0.002, 80.0))
    x = torch.randn(3, 2, 4, 4)
    sigma = torch.tensor([0.002, 1.0, 80.0])
    with torch.no_grad():
        expected = net(x, sigma)
    # the same float32 operations on the same float32 weights: identical
    assert torch.equal(den(x, sigma), expected)
    # float64: every float32 the source asks for is promoted; against the forward restated in float64 here
    den.to(dtype=F64)
    x64, s64 = x.double(), sigma.double()
    ref = tiny_edm_reference(net.state_dict(), x64, s64)
    assert (den(x64, s64) - ref).abs().max() <= 1e-13 * ref.abs().max()  # float64 rounding of ~10 operations
    assert (expected.double() - ref).abs().max() > 1e-9  # the float32 forward is visibly not float64
    with pytest.raises(ModelError, match="^dtype: NVlabs networks"):
        den.to(dtype=torch.float16)


def test_nvlabs_conditional_plain_dict_and_default_range(tmp_path):
    marker = tmp_path / "m.txt"
    src, net = build_tiny_edm(marker, label_dim=3, sigma_min=0.0, sigma_max=float("inf"))
    path = write_persistent_pickle(tmp_path / "edm.pkl", src, net, top="dict")
    den = load_denoiser(path, trust_pickle=True)
    # EDMPrecond declares [0, inf]: EDM's sampling range [0.002, 80] is used and said so
    assert den.sigma_range == (0.002, 80.0) and "EDM's default" in den.description and den.label_dim == 3
    x, sigma = torch.randn(2, 2, 4, 4, dtype=F64), torch.tensor([0.3, 7.0], dtype=F64)
    onehot = torch.nn.functional.one_hot(torch.tensor([2, 1]), 3).double()
    ref = tiny_edm_reference(net.state_dict(), x, sigma, onehot)
    # float64 rounding of ~10 operations
    assert (den(x, sigma, torch.tensor([2, 1])) - ref).abs().max() <= 1e-13 * ref.abs().max()
    with pytest.raises(ModelError, match="^labels: this model is class-conditional"):
        den(x, sigma)


def test_nvlabs_unknown_global_refused(tmp_path):
    marker, evil_marker = tmp_path / "m.txt", tmp_path / "evil.txt"
    src, net = build_tiny_edm(marker)
    path = write_persistent_pickle(tmp_path / "evil.pkl", src, net, evil=evil_marker)
    assert detect_format(path) == "nvlabs-pickle"
    with pytest.raises(ModelError, match=r"^path: .* asks to load the global builtins\.exec, which is not allowed"):
        load_denoiser(path, trust_pickle=True)
    assert not evil_marker.exists() and not marker.exists()  # neither the exec nor the network source ran


def test_labelled_denoiser_in_the_real_harness(tmp_path):
    import copy

    from sdm_verify.real.harness import model_id

    d, module = _own_checkpoint(tmp_path, label_dim=3)
    den = load_denoiser(d, dtype=torch.float32)
    one, two = den.with_labels(1), copy.deepcopy(den).with_labels(2)
    # each fixed class keys its own cells in the store
    assert model_id(one) != model_id(two) and model_id(one).endswith("#class1")
    # the harness's float64 copy of a float32 run keeps the labels and computes in float64
    copy64 = copy.deepcopy(one).to(dtype=torch.float64)
    x = torch.randn(2, 2, 4, 4, dtype=F64)
    assert copy64.dtype == torch.float64 and one.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(copy64(x, 1.0), module.double()(x, torch.full((2,), 1.0, dtype=F64),
                                                           torch.tensor([[0.0, 1, 0]] * 2, dtype=F64)))
