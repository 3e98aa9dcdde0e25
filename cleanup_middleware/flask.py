"""One line of setup for Flask: ``call_on_close`` and cleanup hooks in every response.

:func:`init_app` wraps ``app.wsgi_app`` in :class:`~cleanup_middleware.CleanupMiddleware`, mixes
:class:`~cleanup_middleware.response.CleanupResponseMixin` into ``app.response_class`` (so
``send_file`` responses keep their ``call_on_close`` callbacks and their ``sendfile()``), and
tells context managers entered with :func:`~cleanup_middleware.enter_context` about an
exception that escaped a view, also when an error handler or Flask turned it into a response.

An application may set ``app.response_class`` after :func:`init_app` (an extension, a factory
that configures it later), which would drop ``call_on_close`` for ``send_file`` again; so the
class is checked as each request starts, and a new one gets the mixin then (one ``issubclass``
test per request otherwise). Flask converts every response a view returns to that class.

What :func:`init_app` sets on the app refers to the app only weakly: a strong reference would
make a reference cycle, and an app that test suites make per test would then live on until the
garbage collector ran (Flask tests that an app is freed when its last reference goes).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ._extras import missing_extra
from .cleanup import ENVIRON_KEY
from .cleanup import on_failure as on_failure_for_environ
from .cleanup import on_success as on_success_for_environ
from .deferred import defer as defer_for_environ
from .middleware import CleanupMiddleware

try:
    from flask import Flask, got_request_exception, request
except ImportError as exc:
    raise missing_extra(__name__, "flask", exc) from exc

# After Flask: without it, the extra to name is [flask], not the [werkzeug] it includes.
from werkzeug.wrappers import Response

from .response import CleanupResponseMixin

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from .cleanup import ResponseCleanup

__all__ = ["defer", "init_app", "on_failure", "on_success"]

_R = TypeVar("_R", bound=Response)


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
    _mix_into_response_class(app)
    if not isinstance(app.wsgi_app, CleanupMiddleware):
        app.wsgi_app = CleanupMiddleware(  # type: ignore[method-assign]
            _MixingResponseClass(app), **options
        )
    if not isinstance(app.handle_user_exception, _RecordingFailures):
        app.handle_user_exception = _RecordingFailures(app)  # type: ignore[method-assign,assignment]
    # Errors outside the view (after_request functions, say) reach Flask's handle_exception.
    got_request_exception.connect(_record_failure, app)
    return app


def _mix_into_response_class(app: Flask) -> None:
    if not issubclass(app.response_class, CleanupResponseMixin):
        app.response_class = _with_cleanup(app.response_class)


def _weak_method(app: Flask, name: str) -> tuple[weakref.ref[Flask], Callable[..., Any]]:
    """A weak reference to ``app`` and what to call with the app to run ``app.<name>``.

    For the app's own method, its function; for anything set on the app before (a middleware
    in ``app.wsgi_app``), that object, called without the app: it holds what it held before.
    """
    method = getattr(app, name)
    if getattr(method, "__self__", None) is app:
        function: Callable[..., Any] = method.__func__
    else:
        function = partial(_without_app, method)
    return weakref.ref(app), function


def _without_app(method: Callable[..., Any], app: Flask, *args: Any) -> Any:
    return method(*args)


def _freed(call: str) -> RuntimeError:
    return RuntimeError(
        f"{call} was called after its Flask app was freed: init_app() holds the app weakly; "
        "serve the app object itself, or keep a reference to it"
    )


class _MixingResponseClass:
    """Flask's ``wsgi_app``, run once ``app.response_class`` has the mixin, whenever it was set."""

    __slots__ = ("app_ref", "wsgi_app")

    def __init__(self, flask_app: Flask) -> None:
        self.app_ref, self.wsgi_app = _weak_method(flask_app, "wsgi_app")

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        # _mix_into_response_class(), inlined: this runs for every request.
        app = self.app_ref()
        if app is None:
            raise _freed("app.wsgi_app")
        if not issubclass(app.response_class, CleanupResponseMixin):
            app.response_class = _with_cleanup(app.response_class)
        return self.wsgi_app(app, environ, start_response)  # type: ignore[no-any-return]


# One mixed class per response class, made when first needed.
_mixed_classes: dict[type[Response], type[Response]] = {}


def _with_cleanup(base: type[_R]) -> type[_R]:
    """``base`` with :class:`CleanupResponseMixin` mixed in."""
    mixed = _mixed_classes.get(base)
    if mixed is None:
        # setdefault: two threads making the first at once end up with the same class.
        mixed = _mixed_classes.setdefault(
            base, type(base.__name__, (CleanupResponseMixin, base), {})
        )
    return mixed  # type: ignore[return-value]


class _RecordingFailures:
    """``Flask.handle_user_exception``, which every exception escaping a view passes, recording.

    An error handler may turn the exception into a response; the request failed all the same,
    as Django's ``ATOMIC_REQUESTS`` counts it. Raised ``HTTPException`` errors (``abort(404)``)
    count too: they were raised, not returned.
    """

    __slots__ = ("app_ref", "handle_user_exception")

    def __init__(self, flask_app: Flask) -> None:
        self.app_ref, self.handle_user_exception = _weak_method(flask_app, "handle_user_exception")

    def __call__(self, exception: Exception) -> Any:
        app = self.app_ref()
        if app is None:
            raise _freed("app.handle_user_exception")
        _record_failure(None, exception)
        return self.handle_user_exception(app, exception)


def _record_failure(sender: object, exception: BaseException, **extra: Any) -> None:
    # Flask answers with an error page instead of raising, so the middleware would not learn
    # that the request failed.
    cleanup: ResponseCleanup | None = request.environ.get(ENVIRON_KEY)
    if cleanup is not None:
        cleanup.record_failure(exception)


def defer(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
    """Run ``fn(*args, **kwargs)`` in the executor once the current request's response closed.

    :func:`cleanup_middleware.defer` for the Flask request being handled (the app must be set
    up with :func:`init_app`); the executor is ``init_app(app, executor=...)``'s.

    Example::

        @app.post("/orders")
        def order():
            cleanup_middleware.flask.defer(send_receipt, request.form["email"])
            return "ordered"
    """
    defer_for_environ(request.environ, fn, *args, **kwargs)


def on_success(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
    """Run ``fn(*args, **kwargs)`` at close only if the current request succeeded.

    :func:`cleanup_middleware.on_success` for the Flask request being handled (the app must be
    set up with :func:`init_app`): an exception that escaped the view counts as a failure also
    when an error handler answered it.

    Example::

        @app.post("/orders")
        def order():
            order_id = save_order(request.form)
            cleanup_middleware.flask.on_success(queue.enqueue, send_receipt, order_id)
            return "ordered"
    """
    on_success_for_environ(request.environ, fn, *args, **kwargs)


def on_failure(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
    """Run ``fn(*args, **kwargs)`` at close only if the current request failed.

    :func:`cleanup_middleware.on_failure` for the Flask request being handled.

    Example::

        cleanup_middleware.flask.on_failure(os.unlink, upload_path)
    """
    on_failure_for_environ(request.environ, fn, *args, **kwargs)
