"""The kind a keyword's value must have, read off its default: shared by the diffusers and k-diffusion adapters, so
that a config value of the wrong type is refused when the solver is built, not met in the middle of a run."""

from __future__ import annotations

import inspect

__all__ = ["wrong_kind"]


def wrong_kind(value, default, *, integer: bool = False) -> str | None:
    """The kind `value` should have ("True or False", "an integer", "a number", "a string") if it is not of
    `default`'s kind, else None. A number must not be NaN; `integer`: an int default asks for an int (not any
    number). A default of None, no default, or another type says nothing (None)."""
    if default is None or default is inspect.Parameter.empty:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "True or False"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int) and integer:
        return None if number and isinstance(value, int) else "an integer"
    if isinstance(default, (int, float)):
        return None if number and value == value else "a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    return None
