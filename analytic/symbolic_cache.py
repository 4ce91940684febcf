"""The cache of symbolic expansions (analytic.symbolic): in process and on disk, keyed by a caller's fingerprint.

An expansion of a high-order rule takes seconds of sympy; the same rule is expanded by the CLI, the report, the
conformance check and several tests. `cached` keeps results in process (a dict) and on disk, one JSON file per entry
under cache_dir(), named by a hash of the caller's fingerprint, the sympy version and the source of
analytic/symbolic.py and of this module (a change to the expansion code is a new entry). Entries are written to a
temporary file and renamed into place (os.replace), so concurrent writers never leave a partial file; a damaged,
unreadable or foreign entry is ignored and computed again; a location that cannot be written disables writing for
the process. Values are plain JSON; sympy expressions are stored as trees of an allow-listed set of classes
(`encode_expr`), never evaluated as code.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import sys
import tempfile
import types
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import sympy

__all__ = ["CACHE_ENV", "cache_dir", "cached", "clear_memo", "code_fingerprint", "encode_expr", "decode_expr"]

#: environment variable: the cache root (entries in $SDM_VERIFY_CACHE/symbolic), or "off" for no disk layer
CACHE_ENV = "SDM_VERIFY_CACHE"
_CACHE_OFF = ("off", "0", "false", "no", "none")
_FORMAT = 1  # the layout of an entry
#: the modules whose source is in every key: a change to either is a new entry
_SOURCES = ("symbolic.py", "symbolic_cache.py")


def _source_digest() -> str | None:
    try:
        digest = hashlib.sha256()
        for name in _SOURCES:  # the expansion code and this cache's layout
            with open(Path(__file__).with_name(name), "rb") as f:
                digest.update(f.read())
        return digest.hexdigest()[:16]
    except (OSError, NameError):  # pragma: no cover - no source (frozen): the disk layer is off
        return None


_SOURCE_DIGEST = _source_digest()
_MEMO: dict[str, object] = {}  # full key -> stored (JSON) value
_UNWRITABLE: set[Path] = set()  # cache folders a write failed in, this process

T = TypeVar("T")


def cache_dir() -> Path | None:
    """The disk layer's folder: $SDM_VERIFY_CACHE/symbolic, else $XDG_CACHE_HOME (or ~/.cache)/sdm-verify/symbolic;
    None when it is off ($SDM_VERIFY_CACHE=off, or no source digest of this module). Created on the first write."""
    if _SOURCE_DIGEST is None:
        return None
    env = os.environ.get(CACHE_ENV, "").strip()
    if env.lower() in _CACHE_OFF:
        return None
    try:
        root = Path(env).expanduser() if env else \
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "sdm-verify"
    except RuntimeError:  # no home folder
        return None
    return root / "symbolic"


def clear_memo() -> None:
    """Forget the in-process layer (the disk layer is kept; delete cache_dir() to clear that)."""
    _MEMO.clear()
    _UNWRITABLE.clear()


def cached(fingerprint: str, compute: Callable[[], T], encode: Callable[[T], object] = lambda v: v,
           decode: Callable[[object], T] = lambda v: v) -> T:
    """compute(), cached in process and on disk under `fingerprint`, a string the caller builds from everything
    the value depends on outside this module (the rule's code, the expansion parameters); the sympy version and
    this module's source are added here. `encode` turns the value into plain JSON, `decode` back; a value that
    cannot be encoded is returned uncached, a stored one that cannot be decoded is computed again."""
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ValueError(f"fingerprint: must be a non-empty string, got {fingerprint!r:.60}")
    key = json.dumps([_FORMAT, fingerprint, sympy.__version__, _SOURCE_DIGEST])
    name = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
    for read in (_MEMO.get, lambda k: _read_entry(name, k)):
        stored = read(key)
        if stored is None:
            continue
        try:
            value = decode(stored)
        except Exception:  # a damaged or foreign entry: computed again
            continue
        _MEMO[key] = stored
        return value
    value = compute()
    try:
        stored = encode(value)
        text = json.dumps({"key": key, "value": stored}, allow_nan=False)
    except (TypeError, ValueError, RecursionError):  # not storable: returned uncached
        return value
    _MEMO[key] = stored
    _write_entry(name, text)
    return value


def _read_entry(name: str, key: str):
    folder = cache_dir()
    if folder is None:
        return None
    try:
        with open(folder / f"{name}.json", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError, RecursionError):  # missing, unreadable, not JSON, not UTF-8
        return None
    if not isinstance(doc, dict) or doc.get("key") != key or "value" not in doc:
        return None
    return doc["value"]


def _write_entry(name: str, text: str) -> None:
    folder = cache_dir()
    if folder is None or folder in _UNWRITABLE:
        return
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, folder / f"{name}.json")
        tmp = None
    except OSError:  # read-only, full, or not a folder: no disk layer for writes in this process
        _UNWRITABLE.add(folder)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


# sympy classes an encoded expression may name (everything a rule's expansion produces; anything else: uncached)
_EXPR_CLASSES = {cls.__name__: cls for cls in (sympy.Add, sympy.Mul, sympy.Pow, sympy.exp, sympy.log, sympy.sin,
                                                sympy.cos, sympy.tan, sympy.Abs, sympy.sign)}
_CONSTANTS = {"pi": sympy.pi, "E": sympy.E, "I": sympy.I, "EulerGamma": sympy.EulerGamma, "Catalan": sympy.Catalan,
              "GoldenRatio": sympy.GoldenRatio}


def encode_expr(expr: sympy.Expr) -> list:
    """expr as a JSON tree of allow-listed classes; TypeError for anything else, or if it does not round-trip."""
    out = _encode_tree(sympy.sympify(expr))
    if decode_expr(out) != expr:
        raise TypeError(f"{expr} does not round-trip")
    return out


def decode_expr(tree) -> sympy.Expr:
    """The expression `encode_expr` encoded (ValueError for a tree it cannot have written)."""
    if not isinstance(tree, list) or not tree or not isinstance(tree[0], str):
        raise ValueError("expr: not an encoded expression")
    tag, *rest = tree
    if tag == "S" and len(rest) == 2 and isinstance(rest[0], str) and isinstance(rest[1], dict) \
            and all(isinstance(v, bool) for v in rest[1].values()):
        return sympy.Symbol(rest[0], **rest[1])
    if tag == "Z" and len(rest) == 1 and isinstance(rest[0], str):
        return sympy.Integer(int(rest[0]))
    if tag == "Q" and len(rest) == 2 and all(isinstance(v, str) for v in rest):
        return sympy.Rational(int(rest[0]), int(rest[1]))
    if tag == "C" and len(rest) == 1 and rest[0] in _CONSTANTS:
        return _CONSTANTS[rest[0]]
    if tag == "F" and len(rest) == 2 and rest[0] in _EXPR_CLASSES and isinstance(rest[1], list):
        return _EXPR_CLASSES[rest[0]](*(decode_expr(a) for a in rest[1]))
    raise ValueError(f"expr: not an encoded expression ({tag!r:.20})")


def _encode_tree(e) -> list:
    if type(e) is sympy.Symbol:
        assumptions = getattr(e, "_assumptions_orig", None)
        if not isinstance(assumptions, dict):
            raise TypeError(f"symbol {e}: its assumptions cannot be read")
        return ["S", e.name, {k: bool(v) for k, v in sorted(assumptions.items())}]
    if isinstance(e, sympy.Integer):
        return ["Z", str(e.p)]
    if isinstance(e, sympy.Rational):
        return ["Q", str(e.p), str(e.q)]
    for name, const in _CONSTANTS.items():
        if e is const:
            return ["C", name]
    name = type(e).__name__
    if _EXPR_CLASSES.get(name) is type(e):
        return ["F", name, [_encode_tree(a) for a in e.args]]
    raise TypeError(f"{type(e).__name__} is not stored in the cache")


def code_fingerprint(*functions) -> str:
    """A digest of the code `functions` run: their bytecode and constants, defaults, closure values and, found by
    name, the simple constants they read as globals and the functions of their own package they call
    (recursively; other functions, classes and modules by name). The Python version is included: bytecode is
    version-specific. It does not see the state of objects they read attributes of (a bound method's `self` is
    named by its class only): fold that into the fingerprint you pass `rule_error`."""
    digest = hashlib.sha256(repr(sys.version_info[:2]).encode())
    seen: set[int] = set()
    packages = {getattr(_unwrap(f), "__module__", None) or "" for f in functions}
    packages = {p.split(".")[0] for p in packages}

    def feed(*parts) -> None:
        for p in parts:
            digest.update(repr(p).encode("utf-8", "backslashreplace"))
            digest.update(b"\0")

    def code(co, glb) -> None:
        feed("code", co.co_name, co.co_code, co.co_names, co.co_varnames, co.co_freevars, co.co_argcount,
             co.co_kwonlyargcount, co.co_flags & 0xF)
        for c in co.co_consts:
            if inspect.iscode(c):
                code(c, glb)
            else:
                value(c)
        for n in co.co_names:
            if n in glb:
                feed("global", n)
                value(glb[n])

    def value(v) -> None:
        if inspect.ismethod(v):
            feed("method", type(v.__self__).__module__, type(v.__self__).__qualname__)
            value(v.__func__)
        elif isinstance(v, functools.partial):
            feed("partial")
            value(v.func)
            for a in (*v.args, *sorted(v.keywords.items())):
                value(a)
        elif inspect.isfunction(v):
            if id(v) in seen or (v.__module__ or "").split(".")[0] not in packages:  # others: by name
                feed("function", v.__module__, v.__qualname__)
                return
            seen.add(id(v))
            feed("function", v.__module__, v.__qualname__)
            code(v.__code__, v.__globals__)
            for d in (*(v.__defaults__ or ()), *sorted((v.__kwdefaults__ or {}).items())):
                value(d)
            for cell in v.__closure__ or ():
                try:
                    value(cell.cell_contents)
                except ValueError:  # an empty cell
                    feed("empty")
        elif v is None or isinstance(v, (bool, int, float, complex, str, bytes, Fraction, sympy.Basic)):
            feed(type(v).__name__, sympy.srepr(v) if isinstance(v, sympy.Basic) else v)
        elif isinstance(v, (tuple, list, frozenset)):
            feed(type(v).__name__, len(v))
            for a in sorted(v, key=repr) if isinstance(v, frozenset) else v:
                value(a)
        elif isinstance(v, (types.ModuleType, type)) or callable(v):
            feed(type(v).__name__, getattr(v, "__module__", None), getattr(v, "__qualname__", getattr(v, "__name__",
                                                                                                     None)))
        else:
            feed("object", type(v).__module__, type(v).__qualname__)

    for fn in functions:
        value(fn)
    return digest.hexdigest()


def _unwrap(fn):
    while True:
        if inspect.ismethod(fn):
            fn = fn.__func__
        elif isinstance(fn, functools.partial):
            fn = fn.func
        else:
            return fn


