"""Run per-request cleanup once the response is finished, without losing ``sendfile()``.

The WSGI way to learn that a response is finished is the server's call to ``close()`` on the
body. Werkzeug drops ``response.call_on_close`` callbacks when ``direct_passthrough`` is on (the
default for ``send_file``), and the usual ways of wrapping a body (``ClosingIterator``, a
generator, a proxy class) hide the server's ``wsgi.file_wrapper`` object, so the server stops
sending files with ``sendfile()``. :class:`CleanupMiddleware` gives each request a registry of
cleanup hooks and binds it to the body's ``close()`` in a way that keeps both.
"""

from __future__ import annotations

import os
from contextlib import suppress
from typing import TYPE_CHECKING, Literal

from . import cleanup as _cleanup
from .cleanup import (
    ENVIRON_KEY,
    RaisingResponseCleanup,
    ResponseCleanup,
    _entered,
    _is_threshold,
    _Observer,
    _Watcher,
)
from .files import (
    FILE_WRAPPER_KEY,
    WAITRESS_CHANNEL_KEY,
    FileWrapperSubstitute,
    close_off_loop,
    needs_substitute,
    serve_app_file,
)
from .reporting import describe_request, hook_name, logger

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from concurrent.futures import Executor

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .config import Hook, _Compiled

# config.ENV_VAR, which config.configure() reads when given neither a file nor hooks. Named here
# so that without any configuration the config machinery (tomllib, inspect, difflib) is never
# imported; tests/test_imports.py checks that the two names agree.
CONFIG_ENV_VAR = "CLEANUP_MIDDLEWARE_CONFIG"

__all__ = ["CleanupMiddleware", "wrap"]

# cleanup._observing, kept up to date here by cleanup._set_observers for each request's test.
_observing = _cleanup._observing


def _set_observing(observing: bool) -> None:
    global _observing
    _observing = observing


_cleanup._observing_listeners.append(_set_observing)


