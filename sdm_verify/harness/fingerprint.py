"""Code fingerprints: which code computed a stored number.

A stored cell is keyed by its configuration and by the fingerprint of the code that computed it (`Part`s, built by
`sdm_verify.harness.sweep.code_for`), so a change to that code computes the cell again:

    solver    the modules of the solver class's MRO, and every module they import within their package and the base
              modules (`sdm_verify.errors`, `sdm_verify.grid`): for a registered solver its family module, the solver
              base, the registry, and any sibling it imports (e.g. DEIS's history helpers for iPNDM)
    schedule  the schedule function's module, the schedule registry, and their imports within `sdm_verify.schedules`,
              the function's own package, the base modules and `analytic`
    harness   the modules that run and measure a cell (HARNESS_MODULES) and their imports within `sdm_verify.harness`
              and the base modules; bookkeeping modules that only store or show numbers are left out (BOOKKEEPING)
    oracle    the `analytic` modules those import (the exact laws, reference flows and W2)
plus the versions of torch, numpy, scipy (the oracle's quadrature and reference ODE solves) and sdm_verify.
`class_part` and `modules_part` fingerprint other code the same way: the real-model harness keys its rows with its own
modules, the model's class, the solver and the schedule (sdm_verify.real.harness).

Imports are read from the syntax tree (function-local ones included), never by importing. A file's digest is the
sha256 of its syntax tree (`ast.dump`) with docstrings removed: comments, docstrings and layout do not count, every
change to code does. A part's digest is the sha256 of its (path, file digest) pairs, paths relative to the folder
holding the top-level package, so a copy of the package elsewhere has the same fingerprint. Digests are cached per
process: a file is read once.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import os
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy
import scipy
import torch

from ..errors import InputError

__all__ = ["BASE_MODULES", "BOOKKEEPING", "HARNESS_MODULES", "Part", "class_part", "file_digest", "harness_parts",
           "module_file", "modules_part", "schedule_part", "solver_part", "versions"]

#: the tiny modules every layer may import
BASE_MODULES = ("sdm_verify.errors", "sdm_verify.grid")
#: the modules that run and measure one cell (the sweep, one measure-run, meters, targets, NFE counting)
HARNESS_MODULES = ("sdm_verify.harness.sweep", "sdm_verify.harness.run", "sdm_verify.harness.meters",
                   "sdm_verify.harness.targets", "sdm_verify.harness.nfe")
#: harness modules that store, fingerprint or show numbers and never compute one: not part of any fingerprint
BOOKKEEPING = frozenset({"sdm_verify.harness.store", "sdm_verify.harness.fingerprint",
                         "sdm_verify.harness.progress"})
DIGEST_CHARS = 16  # 64 bits: a name for a version of some code, not a security boundary


@dataclass(frozen=True)
class Part:
    """One part of a fingerprint: its digest and the files it covers, {relative path: file digest}."""

    name: str
    digest: str
    files: tuple[tuple[str, str], ...]

    def manifest(self) -> dict:
        return {"part": self.name, "files": dict(self.files)}


# ---------------------------------------------------------------- files


def _name(value, arg: str) -> str:
    """value, if it is a dotted module name (or a part name): a non-empty str without spaces."""
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise InputError(f"{arg}: must be a non-empty name without spaces (got {value!r})")
    return value


def _names(value, arg: str) -> tuple[str, ...]:
    """value as a tuple of module names (a single str is refused: it would be read as its characters)."""
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise InputError(f"{arg}: must be a tuple of module names (got {type(value).__name__})")
    return tuple(_name(v, arg) for v in value)


def module_file(name: str) -> tuple[Path, str] | None:
    """(source file, path relative to the folder holding its top-level package) of module `name`, or None if it
    has no Python source. Found without importing `name` itself (its top-level package is imported)."""
    _name(name, "name")
    mod = sys.modules.get(name)
    path = getattr(mod, "__file__", None) if mod is not None else None
    top = name.split(".")[0]
    try:
        top_mod = sys.modules.get(top) or importlib.import_module(top)
    except ImportError:
        return None
    top_file = getattr(top_mod, "__file__", None)
    if top_file is None:
        return None
    top_path = Path(top_file)
    root = top_path.parent.parent if top_path.name == "__init__.py" else top_path.parent
    if path is None:
        if top_path.name != "__init__.py":  # a top-level module has no submodules
            return None
        p = top_path.parent.joinpath(*name.split(".")[1:])
        path = p / "__init__.py" if (p / "__init__.py").is_file() else p.with_suffix(".py")
    path = Path(path)
    if path.suffix != ".py" or not path.is_file():
        return None
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = path.name
    return path, rel


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@cache
def _parsed(path: Path) -> tuple[str, ast.AST]:
    tree = _strip_docstrings(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return hashlib.sha256(ast.dump(tree).encode("utf-8")).hexdigest(), tree


def file_digest(path) -> str:
    """sha256 of the file's syntax tree without docstrings (comments and layout never reach the tree)."""
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes) or not os.fspath(path):
        raise InputError(f"path: must be a Python source file path (got {path!r})")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"path: no such file {p}")
    try:
        return _parsed(p)[0]
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise InputError(f"path: {p} is not Python source ({type(exc).__name__}: {exc})") from None


