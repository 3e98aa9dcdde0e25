"""The cleanup of one response: a registry of hooks bound to the body's ``close()``.

A WSGI server says a response is finished by calling ``close()`` on the body the application
returned. :class:`ResponseCleanup` is created per request by
:class:`~cleanup_middleware.CleanupMiddleware`, stored in the environ, and put in that ``close()``
path without standing between the server and the body's chunks:

* an ordinary body (a list, a generator, any iterable) is returned to the server inside the
  :class:`ResponseCleanup` itself, whose ``__iter__`` hands back the body's own iterator, so no
  Python code of ours runs per chunk;
* a file body (made by the server's ``wsgi.file_wrapper``, or an open file the application
  returned) goes back to the server as the very same object, with its ``close`` attribute
  pointed at :meth:`ResponseCleanup.close` (as Django does), so the server still recognises it
  and sends the file with ``sendfile()``.

:func:`add_cleanup` and :func:`enter_context` are the public ways to register hooks on it.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = [
    "ENVIRON_KEY",
    "FAILURE_KEY",
    "RaisingResponseCleanup",
    "ResponseCleanup",
    "add_cleanup",
    "enter_context",
]

#: The environ key under which the middleware keeps the request's :class:`ResponseCleanup`.
ENVIRON_KEY = "cleanup_middleware.cleanup"
#: The environ key of an exception the request failed with although the application returned.
FAILURE_KEY = "cleanup_middleware.failure"

logger = logging.getLogger("cleanup_middleware")

_T = TypeVar("_T")
_ExitFunc = Callable[[type[BaseException] | None, BaseException | None, TracebackType | None], Any]


class _ContextExit:
    """A registered context manager's ``__exit__``: called at close with the request's failure.

    The failure is one recorded in the environ (by :meth:`ResponseCleanup.record_failure`, or
    by :meth:`ResponseCleanup.close` when the body's own ``close()`` raised), else the exception
    the server is handling while it closes the body (an error while sending, a client that
    went away). Looked up only here: plain hooks need no failure and pay nothing for it.
    """

    __slots__ = ("environ", "exit")

    def __init__(self, environ: WSGIEnvironment, exit_: _ExitFunc) -> None:
        self.environ = environ
        self.exit = exit_

    def __call__(self) -> None:
        failure = self.environ.get(FAILURE_KEY) or sys.exc_info()[1]
        if failure is None:
            self.exit(None, None, None)
        else:
            self.exit(type(failure), failure, failure.__traceback__)

    def __repr__(self) -> str:
        return repr(self.exit)


# A registered hook: the user's function, a partial binding its arguments, or a _ContextExit.
_Hook = Callable[[], object]


def _closed_marker() -> None:
    """Never called: it marks a response whose close() finished (see ``_CLOSED``)."""


# ResponseCleanup._first_hook once close() finished, so that registering then is an error.
_CLOSED: _Hook = _closed_marker

# File wrapper classes whose instances refused a new ``close``; each is logged once.
_unpatchable_types: set[type] = set()


class ResponseCleanup:
    """The hooks of one response, run exactly once when the server closes its body.

    Not created by users: :class:`~cleanup_middleware.CleanupMiddleware` makes one per request,
    stores it as ``environ["cleanup_middleware.cleanup"]`` and, once the application returned,
    hands the server either the application's body with its ``close`` pointed here (the
    server's own file wrapper or an open file, see :meth:`adopt_file_body`) or this object,
    which iterates as the body does. Register hooks with :func:`add_cleanup` and
    :func:`enter_context`.

    :meth:`close` closes the body first (so a file is closed before a hook deletes it), then runs
    the hooks last-registered-first, in the manner of :class:`contextlib.ExitStack`. Every hook
    runs even when the body's ``close()`` or another hook raises; hook failures are logged on the
    ``cleanup_middleware`` logger with the request's method and path.
    """

    # Set by CleanupMiddleware, which builds the object without __init__ to keep each request
    # cheap: _environ and the hooks at once, _body and _close_body when the application
    # returned (or _close_body = None when it raised).
    __slots__ = ("_body", "_close_body", "_deferred", "_environ", "_first_hook", "_later_hooks")

    _environ: WSGIEnvironment | None  # None from the moment close() starts: it runs once
    # The hooks, held so that the usual request, with one hook or none, allocates no list: the
    # first registered, then a list of the others, made when a second one comes. _first_hook
    # is _CLOSED once close() finished: registering then is an error.
    _first_hook: _Hook | None
    _later_hooks: list[_Hook] | None
    _body: Iterable[bytes]  # the body this object iterates as, if any
    _close_body: Callable[[], object] | None  # the body's own close()
    _deferred: list[_Hook] | None  # defer()'s functions, made on the first; None until then

    #: After every hook ran, raise a hook's exception from :meth:`close` instead of only
    #: logging it. ``CleanupMiddleware(on_hook_error="raise")`` uses a subclass that sets it.
    raise_hook_errors: ClassVar[bool] = False

    def record_failure(self, exc: BaseException) -> None:
        """Note that the request failed although the application returned (an error page).

        Context managers entered with :func:`enter_context` are then told of ``exc`` at close
        even when the server closes the body normally.
        """
        if self._environ is not None:
            self._environ.setdefault(FAILURE_KEY, exc)

    def _register(self, hook: _Hook, call: str) -> None:
        """Add ``hook`` to run at close; ``call`` names the public function, for the error.

        Threads may register on one request at once. Between each test of a slot and the store
        that follows it nothing allocates or calls out, so with the GIL no other thread runs in
        between to have its hook overwritten (:func:`add_cleanup`'s own first-hook store too).
        """
        first_hook = self._first_hook
        if first_hook is None:
            self._first_hook = hook
            return
        if first_hook is _CLOSED:
            raise _closed_error(call)
        later_hooks = self._later_hooks
        if later_hooks is None:
            later_hooks = []  # made before the test below, which must not allocate
            if self._later_hooks is None:
                self._later_hooks = later_hooks
            else:
                later_hooks = self._later_hooks
        later_hooks.append(hook)

    def _defer(self, work: Callable[[], object]) -> None:
        """Keep ``work`` for :func:`~cleanup_middleware.defer`: handed off once close() ran."""
        if self._first_hook is _CLOSED:
            raise _closed_error("defer")
        deferred = self._deferred
        if deferred is None:
            deferred = []  # made before the test, which must not allocate (see _register)
            if self._deferred is None:
                self._deferred = deferred
            else:
                deferred = self._deferred
        deferred.append(work)

    def adopt_file_body(self, body: Iterable[bytes], close_body: Callable[[], object]) -> bool:
        """Point the file body's ``close`` here, to run ``close_body`` and then the hooks.

        The server then gets its own object back and can still send the file with
        ``sendfile()``. Returns false when the object refuses a new attribute (``__slots__``):
        the caller then wraps it, which this logs once per class at debug level.
        """
        try:
            body.close = self.close  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            _log_unpatchable(type(body))
            return False
        self._close_body = close_body
        return True

    def __iter__(self) -> Iterator[bytes]:
        # The body's own iterator: the server's next() calls never enter Python code of ours.
        return iter(self._body)

    def close(self) -> None:
        """Close the body, then run every hook once, last-registered-first.

        Context managers are told of the exception the request failed with: one recorded
        by :meth:`record_failure`, else the one the server is handling while it calls
        ``close()`` (an error from the body, a client that went away). After every hook ran, an
        exception from the body's own ``close()`` propagates unchanged; a hook's
        ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``, ``SystemExit``)
        propagates; other hook errors propagate only with ``raise_hook_errors``. Calling it again
        does nothing.
        """
        environ = self._environ
        if environ is None:
            return
        # From here on the response is closing: a second close() returns above.
        self._environ = None
        body_error: BaseException | None = None
        hook_error: BaseException | None = None
        close_body = self._close_body
        if close_body is not None:
            # Dropped first: an adopted file body's close is this method, so the two refer to
            # each other until here.
            self._close_body = None
            try:
                close_body()
            except BaseException as exc:
                body_error = exc
                environ.setdefault(FAILURE_KEY, exc)
        # Last-registered-first: the later hooks from the end, then the first. Each is taken
        # out before it runs, so hooks registered meanwhile (by a hook, say) run too.
        while True:
            later_hooks = self._later_hooks
            if later_hooks:
                hook = later_hooks.pop()
            elif self._first_hook is not None:
                hook = self._first_hook
                self._first_hook = None
            else:
                break
            try:
                hook()
            except BaseException as exc:
                hook_error = _hook_failed(environ, hook, exc, hook_error)
        deferred = self._deferred
        if deferred is not None:
            # Imported here: deferred.py imports this module, and requests without defer()
            # never get here.
            from .deferred import hand_off

            self._deferred = None
            hand_off(self, deferred, environ)
        # Closed: registering now is an error, and the body is no longer ours to hold.
        self._first_hook = _CLOSED
        self._body = ()
        if hook_error is not None or body_error is not None:
            self._raise_errors(hook_error, body_error)

    def _raise_errors(
        self, hook_error: BaseException | None, body_error: BaseException | None
    ) -> None:
        """Raise what :meth:`close` must raise, once every hook ran."""
        if hook_error is not None and not isinstance(hook_error, Exception):
            raise hook_error
        if body_error is not None:
            raise body_error
        if hook_error is not None and self.raise_hook_errors:
            raise hook_error

    def __del__(self) -> None:
        # A last resort for a server or outer middleware that never calls close(): the hooks
        # run when the garbage collector reclaims the request, whenever and in whatever thread
        # that happens.
        if self._environ is not None:
            self._close_abandoned()

    def _close_abandoned(self) -> None:
        environ = self._environ or {}
        warnings.warn(
            f"the response to {_describe(environ)} was never closed; its cleanup hooks ran only "
            "when it was garbage-collected. The server or a middleware outside CleanupMiddleware "
            "must call close() on the response body (PEP 3333)",
            ResourceWarning,
            source=self,
            stacklevel=1,
        )
        self.close()


class RaisingResponseCleanup(ResponseCleanup):
    """A :class:`ResponseCleanup` whose :meth:`close` raises a hook's error after all ran."""

    __slots__ = ()
    raise_hook_errors = True


def _describe(environ: WSGIEnvironment) -> str:
    """The request's method and path, for messages."""
    return (
        f"{environ.get('REQUEST_METHOD', '?')} "
        f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}"
    )


