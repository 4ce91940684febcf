"""diffusers, the optional dependency of this adapter: imported only when a scheduler is built.

`load_diffusers()` imports it; a missing extra raises `MissingDiffusersError` (an ImportError) whose one-line message
names the install command `INSTALL_HINT`. `quiet()` silences diffusers' logger and its deprecation warnings while a
scheduler is constructed or stepped (the solver records each such message once in its `notes`).
"""

from __future__ import annotations

import contextlib
import logging
import warnings

INSTALL_HINT = "pip install 'sdm-verify[diffusers]'"


class MissingDiffusersError(ImportError):
    """diffusers is not installed."""


def load_diffusers():
    """The `diffusers` module, or MissingDiffusersError naming the install command."""
    try:
        import diffusers
    except ImportError:
        raise MissingDiffusersError(f"diffusers is not installed: {INSTALL_HINT}") from None
    return diffusers


@contextlib.contextmanager
def quiet():
    """Silence diffusers' logger and its deprecation warnings (each message is recorded once in `notes`)."""
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