def _imports(name: str, path: Path, scope) -> set[str]:
    """Module names within `scope` imported anywhere in the file of module `name` (relative imports resolved;
    `from P import x` gives P.x where that is a module, else P)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(_parsed(path)[1]):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if _in(alias.name, scope))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if _in(sub, scope) and module_file(sub) is not None:
                    out.add(sub)
                elif _in(base, scope):
                    out.add(base)
    return out


def _in(name: str, scope) -> bool:
    return any(name == s or name.startswith(s + ".") for s in scope)


def _closure(starts, scope) -> dict[str, tuple[str, str]]:
    """{module: (relative path, file digest)} of `starts` and every module they import, transitively, within
    `scope` (package prefixes), bookkeeping modules left out."""
    seen: dict[str, tuple[str, str]] = {}
    todo = [s for s in starts if s not in BOOKKEEPING]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        found = module_file(name)
        if found is None:
            continue
        path, rel = found
        seen[name] = (rel, file_digest(path))
        todo.extend(m for m in _imports(name, path, scope) if m not in seen and m not in BOOKKEEPING)
    return seen


def _part(name: str, modules: dict[str, tuple[str, str]]) -> Part:
    files = tuple(sorted(set(modules.values())))
    h = hashlib.sha256("\n".join(f"{rel} {digest}" for rel, digest in files).encode("utf-8"))
    return Part(name, h.hexdigest()[:DIGEST_CHARS], files)


def _package(module: str) -> str:
    return module.rsplit(".", 1)[0] if "." in module else module


# ---------------------------------------------------------------- the parts


def class_part(name: str, cls: type) -> Part:
    """The code of a class: the modules of its MRO (within sdm_verify and analytic, and the class's own module
    wherever it is) and their imports within their packages and the base modules."""
    _name(name, "name")
    if not isinstance(cls, type):
        raise InputError(f"cls: must be a class (got an instance of {type(cls).__name__}; pass type(obj))")
    return _class_part(name, cls)


@cache
def _class_part(name: str, cls: type) -> Part:
    starts = [c.__module__ for c in cls.__mro__
              if c.__module__ == cls.__module__ or _in(c.__module__, ("sdm_verify", "analytic"))]
    starts = list(dict.fromkeys(s for s in starts if s != "builtins"))
    scope = tuple({_package(s) for s in starts}) + BASE_MODULES
    return _part(name, _closure(starts, scope))


def solver_part(cls: type) -> Part:
    """The solver's code (class_part of its class)."""
    return class_part("solver", cls)


def modules_part(name: str, starts: tuple[str, ...], scope: tuple[str, ...]) -> Part:
    """The code of modules `starts` and their imports within `scope` (package prefixes)."""
    return _modules_part(_name(name, "name"), _names(starts, "starts"), _names(scope, "scope"))


@cache
def _modules_part(name: str, starts: tuple[str, ...], scope: tuple[str, ...]) -> Part:
    return _part(name, _closure(starts, scope))


def schedule_part(module: str) -> Part:
    """The schedule's code: the module defining its function, the schedule registry, and their imports."""
    return _schedule_part(_name(module, "module"))


@cache
def _schedule_part(module: str) -> Part:
    starts = [module, "sdm_verify.schedules.registry"]
    scope = ("sdm_verify.schedules", _package(module), "analytic") + BASE_MODULES
    return _part("schedule", _closure(starts, scope))


@cache
def harness_parts() -> tuple[Part, Part]:
    """(harness, oracle): the modules that run and measure a cell, and the analytic modules they import."""
    found = _closure(HARNESS_MODULES, ("sdm_verify.harness", "analytic") + BASE_MODULES)
    oracle = {m: v for m, v in found.items() if _in(m, ("analytic",))}
    harness = {m: v for m, v in found.items() if m not in oracle}
    return _part("harness", harness), _part("oracle", oracle)


@cache
def versions() -> dict[str, str]:
    """Versions of torch, numpy, scipy and of the running sdm_verify (its __version__, not the installed one)."""
    return {"torch": str(torch.__version__), "numpy": numpy.__version__, "scipy": scipy.__version__,
            "sdm_verify": str(getattr(importlib.import_module("sdm_verify"), "__version__", "unknown"))}