def _hook_failed(
    environ: WSGIEnvironment, hook: _Hook, exc: BaseException, earlier: BaseException | None
) -> BaseException:
    """Log a hook's failure; return the error close() would raise after the others ran."""
    logger.error("cleanup hook %r failed for %s", hook, _describe(environ), exc_info=exc)
    if earlier is None:
        return exc
    # Like ExitStack: the last error carries the earlier ones as __context__ ...
    if exc.__context__ is None:
        exc.__context__ = earlier
    # ... except that a KeyboardInterrupt or SystemExit outranks ordinary errors.
    return exc if isinstance(earlier, Exception) else earlier


def _log_unpatchable(body_type: type) -> None:
    if body_type not in _unpatchable_types:
        _unpatchable_types.add(body_type)
        logger.debug(
            "cannot set close() on %s.%s; wrapping it instead, so the server will iterate "
            "this file body rather than use sendfile()",
            body_type.__module__,
            body_type.__qualname__,
        )


def _not_wrapped(environ: object, call: str) -> Exception:
    if not isinstance(environ, dict):
        return TypeError(
            f"{call}() takes the WSGI environ dict as its first argument, got {environ!r}"
        )
    return RuntimeError(
        f"{call}() needs an environ that passed through CleanupMiddleware, and this one did not; "
        "wrap the WSGI application: app = CleanupMiddleware(app) (for Flask: "
        "cleanup_middleware.flask.init_app(app))"
    )


