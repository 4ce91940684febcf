"""NVlabs EDM / EDM2 network pickles (`torch_utils.persistence`), loaded without the NVlabs code.

The protocol (read from NVlabs/edm torch_utils/persistence.py; not vendored, CC BY-NC-SA): a persistent object
pickles as REDUCE(torch_utils.persistence._reconstruct_persistent_obj, (meta,)) with
    meta = {"type": "class", "version": 6, "module_src": <source text of the defining module>,
            "class_name": <name in that module>, "state": <the object's __dict__>}
and NVlabs' loader execs module_src into a fresh module, then builds class_name via __new__ + __setstate__(state).
The top-level object is a dict (EDM: ema, loss_fn, augment_pipe, dataset_kwargs) or a `dnnlib.EasyDict` (EDM2:
encoder, dataset_kwargs, loss_fn, ema).

Here a restricted `pickle.Unpickler` maps `_reconstruct_persistent_obj` to a function that only *records* meta, maps
`dnnlib[.util].EasyDict` to a local class, allows torch's tensor-rebuild globals (storages are read back with
`torch.load(weights_only=True)`), `collections.OrderedDict`, torch dtypes, torch.nn container/layer classes and
numpy's array/scalar rebuilds, and refuses every other global. Unpickling therefore executes nothing from the file.
Only with trust_pickle=True is the embedded source of the network (`ema`, else `net`) and its submodules executed:
each distinct source once, into a fresh module, while stub `torch_utils`, `torch_utils.persistence`,
`torch_utils.misc` (`constant`, `const_like`: what the EDM/EDM2 network and encoder sources use) and `dnnlib` modules
sit in sys.modules; they are removed afterwards. Other entries (loss_fn, augment_pipe, encoder) are never built.
Asserts in the embedded source are compiled out (as under `python -O`): EDM's `assert F_x.dtype == dtype` would
otherwise stop the float64 evaluation, where every float32 the network asks for becomes float64.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import inspect
import io
import pickle
import sys
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import Denoiser, ModelError, check_device

MARKER = b"torch_utils.persistence"
#: how far into a file the format detection looks for MARKER (the first persistent object comes first)
SCAN_BYTES = 1 << 20
#: EDM's sampling defaults (Karras et al. 2022, Table 1), used where a network does not declare its range
DEFAULT_SIGMA_MIN, DEFAULT_SIGMA_MAX, DEFAULT_SIGMA_DATA = 0.002, 80.0, 0.5
_STUB_NAMES = ("torch_utils", "torch_utils.persistence", "torch_utils.misc", "dnnlib", "dnnlib.util")


class UntrustedPickleError(ModelError):
    """An NVlabs pickle embeds executable source code and trust_pickle was not given."""


class EasyDict(dict):
    """A dict whose keys are also attributes (stands in for dnnlib.EasyDict)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        del self[name]


@dataclass(eq=False)
class PersistentRecord:
    """A persistent object as stored in the pickle; nothing of it has been executed."""

    class_name: str
    module_src: str
    state: object
    version: int


