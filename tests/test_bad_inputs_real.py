"""Bad inputs to `sdm-verify real`, the real-model harness and the model loaders (issue: reliability).

Each row is refused with one line naming the argument, before any model call, reference solve or harness run, and
without creating or changing a file (tests/_bad_inputs.py). Checkpoints are built in the row's setup, in the scratch
directory, from the fixtures of tests/_model_fixtures.py (nothing downloads, nothing is trained).
"""

from __future__ import annotations

import json
import sqlite3

import torch
from _bad_inputs import Bad, CliExit, check, parametrize
from _model_fixtures import TINY_ARCH, TinyPrecond, build_tiny_edm, write_persistent_pickle

from sdm_verify.errors import InputError
from sdm_verify.models import ModelError, UntrustedPickleError, load_denoiser, save_denoiser
from sdm_verify.models.diffusers_unet import load_diffusers
from sdm_verify.models.digits import load_digits_model
from sdm_verify.real.distributed import select_device
from sdm_verify.real.harness import RealHarness, RealSettings
from sdm_verify.real.run import run_real

# ------------------------------------------------------------------------------------------------ helpers

#: the expensive entry points: none of them may run before a refusal
EXPENSIVE = ("sdm_verify.real.harness.check_reference", "sdm_verify.real.harness.RealHarness.run",
             "sdm_verify.cli.real.run_real", "sdm_verify.cli.real.open_store")


def _ckpt(probe, name="ckpt", label_dim=0):
    """A tiny own-format checkpoint (2x4x4, one 3x3 conv) in the scratch directory; returns its directory."""
    torch.manual_seed(0)
    module = TinyPrecond(channels=2, label_dim=label_dim).double()
    return save_denoiser(module, probe.tmp / name, TINY_ARCH, {"channels": 2, "label_dim": label_dim},
                         sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, shape=(2, 4, 4), label_dim=label_dim)


def _edit_config(**changes):
    """Setup: a checkpoint whose config.json has `changes` applied ("kwargs.x" edits a builder kwarg)."""
    def setup(probe):
        d = _ckpt(probe)
        cfg = json.loads((d / "config.json").read_text())
        for key, value in changes.items():
            if key.startswith("kwargs."):
                cfg["kwargs"][key[len("kwargs."):]] = value
            else:
                cfg[key] = value
        (d / "config.json").write_text(json.dumps(cfg))
    return setup


def _edit_weights(edit):
    """Setup: a checkpoint whose model.safetensors is replaced by edit(bytes) (bytes) or written by edit(path)."""
    def setup(probe):
        w = _ckpt(probe) / "model.safetensors"
        out = edit(w)
        if isinstance(out, bytes):
            w.write_bytes(out)
    return setup


def _save_tensors(tensors: dict):
    def edit(w):
        from safetensors.torch import save_file

        save_file(tensors, str(w))
    return edit


def _load(probe, **kwargs):
    probe.forbid("safetensors.torch.load_file")  # refused before the weights are read
    return load_denoiser(probe.tmp / kwargs.pop("name", "ckpt"), **kwargs)


