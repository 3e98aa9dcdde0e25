"""Make Werkzeug's ``response.call_on_close`` work when ``direct_passthrough`` is on.

``Response.get_app_iter`` hands ``self.response`` to the server untouched when
``direct_passthrough`` is true, the default for ``send_file``. The server then closes that file
wrapper and never the ``Response``, so every ``call_on_close`` callback is dropped. Otherwise it
wraps the body in a ``ClosingIterator`` that calls ``Response.close``, a Python call per chunk.
Behind :class:`~cleanup_middleware.CleanupMiddleware` the mixin registers ``Response.close`` as a
cleanup hook instead, in both cases, and hands the body over without that wrapper: the server
keeps its file wrapper, and a body's chunks pass through no code of ours (a body that is not
passed through still goes through Werkzeug's ``iter_encoded()``, as it does without the mixin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._extras import missing_extra
from .cleanup import ENVIRON_KEY, add_cleanup

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

    Behind :class:`~cleanup_middleware.CleanupMiddleware`, ``Response.close()`` (which closes the
    body again, a no-op for files, and calls the callbacks) runs as a cleanup hook, after the
    body's own ``close()``, and a callback that raises is logged as a failing hook is. The
    server keeps the file wrapper it made, so ``sendfile()`` still happens. Without the
    middleware a passthrough response raises a ``RuntimeError`` that says so rather than
    dropping the callbacks, and any other response is Werkzeug's as it is.

    Example::

        class MyResponse(CleanupResponseMixin, Response):
            pass
    """

    def get_app_iter(self, environ: WSGIEnvironment) -> Iterable[bytes]:
        response: Response = self  # type: ignore[assignment]
        if not response.direct_passthrough and ENVIRON_KEY not in environ:
            return super().get_app_iter(environ)  # type: ignore[misc,no-any-return]
        status = response.status_code
        body: Iterable[bytes]
        if environ["REQUEST_METHOD"] == "HEAD" or 100 <= status < 200 or status in (204, 304):
            body = ()  # no body, as Werkzeug's get_app_iter decides
        elif response.direct_passthrough:
            body = response.response  # type: ignore[assignment]
        else:
            body = response.iter_encoded()
        # Response.close() closes response.response and calls the callbacks: with neither (a
        # list body and no call_on_close, the common case), there is nothing to register.
        if getattr(response, "_on_close", True) or hasattr(response.response, "close"):
            # Raises, naming the middleware, when a passthrough response's application is not
            # wrapped.
            add_cleanup(environ, response.close)
        return body


class CleanupResponse(CleanupResponseMixin, Response):
    """A Werkzeug ``Response`` whose ``call_on_close`` callbacks run in every passthrough mode."""