class CleanupMiddleware:
    """Run the cleanup hooks of each request exactly once, when the server closes the response.

    Hooks are registered during the request with :func:`~cleanup_middleware.add_cleanup` and
    :func:`~cleanup_middleware.enter_context`. They run after the body's own ``close()``,
    last-registered-first, whatever the application returned: a list, a generator, any
    iterable, or the server's ``wsgi.file_wrapper`` object, which goes back to the server
    unchanged so that it can still use ``sendfile()``. If the application raises, the hooks
    registered so far run and the exception propagates unchanged.

    Nesting the middleware in itself is harmless: the outermost one owns the request and the
    inner ones pass it straight through, adding their config hooks (each hook once) to its.

    :param app: the WSGI application to wrap.
    :param on_hook_error: ``"log"`` (the default) logs a failing hook on the
        ``cleanup_middleware`` logger, with the request method and path, and carries on;
        ``"raise"`` also raises it from ``close()`` after every hook ran, which is meant for
        tests. When not given, the config file's ``on-hook-error`` applies.
    :param config: a TOML file (or ``pyproject.toml``) of hooks for every request; see
        :mod:`cleanup_middleware.config`. With neither ``config`` nor ``hooks``, the file named
        by ``$CLEANUP_MIDDLEWARE_CONFIG``, if set.
    :param hooks: :class:`~cleanup_middleware.Hook` objects, the same in code; they come after
        the file's. Both are checked and imported here: a mistake raises
        :class:`~cleanup_middleware.ConfigError`.
    :param executor: the :class:`concurrent.futures.Executor` that runs the functions given to
        :func:`~cleanup_middleware.defer`; when not given, the config file's ``executor``, else
        the process's :class:`~cleanup_middleware.deferred.DeferredPool`. In nested
        middleware, the outermost one's applies.
    :param slow_hook_seconds: a hook or deferred function that runs longer than this many
        seconds logs a WARNING with its name, its duration and the request's method and path;
        when not given, the config file's ``slow-hook-seconds``, else no such warning. In nested
        middleware, the outermost one's applies.

    Example::

        from cleanup_middleware import CleanupMiddleware, add_cleanup

        def app(environ, start_response):
            path = make_report()
            add_cleanup(environ, os.unlink, path)
            start_response("200 OK", [("Content-Type", "application/pdf")])
            return environ["wsgi.file_wrapper"](open(path, "rb"))

        app = CleanupMiddleware(app)
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        on_hook_error: Literal["log", "raise"] | None = None,
        config: str | os.PathLike[str] | None = None,
        hooks: Sequence[Hook] | None = None,
        executor: Executor | None = None,
        slow_hook_seconds: float | None = None,
    ) -> None:
        config_executor: Executor | None = None
        if config is None and hooks is None and not os.environ.get(CONFIG_ENV_VAR):
            # Nothing to configure.
            self._hooks: tuple[_Compiled, ...] = ()
        else:
            from .config import configure, register

            settings = configure(config, hooks)
            # The checked config hooks, registered on every request by config.register().
            self._hooks = settings.compiled
            self._register = register
            config_executor = settings.executor
            if on_hook_error is None:
                on_hook_error = settings.on_hook_error
            if slow_hook_seconds is None:
                slow_hook_seconds = settings.slow_hook_seconds
        if on_hook_error is None:
            on_hook_error = "log"
        if on_hook_error not in ("log", "raise"):
            raise ValueError(
                f"CleanupMiddleware(on_hook_error={on_hook_error!r}): use 'log' or 'raise'"
            )
        self.app = app
        self.on_hook_error = on_hook_error
        cleanup_class: type[ResponseCleanup] = (
            RaisingResponseCleanup if on_hook_error == "raise" else ResponseCleanup
        )
        if executor is not None:
            from concurrent.futures import Executor  # only then: it imports threading and more

            if not isinstance(executor, Executor):
                raise TypeError(
                    f"CleanupMiddleware(executor={executor!r}): give a concurrent.futures."
                    "Executor object, such as ThreadPoolExecutor(max_workers=8) or DeferredPool()"
                )
        self.executor = executor if executor is not None else config_executor
        if slow_hook_seconds is not None and not _is_threshold(slow_hook_seconds):
            raise ValueError(
                f"CleanupMiddleware(slow_hook_seconds={slow_hook_seconds!r}): give a number of "
                "seconds above 0, such as 0.5, or None (the default) for no slow-hook warning"
            )
        self.slow_hook_seconds = slow_hook_seconds
        # Held by the class, not by each request's object: a request pays nothing for them.
        held: dict[str, object] = {}
        if self.executor is not None:
            held["executor"] = self.executor
        if slow_hook_seconds is not None:
            held["_own_observers"] = (*cleanup_class._own_observers, _SlowHooks(slow_hook_seconds))
        if held:
            held["__slots__"] = ()
            cleanup_class = type(cleanup_class.__name__, (cleanup_class,), held)
        self._cleanup_class = cleanup_class
        # Whether each request's wsgi.file_wrapper is to be judged (files.needs_substitute):
        # until the server's is seen to need no substitute, as on gunicorn-like servers.
        self._judge_file_wrapper = True
        # Whether a request has anything to do before the application (_prepare): one attribute
        # test a request for config hooks and judging together.
        self._prepares = True

    def _judge(self, judge: bool) -> None:
        """Judge each request's ``wsgi.file_wrapper`` from now on, or stop judging."""
        self._judge_file_wrapper = judge
        self._prepares = judge or bool(self._hooks)

    def _prepare(self, environ: WSGIEnvironment) -> FileWrapperSubstitute | None:
        """Register the config hooks and stand in for the server's file wrapper, if need be."""
        if self._hooks:
            self._register(self._hooks, environ)
        if self._judge_file_wrapper:
            return self._substitute(environ)
        return None

    def _substitute(self, environ: WSGIEnvironment) -> FileWrapperSubstitute | None:
        """Stand in for the server's file wrapper in ``environ`` if its objects need it."""
        file_wrapper = environ.get(FILE_WRAPPER_KEY)
        if file_wrapper is None or not needs_substitute(file_wrapper):
            # None, a Python class, or uWSGI's function once seen to return the file itself:
            # this server's requests need no judging.
            self._judge(False)
            return None
        substitute = environ[FILE_WRAPPER_KEY] = FileWrapperSubstitute(file_wrapper)
        return substitute

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if ENVIRON_KEY in environ:
            # An outer CleanupMiddleware owns this request and will close it.
            if self._hooks:
                self._register(self._hooks, environ)
            return self.app(environ, start_response)
        # Built without __init__ and filled in here: this is the per-request cost of the library.
        # (Attributes called through a local: Python 3.11 does not specialise self.attr().)
        cleanup_class, app = self._cleanup_class, self.app
        cleanup = environ[ENVIRON_KEY] = cleanup_class()
        cleanup._environ = environ
        cleanup._hooks = []
        if _observing:
            _entered(cleanup_class._observers, environ)
        substitute = None
        try:
            if self._prepares:
                substitute = self._prepare(environ)
            body = app(environ, start_response)
        except BaseException:
            if substitute is not None:
                environ[FILE_WRAPPER_KEY] = substitute.file_wrapper
            # close() tells the hooks of the exception being handled and logs their failures;
            # the application's exception is what the server must see, unless a hook raised
            # KeyboardInterrupt or SystemExit, which outrank it.
            cleanup._close_body = None
            with suppress(Exception):
                cleanup.close()
            raise
        if substitute is not None:
            # Put back before the server looks at it: gunicorn-like servers test the body's
            # class against it.
            environ[FILE_WRAPPER_KEY] = substitute.file_wrapper
            if body is substitute.made:
                return substitute.adopt(cleanup)
        if type(body) is list:
            # The commonest body (Pyramid's, Falcon's, Bottle's) has no close() to look for.
            # Returned here: through the tail below, 76 to 199 instructions more (callgrind).
            cleanup._body = body
            cleanup._close_body = None
            return cleanup
        close_body = None
        try:
            close_body = getattr(body, "close", None)
            if close_body is not None:
                file_wrapper = environ.get(FILE_WRAPPER_KEY)
                # A file body has a close() of its own, and the server must get it back as it
                # made it: gunicorn, waitress and wsgiref test the class of their file wrapper
                # (isinstance, so a subclass counts too).
                if body.__class__ is file_wrapper or (
                    substitute is None
                    and isinstance(file_wrapper, type)
                    and isinstance(body, file_wrapper)
                ):
                    if cleanup.adopt_file_body(body, close_body):
                        if WAITRESS_CHANNEL_KEY in environ:
                            # waitress closes file bodies on its I/O thread.
                            close_off_loop(cleanup, body, environ)
                        return body
                    # A wrapper whose objects refuse a new close, on a server this middleware
                    # took for another (a test calling the application, say): judge the next
                    # request's.
                    self._judge(True)
                elif hasattr(body, "read"):
                    # An open file the application returned whole: a file wrapper that is
                    # neither absent, a class nor stood in for returns the file itself
                    # (uWSGI's), and its server sends the very object it was given.
                    by_identity = (
                        file_wrapper is not None
                        and substitute is None
                        and not isinstance(file_wrapper, type)
                    )
                    return serve_app_file(cleanup, body, close_body, by_identity)
        except Exception:
            # A body whose attribute lookup raises: served as a plain iterable, closed with
            # the close() found, if any. Its hooks run all the same.
            pass
        cleanup._body = body
        cleanup._close_body = close_body
        return cleanup


