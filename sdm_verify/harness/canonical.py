"""Canonical JSON of the results store: configs, rows and meta values as plain JSON, and a config's key.

A config's key is the sha256 of its canonical JSON (sorted keys, floats written by float.__repr__, the shortest
string that round-trips: equal strings <=> equal floats). Configs, rows and meta values are plain JSON nested at most
MAX_DEPTH levels (deeper ones, and self-containing ones, are refused instead of overflowing the stack); configs may
hold +-inf but not NaN (it never compares equal), rows may hold both; strings must be valid Unicode (no lone
surrogates); objects, arrays and tensors are refused. Every refusal is an InputError naming the argument.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

from ..errors import InputError

__all__ = ["MAX_DEPTH", "config_key", "canonical", "row_json", "plain"]

#: the deepest nesting of dicts and lists a config, row or meta value may have (the sweep's configs have 3 levels)
MAX_DEPTH = 64


def _text(value: str, arg: str, path: str) -> str:
    """value, if it is valid Unicode (a lone surrogate cannot be written as UTF-8: refused)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{arg}: strings must be valid Unicode (a lone surrogate at {path or 'top level'})") from None
    return value


def plain(obj, arg: str, path: str, allow_nan: bool, depth: int = 0):
    """A copy of obj made of dict/list/str/int/float/bool/None only; numpy scalars become Python scalars."""
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):
        return _text(obj, arg, path)
    if isinstance(obj, np.generic):
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            obj = float(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isnan(obj) and not allow_nan:
            raise InputError(f"{arg}: NaN is not allowed (at {path or 'top level'}): it never compares equal")
        return float(obj)
    if isinstance(obj, (dict, list, tuple)) and depth >= MAX_DEPTH:
        raise InputError(f"{arg}: nested deeper than {MAX_DEPTH} levels (at {_short(path)}): flatten it "
                         "(a value that contains itself is refused here too)")
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise InputError(f"{arg}: keys must be strings (got {k!r} at {path or 'top level'})")
            _text(k, arg, path)
            out[k] = plain(v, arg, f"{path}.{k}" if path else k, allow_nan, depth + 1)
        return out
    if isinstance(obj, (list, tuple)):
        return [plain(v, arg, f"{path}[{i}]", allow_nan, depth + 1) for i, v in enumerate(obj)]
    if hasattr(obj, "__array__") or hasattr(obj, "__array_interface__"):
        raise InputError(
            f"{arg}: arrays and tensors are not allowed (got {type(obj).__name__} at {path or 'top level'}); "
            "use lists of numbers, or put_blob for data"
        )
    raise InputError(f"{arg}: {type(obj).__name__} is not JSON-serialisable (at {path or 'top level'})")


def _short(path: str) -> str:
    """A location for a message: long paths (deep nesting) cut to their first and last 40 characters."""
    path = path or "top level"
    return path if len(path) <= 100 else f"{path[:40]}...{path[-40:]}"


def canonical(config: dict) -> tuple[dict, str]:
    """(config as plain JSON values, its canonical JSON text)."""
    if not isinstance(config, dict):
        raise InputError(f"config: must be a dict (got {type(config).__name__})")
    if "key" in config:
        raise InputError("config: the field name 'key' is reserved for the store's key")
    values = plain(config, "config", "", allow_nan=False)
    # json writes floats with float.__repr__, the shortest string that round-trips: equal strings <=> equal floats
    # (1.0 and 1 stay distinct, as do 0.0 and -0.0); infinities are written as Infinity.
    return values, json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def config_key(config: dict) -> str:
    """sha256 (hex) of the canonical JSON of config: sorted keys, no spaces, floats written exactly (repr).

    Tuples hash as lists; int and float stay distinct (1 != 1.0); NaN, non-string keys, arrays and tensors are
    refused with ValueError.
    """
    return hashlib.sha256(canonical(config)[1].encode("utf-8")).hexdigest()


def row_json(row: dict) -> str:
    """A row's JSON text (NaN and +-inf allowed)."""
    if not isinstance(row, dict):
        raise InputError(f"row: must be a dict (got {type(row).__name__})")
    if "key" in row:
        raise InputError("row: the field name 'key' is reserved for the store's key")
    return json.dumps(plain(row, "row", "", allow_nan=True), allow_nan=True)
