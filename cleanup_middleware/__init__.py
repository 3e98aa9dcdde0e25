"""Run per-request cleanup exactly once when a WSGI response closes, keeping ``sendfile()``.

::

    from cleanup_middleware import CleanupMiddleware, add_cleanup

    app = CleanupMiddleware(app)
    add_cleanup(environ, os.unlink, tmp_path)   # in a view: runs once the response is closed

Importing the package needs nothing beyond the standard library, and only what a request
uses: the config names (``Hook``, ``ConfigError``) and ``defer`` are imported on first use,
and the Werkzeug and Flask integrations are the submodules ``response`` and ``flask``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .cleanup import (
    ENVIRON_KEY,
    ResponseCleanup,
    add_cleanup,
    enter_context,
    on_failure,
    on_success,
)
from .middleware import CleanupMiddleware, wrap

if TYPE_CHECKING:
    from .config import ConfigError, Hook
    from .deferred import defer

__all__ = [
    "ENVIRON_KEY",
    "CleanupMiddleware",
    "ConfigError",
    "Hook",
    "ResponseCleanup",
    "add_cleanup",
    "defer",
    "enter_context",
    "on_failure",
    "on_success",
    "wrap",
]
__version__ = "0.1.0"

# Public names imported on first use (PEP 562), with their submodule: the config machinery
# (tomllib, inspect, difflib) and defer()'s thread pool (concurrent.futures) cost more to import
# than the rest of the package, and serving a request needs none of them.
_LAZY = {"ConfigError": "config", "Hook": "config", "defer": "deferred"}

if not TYPE_CHECKING:  # type checkers see the imports above, and no other name

    def __getattr__(name: str) -> object:
        submodule = _LAZY.get(name)
        if submodule is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{submodule}", __name__), name)
        globals()[name] = value  # later lookups find it without calling __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_LAZY})
