"""One line of setup for Flask: ``call_on_close`` and cleanup hooks in every response.

:func:`init_app` wraps ``app.wsgi_app`` in :class:`~cleanup_middleware.CleanupMiddleware`, mixes
:class:`~cleanup_middleware.response.CleanupResponseMixin` into ``app.response_class`` (so
``send_file`` responses keep their ``call_on_close`` callbacks and their ``sendfile()``), and
tells context managers entered with :func:`~cleanup_middleware.enter_context` about an
exception that Flask turned into an error page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._extras import missing_extra
from .cleanup import ENVIRON_KEY
from .middleware import CleanupMiddleware

try:
    from flask import Flask, got_request_exception, request
except ImportError as exc:
    raise missing_extra(__name__, "flask", exc) from exc

# After Flask: without it, the extra to name is [flask], not the [werkzeug] it includes.
from .response import CleanupResponseMixin

if TYPE_CHECKING:
    from .cleanup import ResponseCleanup

__all__ = ["init_app"]


def init_app(app: Flask, **options: Any) -> Flask:
    """Set up ``app`` so that cleanup runs after every response, ``send_file`` included.

    ``options`` go to :class:`~cleanup_middleware.CleanupMiddleware`. Calling it again on the
    same app changes nothing. Returns ``app``.

    Example::

        app = Flask(__name__)
        cleanup_middleware.flask.init_app(app)

        @app.get("/report")
        def report():
            path = make_report()
            response = send_file(path)
            response.call_on_close(lambda: os.unlink(path))
            return response
    """
    if not issubclass(app.response_class, CleanupResponseMixin):
        base = app.response_class
        app.response_class = type(base.__name__, (CleanupResponseMixin, base), {})
    if not isinstance(app.wsgi_app, CleanupMiddleware):
        app.wsgi_app = CleanupMiddleware(app.wsgi_app, **options)  # type: ignore[method-assign]
    got_request_exception.connect(_record_failure, app)
    return app


def _record_failure(sender: Flask, exception: BaseException, **extra: Any) -> None:
    # Flask answers with an error page instead of raising, so the middleware would not learn
    # that the request failed.
    cleanup: ResponseCleanup | None = request.environ.get(ENVIRON_KEY)
    if cleanup is not None:
        cleanup.record_failure(exception)
