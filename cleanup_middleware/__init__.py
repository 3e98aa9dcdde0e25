"""Run per-request cleanup exactly once when a WSGI response closes, keeping ``sendfile()``.

::

    from cleanup_middleware import CleanupMiddleware, add_cleanup

    app = CleanupMiddleware(app)
    add_cleanup(environ, os.unlink, tmp_path)   # in a view: runs once the response is closed
"""

from .cleanup import ENVIRON_KEY, ResponseCleanup, add_cleanup, enter_context
from .cli import ConfigError, Hook, wrap
from .deferred import defer
from .middleware import CleanupMiddleware

__all__ = [
    "ENVIRON_KEY",
    "CleanupMiddleware",
    "ConfigError",
    "Hook",
    "ResponseCleanup",
    "add_cleanup",
    "defer",
    "enter_context",
    "wrap",
]
__version__ = "0.1.0"
