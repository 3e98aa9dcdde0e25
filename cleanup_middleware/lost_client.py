"""Tell context managers that the client went away, on uWSGI, where ``close()`` does not show it.

:func:`~cleanup_middleware.enter_context` tells a context manager that the request failed when
the server calls ``close()`` while it handles the error, as gunicorn and cheroot do for a client
that went away. uWSGI notices the failed write, logs ``OSError: write error``, clears it and only
then calls ``close()``, so the context manager is told the request succeeded.

The connection still tells, at that moment: a client that reset it (it went away with the
response unread) leaves the socket in TCP's CLOSE state, which ``poll()`` reports as
``POLLHUP``; a client that read the response and closed its end normally leaves CLOSE_WAIT,
without ``POLLHUP``. :class:`UwsgiLostClient` looks once, when the response closes, and records
a ``ConnectionResetError`` as the request's failure.
"""

from __future__ import annotations

import select
from typing import TYPE_CHECKING

from .cleanup import ENVIRON_KEY, add_cleanup

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .cleanup import ResponseCleanup

__all__ = ["UwsgiLostClient"]


class UwsgiLostClient:
    """On uWSGI, tell ``enter_context`` context managers that the client reset the connection.

    Goes inside :class:`~cleanup_middleware.CleanupMiddleware`. Outside uWSGI it passes every
    request straight through. It registers its check once the application has returned, so that
    the check runs before the hooks registered until then (the last registered runs first): a
    context manager entered while the body is being iterated is not told.

    :param app: the WSGI application.

    Example::

        app = CleanupMiddleware(UwsgiLostClient(app))
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self._connection_fd: Callable[[], int] | None
        try:
            import uwsgi  # type: ignore[import-untyped]  # only inside uWSGI
        except ImportError:
            self._connection_fd = None
        else:
            self._connection_fd = uwsgi.connection_fd

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        body = self.app(environ, start_response)
        if self._connection_fd is not None:
            add_cleanup(environ, _record_reset, environ.get(ENVIRON_KEY), self._connection_fd())
        return body


def _record_reset(cleanup: ResponseCleanup, fd: int) -> None:
    poller = select.poll()
    poller.register(fd, 0)  # POLLHUP is reported whatever the mask
    if poller.poll(0):
        # Where the context managers' exits, which run next, look for the request's failure.
        cleanup.record_failure(
            ConnectionResetError("the client reset the connection before the response was sent")
        )