def _diffusers_dir(scheduler: dict, index: str | None = None):
    """Setup: a hand-written diffusers pipeline directory (no weights: refused before the UNet is loaded)."""
    def setup(probe):
        d = probe.tmp / "pipe"
        (d / "unet").mkdir(parents=True)
        (d / "scheduler").mkdir()
        (d / "model_index.json").write_text(index if index is not None else json.dumps(
            {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"],
             "scheduler": ["diffusers", "DDPMScheduler"]}))
        (d / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8}))
        (d / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    return setup


def _nv_pickle(probe):
    src, net = build_tiny_edm(probe.tmp / "executed.txt")
    write_persistent_pickle(probe.tmp / "net.pkl", src, net)


def _real(*argv, load: bool = False):
    """A row's call: `sdm-verify real ARGV --out TMP/out` with the expensive entry points forbidden (and the model
    loader too, unless the refusal needs the loaded model: its range, its labels)."""
    def call(probe):
        for target in EXPENSIVE + (() if load else ("sdm_verify.cli.real.load_denoiser",)):
            probe.forbid(target)
        args = [a.replace("TMP", str(probe.tmp)) for a in argv]
        probe.cli(["real", *args] + ([] if "--out" in args else ["--out", str(probe.tmp / "out")]))
    return call


class ProbeModel:
    """A stand-in model (1x2x2, range [0.002, 80]) whose calls are the probe's counted denoiser."""

    def __init__(self, probe):
        self.probe, self.shape, self.sigma_min, self.sigma_max = probe, (1, 2, 2), 0.002, 80.0
        self.source, self.label_dim, self.module = None, 0, torch.nn.Linear(1, 1)

    def __call__(self, x, sigma):
        return self.probe.denoiser(x, sigma)


def _run_real(settings=None, **kwargs):
    def call(probe):
        probe.forbid("sdm_verify.real.harness.check_reference")
        probe.forbid("sdm_verify.real.harness.RealHarness.run")
        kwargs.setdefault("samples", 0)
        return run_real(ProbeModel(probe), None, settings=settings or RealSettings(seeds=2), progress=False, **kwargs)
    return call


def _harness(**settings):
    def call(probe):
        probe.forbid("sdm_verify.real.harness.check_reference")
        return RealHarness(ProbeModel(probe), RealSettings(**settings), progress=False)
    return call


def _db_file(content: bytes | None = None, foreign: bool = False):
    def setup(probe):
        db = probe.tmp / "store.sqlite"
        if foreign:
            con = sqlite3.connect(str(db))
            con.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
            con.commit()
            con.close()
        else:
            db.write_bytes(content)
    return setup


def _cuda_absent_or_index():
    """A CUDA device this machine does not have: 'cuda' without CUDA, else an index past the last device."""
    return "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count() + 7}"


# ------------------------------------------------------------------------------------------------ the table

CASES = [
    # ---- load_denoiser: the path
    Bad("load-path-missing", lambda p: load_denoiser(p.tmp / "nowhere"), ModelError, ("path", "nowhere")),
    Bad("load-path-none", lambda p: load_denoiser(None), ModelError, "path"),
    Bad("load-path-empty-string", lambda p: load_denoiser(""), ModelError, ("path", "empty")),
    Bad("load-path-empty-dir", lambda p: load_denoiser(p.tmp / "empty"), ModelError, ("path", "empty"),
        setup=lambda p: (p.tmp / "empty").mkdir()),
    Bad("load-path-text-file", lambda p: load_denoiser(p.tmp / "notes.txt"), ModelError, ("path", "notes.txt"),
        setup=lambda p: (p.tmp / "notes.txt").write_text("not a model\n")),
    Bad("load-config-truncated", _load, ModelError, ("config.json", "line 1", "column"),
        setup=lambda p: (_ckpt(p) / "config.json").write_text('{"format": "sdm-verify-denoiser", "format_ver')),
    # ---- load_denoiser: the other arguments (checked before any file is read)
    Bad("load-device-banana", lambda p: _load(p, device="banana"), ModelError, ("device", "banana"), setup=_ckpt),
    Bad("load-device-cuda-absent", lambda p: _load(p, device=_cuda_absent_or_index()), ModelError, "device",
        setup=_ckpt),
    Bad("load-device-negative-index", lambda p: _load(p, device=-1), ModelError, "device", setup=_ckpt),
    Bad("load-dtype-float17", lambda p: _load(p, dtype="float17"), ModelError, ("dtype", "float17"), setup=_ckpt),
    Bad("load-dtype-integer", lambda p: _load(p, dtype=torch.int64), ModelError, ("dtype", "int64"), setup=_ckpt),
    Bad("load-trust-pickle-string", lambda p: load_denoiser(p.tmp / "net.pkl", trust_pickle="no"), ModelError,
        "trust_pickle", setup=_nv_pickle),
    Bad("load-pickle-untrusted", lambda p: load_denoiser(p.tmp / "net.pkl"), UntrustedPickleError,
        ("path", "trust_pickle"), setup=_nv_pickle),
    # ---- own format: config.json
    Bad("load-config-channels-string", _load, ModelError, ("config.json", "channels", "'x'"),
        setup=_edit_config(**{"kwargs.channels": "x"})),
    Bad("load-config-channels-negative", _load, ModelError, ("config.json", "channels"),
        setup=_edit_config(**{"kwargs.channels": -1})),
    Bad("load-config-unknown-kwarg", _load, ModelError, ("kwargs", "depth"), setup=_edit_config(**{"kwargs.depth": 3})),
    Bad("load-config-unknown-architecture", _load, ModelError, ("architecture", "no-such-arch"),
        setup=_edit_config(architecture="no-such-arch")),
    Bad("load-config-architecture-list", _load, ModelError, "architecture", setup=_edit_config(architecture=["x"])),
    Bad("load-config-sigma-string", _load, ModelError, ("config.json", "sigma_min"),
        setup=_edit_config(sigma_min="0.002")),
    Bad("load-config-sigma-nan", _load, ModelError, "sigma_max", setup=_edit_config(sigma_max=float("nan"))),
    Bad("load-config-shape-2d", _load, ModelError, "shape", setup=_edit_config(shape=[2, 4])),
    Bad("load-config-label-dim-string", _load, ModelError, "label_dim", setup=_edit_config(label_dim="none")),
    Bad("load-config-weights-escape", _load, ModelError, ("weights", "passwd"),
        setup=_edit_config(weights="../../etc/passwd")),
    # ---- own format: the weights file
    Bad("load-weights-missing", _load, ModelError, ("weights", "model.safetensors"),
        setup=_edit_weights(lambda w: w.unlink())),
    Bad("load-weights-garbage-header", _load, ModelError, ("safetensors", "model.safetensors"),
        setup=_edit_weights(lambda w: b"\xff" * 64)),
    Bad("load-weights-truncated", _load, ModelError, ("safetensors", "model.safetensors"),
        setup=_edit_weights(lambda w: w.read_bytes()[:-40])),
    Bad("load-weights-wrong-shape", _load, ModelError, ("model.safetensors", "conv.weight"),
        setup=_edit_weights(_save_tensors({"conv.weight": torch.zeros(3, 3, 3, 3), "conv.bias": torch.zeros(3)}))),
    Bad("load-weights-nan", lambda p: load_denoiser(p.tmp / "ckpt"), ModelError, ("conv.weight", "nan"),
        setup=_edit_weights(_save_tensors({"conv.weight": torch.full((2, 2, 3, 3), float("nan")),
                                           "conv.bias": torch.zeros(2)}))),
    Bad("load-weights-integer", lambda p: load_denoiser(p.tmp / "ckpt"), ModelError, ("conv.weight", "dtype"),
        setup=_edit_weights(_save_tensors({"conv.weight": torch.zeros(2, 2, 3, 3, dtype=torch.int32),
                                           "conv.bias": torch.zeros(2)}))),
    # ---- diffusers directories (refused before the UNet is loaded)
    Bad("load-diffusers-index-truncated", lambda p: load_denoiser(p.tmp / "pipe"), ModelError,
        ("model_index.json", "line 1", "column"), setup=_diffusers_dir({}, index='{"_class_name": "DDPMPip')),
    Bad("load-diffusers-timesteps-string", lambda p: load_denoiser(p.tmp / "pipe"), ModelError,
        ("scheduler_config.json", "num_train_timesteps"), setup=_diffusers_dir({"num_train_timesteps": "1000"})),
    Bad("load-diffusers-beta-nan", lambda p: load_denoiser(p.tmp / "pipe"), ModelError,
        ("scheduler_config.json", "beta_end"),
        setup=_diffusers_dir({"beta_end": float("nan")})),
    Bad("load-diffusers-interpolation-unknown", lambda p: load_diffusers(p.tmp / "pipe", interpolation="cubic"),
        ModelError, ("interpolation", "cubic"), setup=_diffusers_dir({})),
    Bad("load-diffusers-sigma-data-negative", lambda p: load_diffusers(p.tmp / "pipe", sigma_data=-0.5), ModelError,
        "sigma_data", setup=_diffusers_dir({})),
    Bad("load-digits-model-path-int", lambda p: load_digits_model(5), ModelError, "path"),
    # ---- labels
    Bad("labels-on-unconditional", lambda p: load_denoiser(p.tmp / "ckpt").with_labels(1), ModelError, "labels",
        setup=_ckpt),
    Bad("labels-out-of-range", lambda p: load_denoiser(p.tmp / "ckpt").with_labels(3), ModelError,
        ("labels", "[0, 2]"), setup=lambda p: _ckpt(p, label_dim=3)),
    Bad("labels-string", lambda p: load_denoiser(p.tmp / "ckpt").with_labels("cat"), ModelError, ("labels", "cat"),
        setup=lambda p: _ckpt(p, label_dim=3)),
    # ---- the harness API
    Bad("harness-batch-zero", _harness(batch=0), ValueError, "batch"),
    Bad("harness-seeds-float", _harness(seeds=2.5), ValueError, "seeds"),
    Bad("harness-sigma-min-nan", _harness(sigma_min=float("nan")), ValueError, "sigma_min"),
    Bad("run-real-ns-two-points", _run_real(ns=[8, 16]), ValueError, ("ns", "at least 3")),
    Bad("run-real-ns-float", _run_real(ns=[8, 16.5, 32]), ValueError, "ns"),
    Bad("run-real-unknown-solver", _run_real(pairs=[("nosuch", "edm")]), ValueError, ("pairs", "nosuch")),
    Bad("run-real-unknown-schedule", _run_real(pairs=[("heun", "karras")]), ValueError, ("pairs", "karras")),
    Bad("run-real-samples-negative", _run_real(samples=-1), ValueError, "samples"),
    Bad("select-device-malformed", lambda p: select_device("cuda:x"), ValueError, ("device", "cuda:x")),
    # ---- sdm-verify real: numbers
    Bad("cli-batch-zero", _real("--batch", "0"), CliExit, "--batch"),
    Bad("cli-batch-negative", _real("--batch", "-5"), CliExit, "--batch"),
    Bad("cli-batch-word", _real("--batch", "many"), CliExit, "--batch"),
    Bad("cli-seeds-zero", _real("--seeds", "0"), CliExit, "--seeds"),
    Bad("cli-samples-negative", _real("--samples", "-1"), CliExit, "--samples"),
    Bad("cli-ns-two-points", _real("--ns", "8", "16"), CliExit, ("--ns", "at least 3")),
    Bad("cli-ns-zero", _real("--ns", "0"), CliExit, "--ns"),
    Bad("cli-ns-decreasing", _real("--ns", "32", "16", "8"), CliExit, ("--ns", "increasing")),
    Bad("cli-ns-repeated", _real("--ns", "8", "8", "16"), CliExit, ("--ns", "increasing")),
    Bad("cli-sigma-min-nan", _real("--sigma-min", "nan"), CliExit, "--sigma-min"),
    Bad("cli-sigma-max-inf", _real("--sigma-max", "inf"), CliExit, "--sigma-max"),
    Bad("cli-sigma-inverted", _real("--sigma-min", "5", "--sigma-max", "1"), CliExit, ("--sigma-min", "--sigma-max")),
    Bad("cli-sigma-below-model-range", _real("--model", "TMP/ckpt", "--sigma-min", "0.0001", load=True), CliExit,
        ("--sigma-min", "range"), setup=_ckpt),
    Bad("cli-sigma-min-above-default-max", _real("--model", "TMP/ckpt", "--sigma-min", "80", load=True), CliExit,
        "--sigma-min", setup=_ckpt),
    Bad("cli-labels-negative", _real("--labels", "-1"), CliExit, "--labels"),
    Bad("cli-labels-unconditional-model", _real("--model", "TMP/ckpt", "--labels", "3", load=True), CliExit,
        ("--labels", "unconditional"), setup=_ckpt),
    Bad("cli-labels-past-last-class", _real("--model", "TMP/ckpt", "--labels", "3", load=True), CliExit,
        ("--labels", "[0, 2]"), setup=lambda p: _ckpt(p, label_dim=3)),
    Bad("cli-labels-missing-conditional", _real("--model", "TMP/ckpt", load=True), CliExit, ("--labels", "3 classes"),
        setup=lambda p: _ckpt(p, label_dim=3)),
    # ---- sdm-verify real: names
    Bad("cli-solver-unknown", _real("--solvers", "nosuch"), CliExit, ("--solvers", "nosuch")),
    Bad("cli-solver-repeated", _real("--solvers", "heun", "heun"), CliExit, ("--solvers", "heun")),
    Bad("cli-solver-needs-process", _real("--solvers", "euler_t"), CliExit, ("--solvers", "euler_t")),
    Bad("cli-dtype-float16", _real("--dtype", "float16"), CliExit, "--dtype"),
    Bad("cli-device-banana", _real("--device", "banana"), CliExit, ("--device", "banana")),
    Bad("cli-device-cuda-absent", lambda p: _real("--device", _cuda_absent_or_index())(p), CliExit, "--device"),
    # ---- sdm-verify real: the model
    Bad("cli-model-missing", _real("--model", "TMP/nowhere"), CliExit, ("--model", "nowhere")),
    Bad("cli-model-empty-dir", _real("--model", "TMP/empty"), CliExit, ("--model", "empty"),
        setup=lambda p: (p.tmp / "empty").mkdir()),
    Bad("cli-model-truncated-config", _real("--model", "TMP/ckpt"), CliExit, ("--model", "config.json", "line"),
        setup=lambda p: (_ckpt(p) / "config.json").write_text('{"format": "sdm-verify-denoiser",\n  "arch')),
    Bad("cli-model-corrupt-weights", _real("--model", "TMP/ckpt", load=True), CliExit,
        ("--model", "model.safetensors"), setup=_edit_weights(lambda w: b"\x08" + b"\x00" * 7 + b"{garbage")),
    Bad("cli-model-untrusted-pickle", _real("--model", "TMP/net.pkl"), CliExit, ("--model", "--trust-pickle"),
        setup=_nv_pickle),
    # ---- sdm-verify real: where results go (nothing may be created on refusal)
    Bad("cli-db-is-directory", _real("--db", "TMP/dbdir"), CliExit, ("--db", "directory"),
        setup=lambda p: (p.tmp / "dbdir").mkdir()),
    Bad("cli-db-not-sqlite", _real("--db", "TMP/store.sqlite"), CliExit, ("--db", "not an SQLite database"),
        setup=_db_file(b"this is a text file, not a database\n")),
    Bad("cli-db-foreign-sqlite", _real("--db", "TMP/store.sqlite"), CliExit, ("--db", "store.sqlite"),
        setup=_db_file(foreign=True)),
    Bad("cli-db-parent-is-file", _real("--db", "TMP/notes.txt/results.sqlite"), CliExit, ("--db", "notes.txt"),
        setup=lambda p: (p.tmp / "notes.txt").write_text("x\n")),
    Bad("cli-out-is-file", _real("--out", "TMP/report.md"), CliExit, ("--out", "report.md"),
        setup=lambda p: (p.tmp / "report.md").write_text("# a report\n")),
    Bad("cli-out-index-is-directory", _real("--out", "TMP/rep"), CliExit, ("--out", "index.md"),
        setup=lambda p: (p.tmp / "rep" / "index.md").mkdir(parents=True)),
]


@parametrize(CASES)
def test_refused(case, probe):
    check(case, probe)


def test_every_refusal_is_an_input_error_or_model_error():
    """The loader's ModelError and the CLI's usage errors are ValueErrors (exit status 2); InputError is the
    package's base for the rest."""
    assert issubclass(ModelError, ValueError) and issubclass(InputError, ValueError)
    assert len(CASES) >= 30


def test_batch_auto_is_spelled_out():
    """--batch auto (or leaving it out) is the automatic choice; 0 no longer means it."""
    from sdm_verify.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["real", "--batch", "auto"]).batch is None
    assert parser.parse_args(["real"]).batch is None
    assert parser.parse_args(["real", "--batch", "32"]).batch == 32