def _record(meta) -> PersistentRecord:
    """What `_reconstruct_persistent_obj(meta)` becomes here: a record of meta, never an exec."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("module_src"), str) \
            or not isinstance(meta.get("class_name"), str):
        raise ModelError("path: malformed persistent object (expected meta with type 'class', module_src, class_name)")
    return PersistentRecord(meta["class_name"], meta["module_src"], meta.get("state"), meta.get("version", -1))


def _load_storage(data: bytes):
    """torch.storage._load_from_bytes, restricted: the storage's own pickle is read with weights_only=True."""
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _allowed_globals() -> dict:
    import torch._tensor
    import torch._utils

    allowed = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _record,
        ("dnnlib", "EasyDict"): EasyDict,
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("torch", "Tensor"): torch.Tensor,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state"):
        if hasattr(torch._utils, name):
            allowed[("torch._utils", name)] = getattr(torch._utils, name)
    allowed[("torch._tensor", "_rebuild_from_type_v2")] = torch._tensor._rebuild_from_type_v2
    try:
        from numpy._core import multiarray as _ma
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as _ma
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "scalar")] = _ma.scalar
        allowed[(mod, "_reconstruct")] = _ma._reconstruct
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals; anything else is refused before it can run."""

    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path
        self.allowed = _allowed_globals()

    def find_class(self, module, name):
        key = (module, name)
        if key in self.allowed:
            return self.allowed[key]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith("torch.nn.modules."):  # torch's own layers and containers: state only, no file code
            obj = getattr(sys.modules.get(module), name, None)
            if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
                return obj
        raise ModelError(f"path: {self.path} asks to load the global {module}.{name}, which is not allowed (allowed: "
                         f"NVlabs persistent objects, torch tensors, dtypes and nn layers, OrderedDict, numpy arrays)")

    def persistent_load(self, pid):
        raise ModelError(f"path: {self.path} uses pickle persistent ids (a torch.save file?), not an NVlabs pickle")


# ------------------------------------------------------------------------------------- stubs and materialisation


def _persistent_class(cls):
    """torch_utils.persistence.persistent_class: the class as it is (its source is already the file's)."""
    cls._sdm_verify_persistent = True
    return cls


def _constant(value, shape=None, dtype=None, device=None, memory_format=None):
    """torch_utils.misc.constant: a tensor of `value` broadcast to `shape` (no caching here)."""
    t = torch.as_tensor(np.asarray(value), dtype=dtype or torch.get_default_dtype(), device=device)
    if shape is not None:
        t = t.expand(tuple(shape))
    return t.contiguous(memory_format=memory_format or torch.contiguous_format)


def _const_like(ref, value, shape=None, dtype=None, device=None, memory_format=None):
    """torch_utils.misc.const_like: `constant` with dtype and device taken from `ref`."""
    return _constant(value, shape, dtype or ref.dtype, device or ref.device, memory_format)


def _misc_getattr(name):
    raise AttributeError(f"torch_utils.misc.{name} is not provided by sdm-verify's stand-in for NVlabs' torch_utils "
                         f"(only constant and const_like, which the EDM/EDM2 networks use)")


def _make_stubs() -> dict[str, types.ModuleType]:
    mods = {name: types.ModuleType(name) for name in _STUB_NAMES}
    for pkg in ("torch_utils", "dnnlib"):
        mods[pkg].__path__ = []
    persistence = mods["torch_utils.persistence"]
    persistence.persistent_class = _persistent_class
    persistence.is_persistent = lambda obj: getattr(obj, "_sdm_verify_persistent", False)
    persistence.import_hook = lambda hook: hook
    misc = mods["torch_utils.misc"]
    misc.constant, misc.const_like, misc.__getattr__ = _constant, _const_like, _misc_getattr
    mods["torch_utils"].persistence, mods["torch_utils"].misc = persistence, misc
    mods["dnnlib"].EasyDict = mods["dnnlib.util"].EasyDict = EasyDict
    mods["dnnlib"].util = mods["dnnlib.util"]
    return mods


@contextlib.contextmanager
def _stubs_installed() -> Iterator[list[str]]:
    """Stub torch_utils/dnnlib modules in sys.modules for the duration; yields a list to which the names of the
    exec'd modules are appended (removed at the end too). Whatever was there before is put back."""
    saved = {name: sys.modules.get(name) for name in _STUB_NAMES}
    sys.modules.update(_make_stubs())
    created: list[str] = []
    try:
        yield created
    finally:
        for name in created:
            sys.modules.pop(name, None)
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


class _Builder:
    """Executes embedded sources (once each) and builds objects from records, preserving shared references."""

    def __init__(self, path: Path, created: list[str]):
        self.path, self.created = path, created
        self.modules: dict[str, types.ModuleType] = {}
        self.done: dict[int, tuple[object, object]] = {}  # id(original) -> (original, built): keeps ids alive

    def module_for(self, rec: PersistentRecord) -> types.ModuleType:
        src = rec.module_src
        if src not in self.modules:
            name = "_sdm_verify_nvlabs_" + hashlib.sha256(src.encode()).hexdigest()[:16]
            mod = types.ModuleType(name)
            sys.modules[name] = mod
            self.created.append(name)
            try:
                code = compile(src, f"<source embedded in {self.path.name} for {rec.class_name}>", "exec", optimize=1)
                exec(code, mod.__dict__)
            except Exception as exc:
                raise ModelError(f"path: the source embedded in {self.path} for {rec.class_name} failed to run: "
                                 f"{type(exc).__name__}: {exc}") from exc
            self.modules[src] = mod
        return self.modules[src]

    def build(self, rec: PersistentRecord):
        if id(rec) in self.done:
            return self.done[id(rec)][1]
        cls = self.module_for(rec).__dict__.get(rec.class_name)
        if not isinstance(cls, type):
            raise ModelError(f"path: the source embedded in {self.path} defines no class {rec.class_name!r}")
        obj = cls.__new__(cls)
        self.done[id(rec)] = (rec, obj)
        state = self.value(rec.state)
        setstate = getattr(obj, "__setstate__", None)
        if state is None:
            pass
        elif callable(setstate):
            setstate(state)
        else:
            obj.__dict__.update(state)
        return obj

    def value(self, v):
        """v with every record replaced by its object (containers and torch modules walked)."""
        if isinstance(v, PersistentRecord):
            return self.build(v)
        if isinstance(v, dict):
            return type(v)((k, self.value(x)) for k, x in v.items())
        if isinstance(v, (list, tuple, set, frozenset)):
            return type(v)(self.value(x) for x in v)
        if isinstance(v, torch.nn.Module) and id(v) not in self.done:  # e.g. a ModuleList of persistent blocks
            self.done[id(v)] = (v, v)
            for k, x in list(vars(v).items()):
                v.__dict__[k] = self.value(x)
        return v


# ------------------------------------------------------------------------------------------------ the denoiser


class NVlabsDenoiser(Denoiser):
    """D = net(x, sigma, class_labels) of an EDM/EDM2 preconditioned network (it returns D itself)."""

    promote_float64 = True  # the networks cast to float32 inside forward

    def __init__(self, net, **kwargs):
        params = inspect.signature(net.forward).parameters
        self._force_fp32 = "force_fp32" in params  # float32 means float32 (EDM's use_fp16 would pick fp16 on CUDA)
        super().__init__(net, **kwargs)

    def _check_dtype(self, dtype):
        if dtype not in (torch.float32, torch.float64):
            raise ModelError(f"dtype: NVlabs networks compute in float32 internally (float64 here by promotion); "
                             f"use torch.float32 or torch.float64, got {dtype}")

    def _forward(self, x, sigma, labels):
        extra = {"force_fp32": True} if self._force_fp32 else {}
        return self.module(x, sigma.to(self.dtype), labels, **extra)


def is_nvlabs_pickle(path: Path) -> bool:
    """A pickle (protocol >= 2) whose first MiB names torch_utils.persistence."""
    try:
        with open(path, "rb") as f:
            head = f.read(SCAN_BYTES)
    except OSError:
        return False
    return head[:1] == b"\x80" and MARKER in head


def _select_net(root, path: Path):
    if isinstance(root, PersistentRecord):
        return root, "the pickled object"
    if isinstance(root, dict):
        for key in ("ema", "net"):
            if root.get(key) is not None:
                return root[key], key
        raise ModelError(f"path: {path} holds a dict without an 'ema' or 'net' network (keys: {sorted(root)})")
    raise ModelError(f"path: {path} holds a {type(root).__name__}, not a dict with an 'ema' or 'net' network")


def load_nvlabs(path, trust_pickle: bool = False, device="cpu", dtype: torch.dtype = torch.float64) -> NVlabsDenoiser:
    """Load the `ema` (else `net`) network of an NVlabs EDM/EDM2 pickle. Refuses unless trust_pickle is True."""
    if not isinstance(trust_pickle, bool):  # only True trusts: a truthy "no" or 1 must not execute the file's code
        raise ModelError(f"trust_pickle: expected True or False, got {trust_pickle!r}")
    check_device(device)
    path = Path(path)
    if not trust_pickle:
        raise UntrustedPickleError(
            f"path: {path} is an NVlabs persistent pickle: it embeds Python source code that loading executes. "
            f"Load it only if you trust where it came from, with trust_pickle=True (CLI: --trust-pickle)")
    if dtype not in (torch.float32, torch.float64):
        raise ModelError(f"dtype: NVlabs networks support torch.float32 or torch.float64, got {dtype}")
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
            root = _RestrictedUnpickler(f, path).load()
    except ModelError:
        raise
    except OSError as exc:
        raise ModelError(f"path: cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # a corrupt or truncated pickle: UnpicklingError, EOFError, ValueError, ...
        raise ModelError(f"path: cannot unpickle {path}: {type(exc).__name__}: {exc}") from None
    rec, key = _select_net(root, path)
    if not isinstance(rec, PersistentRecord):
        raise ModelError(f"path: {path}: {key} is a {type(rec).__name__}, not a persistent NVlabs network")
    with _stubs_installed() as created:
        try:
            net = _Builder(path, created).build(rec)
        except ModelError:
            raise
        except Exception as exc:  # a state the embedded class cannot take
            raise ModelError(f"path: building {rec.class_name} from {path} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(net, torch.nn.Module):
        raise ModelError(f"path: {path}: {key} ({rec.class_name}) is not a torch.nn.Module")
    missing = [a for a in ("img_channels", "img_resolution", "label_dim") if not hasattr(net, a)]
    if missing:
        raise ModelError(f"path: {path}: {key} ({rec.class_name}) lacks {', '.join(missing)}; not an EDM/EDM2 "
                         f"preconditioned network")
    notes = []
    lo, hi, sd = (getattr(net, a, None) for a in ("sigma_min", "sigma_max", "sigma_data"))
    if lo is None or not float(lo) > 0:
        notes.append(f"sigma_min {'not declared' if lo is None else float(lo)}: EDM's default {DEFAULT_SIGMA_MIN}")
        lo = DEFAULT_SIGMA_MIN
    if hi is None or not float(hi) < float("inf"):
        notes.append(f"sigma_max {'not declared' if hi is None else float(hi)}: EDM's default {DEFAULT_SIGMA_MAX}")
        hi = DEFAULT_SIGMA_MAX
    if sd is None:
        notes.append(f"sigma_data not declared: {DEFAULT_SIGMA_DATA}")
        sd = DEFAULT_SIGMA_DATA
    if rec.class_name == "iDDPMPrecond":
        notes.append("iDDPMPrecond rounds sigma to its 1000-level table: D is piecewise constant in sigma, so "
                     "measured convergence orders are meaningless")
    res = int(net.img_resolution)
    description = (f"NVlabs {rec.class_name} ({key}; {sum(p.numel() for p in net.parameters())} parameters), "
                   f"{int(net.img_channels)}x{res}x{res}, label_dim {int(net.label_dim)}"
                   + "".join(f"; {n}" for n in notes))
    init_kwargs = getattr(net, "_init_kwargs", None)
    metadata = {"class_name": rec.class_name, "entry": key, "persistence_version": rec.version,
                "init_kwargs": dict(init_kwargs) if isinstance(init_kwargs, dict) else None, "notes": notes}
    return NVlabsDenoiser(net, sigma_min=float(lo), sigma_max=float(hi), sigma_data=float(sd),
                          shape=(int(net.img_channels), res, res), label_dim=int(net.label_dim),
                          format="nvlabs-pickle", source=str(path), description=description, metadata=metadata,
                          device=device, dtype=dtype)
