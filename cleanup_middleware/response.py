"""Make Werkzeug's ``response.call_on_close`` work when ``direct_passthrough`` is on.

``Response.get_app_iter`` hands ``self.response`` to the server untouched when
``direct_passthrough`` is true, the default for ``send_file``. The server then closes that file
wrapper and never the ``Response``, so every ``call_on_close`` callback is dropped. The mixin
registers ``Response.close`` with :class:`~cleanup_middleware.CleanupMiddleware` in exactly that
case; in every other case Werkzeug's own ``ClosingIterator`` already calls it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._extras import missing_extra
from .cleanup import add_cleanup

try:
    from werkzeug.wrappers import Response
except ImportError as exc:
    raise missing_extra(__name__, "werkzeug", exc) from exc

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["CleanupResponse", "CleanupResponseMixin"]


class CleanupResponseMixin:
    """Mix into a Werkzeug ``Response`` class so ``call_on_close`` runs in every mode.

    The application must be wrapped in :class:`~cleanup_middleware.CleanupMiddleware`; without
    it a passthrough response raises a ``RuntimeError`` that says so rather than dropping the
    callbacks. The server keeps the file wrapper it made, so ``sendfile()`` still happens. The
    body is closed first and then ``Response.close()`` runs, which closes it again (a no-op for
    files) and calls the callbacks.

    Example::

        class MyResponse(CleanupResponseMixin, Response):
            pass
    """

    def get_app_iter(self, environ: WSGIEnvironment) -> Iterable[bytes]:
        app_iter: Iterable[bytes] = super().get_app_iter(environ)  # type: ignore[misc]
        response: Response = self  # type: ignore[assignment]
        if app_iter is response.response:
            # Werkzeug returned the body untouched (direct passthrough): nothing will call
            # Response.close() unless we do.
            add_cleanup(environ, response.close)
        return app_iter


class CleanupResponse(CleanupResponseMixin, Response):
    """A Werkzeug ``Response`` whose ``call_on_close`` callbacks run in every passthrough mode."""
