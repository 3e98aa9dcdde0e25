"""Django: a registry of hooks for requests that did not pass through the WSGI wrapper.

The recipe wraps the project's WSGI application in ``wsgi.py``. Django's test ``Client`` calls
Django's handler directly, and so do a ``RequestFactory`` request sent through the handler and
``manage.py runserver`` serving an application that is not the wrapped one: their requests
never pass the wrapper, and ``add_cleanup(request.environ, ...)`` in a view raises. Put
:class:`CleanupMiddleware` first in ``settings.MIDDLEWARE`` as well:

* a request that did not pass through the wrapper gets a registry, which the response's
  ``close()`` closes, as Django closes its own resources: the server calls it (through the
  response's file wrapper, so ``sendfile()`` stays), and the test client calls it once the
  response is finished (for a streaming response, once the test has read its content);
* a request that did is left to the wrapper: each hook runs once, after the server has sent the
  body, and file responses keep ``sendfile()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._extras import missing_extra
from .cleanup import ENVIRON_KEY
from .middleware import CleanupMiddleware as WSGICleanupMiddleware

try:
    import django  # type: ignore[import-untyped]  # noqa: F401  (to name the extra if missing)
except ImportError as exc:
    raise missing_extra(__name__, "django", exc) from exc

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["CleanupMiddleware"]

# The request on its way into the rest of Django's middleware chain, and its response on the
# way out: in the environ only while the chain runs.
_REQUEST_KEY = "cleanup_middleware.django.request"
_RESPONSE_KEY = "cleanup_middleware.django.response"


def _start_response(
    status: str, headers: list[tuple[str, str]], exc_info: Any = None, /
) -> Callable[[bytes], object]:
    """Never called: ``_respond`` hands Django's response object back, not WSGI headers."""
    raise NotImplementedError


class CleanupMiddleware:
    """Django middleware: ``add_cleanup(request.environ, ...)`` in every request it handles.

    Put it first in ``settings.MIDDLEWARE``, and keep the WSGI wrapper in ``wsgi.py``. A
    request that did not pass through the wrapper runs the rest of the middleware chain inside
    a :class:`cleanup_middleware.CleanupMiddleware` (so it gets the same registry, with the
    hooks of ``$CLEANUP_MIDDLEWARE_CONFIG`` if set), whose body the response's ``close()``
    closes as a server would. WSGI only: an ASGI request has no environ and passes through.

    :param get_response: the rest of Django's middleware chain (Django passes it).

    Example::

        MIDDLEWARE = [
            "cleanup_middleware.django.CleanupMiddleware",
            "django.middleware.common.CommonMiddleware",
        ]
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._wsgi = WSGICleanupMiddleware(self._respond)

    def __call__(self, request: Any) -> Any:
        environ: WSGIEnvironment | None = getattr(request, "environ", None)
        if environ is None or ENVIRON_KEY in environ:
            # ASGI, or the WSGI wrapper owns the request and closes it after the server's send.
            return self.get_response(request)
        environ[_REQUEST_KEY] = request
        body = self._wsgi(environ, _start_response)
        response = environ.pop(_RESPONSE_KEY)
        # Django's response.close() calls these (and swallows their Exceptions, which close()
        # raises only for on_hook_error="raise"; hook failures are logged either way).
        response._resource_closers.append(body.close)  # type: ignore[attr-defined]
        return response

    def _respond(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The rest of the chain as a WSGI application whose body is empty."""
        environ[_RESPONSE_KEY] = self.get_response(environ.pop(_REQUEST_KEY))
        return ()