def _closed_error(call: str) -> RuntimeError:
    return RuntimeError(
        f"{call}() was called after the response was closed, so the hook would never run; "
        "register it while the request is handled or its body is being sent"
    )


def add_cleanup(
    environ: WSGIEnvironment, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> None:
    """Run ``fn(*args, **kwargs)`` once, when the server closes this request's response.

    Hooks run after the body is closed, last-registered-first. A hook that raises is logged
    and the others still run.

    :raises RuntimeError: ``environ`` did not pass through :class:`CleanupMiddleware`, or its
        response was already closed.
    :raises TypeError: ``fn`` is not callable.

    Example::

        add_cleanup(environ, os.unlink, tmp_path)
    """
    try:
        cleanup: ResponseCleanup = environ[ENVIRON_KEY]
    except (KeyError, TypeError):
        raise _not_wrapped(environ, "add_cleanup") from None
    if not callable(fn):
        raise TypeError(
            f"add_cleanup() needs a callable to run at close, got {fn!r} "
            f"({type(fn).__name__}); pass the function itself, not its result"
        )
    hook = partial(fn, *args, **kwargs) if args or kwargs else fn
    # The request's first hook is stored right here: the common case, kept one call deep.
    if cleanup._first_hook is None:
        cleanup._first_hook = hook
    else:
        cleanup._register(hook, "add_cleanup")


def enter_context(environ: WSGIEnvironment, cm: AbstractContextManager[_T]) -> _T:
    """Enter the context manager ``cm`` now and exit it when this request's response closes.

    Returns what ``cm.__enter__()`` returned, like :meth:`contextlib.ExitStack.enter_context`.
    Its ``__exit__`` is called with the exception the request failed with: one the application
    raised, or the one the server was handling when it closed the body (an error while sending,
    a client that went away); with ``(None, None, None)`` otherwise. Its return value is
    ignored: by then there is nothing left to suppress.

    :raises RuntimeError: as :func:`add_cleanup`.
    :raises TypeError: ``cm`` is not a context manager.

    Example::

        conn = enter_context(environ, closing(sqlite3.connect(path)))
    """
    try:
        cleanup: ResponseCleanup = environ[ENVIRON_KEY]
    except (KeyError, TypeError):
        raise _not_wrapped(environ, "enter_context") from None
    cls = type(cm)
    try:
        enter = cls.__enter__
        exit_: _ExitFunc = cls.__exit__  # type: ignore[assignment]
    except AttributeError:
        raise TypeError(
            f"enter_context() needs a context manager, got a {cls.__module__}.{cls.__qualname__} "
            "object without __enter__/__exit__"
        ) from None
    if cleanup._first_hook is _CLOSED:
        raise _closed_error("enter_context")
    result: _T = enter(cm)
    cleanup._register(_ContextExit(environ, exit_.__get__(cm, cls)), "enter_context")
    return result