class _SlowHooks(_Observer, _Watcher):
    """A middleware's ``slow_hook_seconds``: a WARNING for each hook or deferred function over it.

    The line names the function as a failing hook's line does, and the request by its method
    and path, escaped (see :mod:`cleanup_middleware.reporting`).
    """

    __slots__ = ("limit",)

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def watch(self, environ: WSGIEnvironment) -> _SlowHooks:
        return self

    def hook(
        self, environ: WSGIEnvironment, hook: object, seconds: float, error: BaseException | None
    ) -> None:
        if seconds > self.limit:
            self._warn("cleanup hook", hook, seconds, describe_request(environ))

    def deferred(
        self, work: object, request: str, waited: float, seconds: float, error: BaseException | None
    ) -> None:
        if seconds > self.limit:
            self._warn("deferred function", work, seconds, request)

    def _warn(self, what: str, fn: object, seconds: float, request: str) -> None:
        logger.warning(
            "%s %s took %.3f s for %s, over slow_hook_seconds=%g",
            what,
            hook_name(fn),
            seconds,
            request,
            self.limit,
        )


def wrap(
    app: WSGIApplication | str,
    *,
    config: str | os.PathLike[str] | None = None,
    hooks: Sequence[Hook] | None = None,
    on_hook_error: Literal["log", "raise"] | None = None,
    executor: Executor | None = None,
    slow_hook_seconds: float | None = None,
) -> CleanupMiddleware:
    """Wrap ``app`` in :class:`~cleanup_middleware.CleanupMiddleware` with a configuration.

    ``app`` is a WSGI application or its ``"module:attribute"`` name, so that gunicorn's
    app-factory syntax, which passes literal arguments, can start it::

        gunicorn 'cleanup_middleware:wrap("myapp:app", config="cleanup.toml")'

    The other arguments are :class:`CleanupMiddleware`'s. The configuration is loaded, checked
    and imported here: a mistake raises :class:`~cleanup_middleware.ConfigError`, and gunicorn
    does not start.
    """
    if isinstance(app, str):
        from .config import ConfigError, resolve

        source = f"wrap({app!r})"
        app = resolve(app, source, "app")
        if not callable(app):
            raise ConfigError(
                source,
                "app",
                f"is not a WSGI application (an object of type {type(app).__name__}); name the "
                'application itself, as in "myapp:app"',
            )
    return CleanupMiddleware(
        app,
        config=config,
        hooks=hooks,
        on_hook_error=on_hook_error,
        executor=executor,
        slow_hook_seconds=slow_hook_seconds,
    )
