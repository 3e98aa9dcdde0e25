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

:func:`add_cleanup` and :func:`enter_context` are the public ways to register hooks on it;
:func:`on_success` and :func:`on_failure` register work that depends on how the request ended.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, suppress
from functools import partial
from time import perf_counter
from types import GeneratorType, TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, SupportsIndex, TypeVar

from .reporting import (
    StandIn,
    closed_error,
    hook_failed,
    hook_name,
    log_unpatchable,
    logger,
    not_callable,
    not_picklable,
    not_wrapped,
    report_abandoned,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = [
    "ENVIRON_KEY",
    "RaisingResponseCleanup",
    "ResponseCleanup",
    "RunsLast",
    "add_cleanup",
    "enter_context",
    "on_failure",
    "on_success",
]

#: The environ key under which the middleware keeps the request's :class:`ResponseCleanup`.
ENVIRON_KEY = "cleanup_middleware.cleanup"

_T = TypeVar("_T")
_ExitFunc = Callable[[type[BaseException] | None, BaseException | None, TracebackType | None], Any]
# A registered hook: the user's function, a partial binding its arguments, or a StandIn.
_Hook = Callable[[], object]

# ResponseCleanup._hooks once close() took the last hook: appending to it fails, so registering
# then is an error.
_CLOSED: tuple[()] = ()
# The request's failure when nothing is known about it: an abandoned response, closed by the
# garbage collector in whatever code its thread was running.
_UNKNOWN = BaseException("outcome unknown: the response was never closed")
# Serialises the rare end of a race between registering and close() (see ResponseCleanup).
# Re-entrant: a garbage collection while a thread holds it (the error it builds allocates) may
# close an abandoned response in that thread, which takes it too.
_registry_lock = threading.RLock()
# Serialises deciding a request's outcome (ResponseCleanup._outcome) when two threads close it.
# Re-entrant: a collection while it is held may close an abandoned response in this thread.
_outcome_lock = threading.RLock()
# Without the GIL, close() takes the lock for its last look at the hooks (see ResponseCleanup).
_GIL_DISABLED = not getattr(sys, "_is_gil_enabled", lambda: True)()


class _Observer:
    """Someone who watches cleanup: the seam of OpenTelemetry, the slow-hook log, test fixtures.

    Internal. An observer is process-wide (:func:`_add_observer` and :func:`_remove_observer`:
    :mod:`cleanup_middleware.otel`, a test fixture) or one middleware's (the ``_own_observers``
    of its cleanup class: the slow-hook log). Each cleanup class's ``_observers`` holds the
    process-wide ones, then its own; adding or removing a process-wide one recomputes it for
    every class, so that middleware made earlier sees the change too. Observers are told, in
    the thread where it happens:

    * :meth:`request`: a request enters the outermost middleware, before the application;
    * :meth:`watch`: ``close()`` is about to run a response's hooks (never for a response with
      none). It returns a :class:`_Watcher` for that response, or ``None``. The watcher's
      ``hook(environ, hook, seconds, error)`` follows each hook, with the seconds it took and the
      exception it raised (else ``None``), and ``end()`` follows the last hook. The clock is
      read once per hook, for every watcher. A :class:`RunsLast` hook (the hand-off of
      :func:`~cleanup_middleware.defer`) is not shown, nor its time counted in the next hook's;
    * :meth:`deferred`: a function given to :func:`~cleanup_middleware.defer` by a request of
      the class ran: the seconds it waited after its hand-off and ran, what it raised;
    * :meth:`abandoned`: the garbage-collection net closed a response.

    Without observers, a request pays one attribute test in the middleware and one in
    ``close()``, and a local test per hook. An observer that raises is logged and ignored: the
    hooks still run. Example, the names of the hooks each response ran, in order::

        class Recorder(_Observer):
            def __init__(self):
                self.responses = []

            def watch(self, environ):
                names = []
                self.responses.append(names)
                return Recording(names)

        class Recording(_Watcher):
            def __init__(self, names):
                self.names = names

            def hook(self, environ, hook, seconds, error):
                self.names.append(hook_name(hook))

        _add_observer(Recorder())
    """

    __slots__ = ()

    def request(self, environ: WSGIEnvironment) -> None:
        """A request entered the middleware; the application runs next."""

    def watch(self, environ: WSGIEnvironment) -> _Watcher | None:
        """``close()`` is about to run this response's hooks: who watches them, if anyone."""
        return None

    def deferred(
        self, work: object, request: str, waited: float, seconds: float, error: BaseException | None
    ) -> None:
        """A deferred function ran; ``request`` is its request's method and path, escaped."""

    def abandoned(self, environ: WSGIEnvironment) -> None:
        """The garbage-collection net closed this response."""


class _Watcher:
    """What watches one response's hooks for an :class:`_Observer` (see there)."""

    __slots__ = ()

    def hook(
        self, environ: WSGIEnvironment, hook: object, seconds: float, error: BaseException | None
    ) -> None:
        """A hook ran for ``seconds``; ``error`` is what it raised, else ``None``."""

    def end(self) -> None:
        """The response's last hook ran."""


# The process's observers, first in every cleanup class's _observers.
_process_observers: tuple[_Observer, ...] = ()
# Whether any cleanup class has observers: a module global, which a request tests more cheaply
# than a class attribute (Python 3.11 does not specialise those).
_observing = False
# Called with the new _observing when it changes: a module that tests it per request keeps a
# global of its own, which a request reads more cheaply than this module's attribute (callgrind:
# 260 instructions a request on Python 3.10, 23 to 41 on 3.11 to 3.13).
_observing_listeners: list[Callable[[bool], None]] = []


def _add_observer(observer: _Observer) -> None:
    """Let ``observer`` watch every response of the process from now on."""
    global _process_observers
    _process_observers = (*_process_observers, observer)
    _set_observers()


def _remove_observer(observer: _Observer) -> None:
    """Tell ``observer`` nothing more (responses closing meanwhile may still tell it)."""
    global _process_observers
    _process_observers = tuple(o for o in _process_observers if o is not observer)
    _set_observers()


def _set_observers() -> None:
    """Give every cleanup class the process's observers, then its own."""
    global _observing
    observing = False
    classes: list[type[ResponseCleanup]] = [ResponseCleanup]
    while classes:
        cls = classes.pop()
        cls._observers = (*_process_observers, *cls._own_observers)
        observing = observing or bool(cls._observers)
        classes += cls.__subclasses__()
    _observing = observing
    for listener in _observing_listeners:
        listener(observing)


def _tell(observer: object, event: str, *args: object) -> Any:
    """Call ``observer``'s method ``event``; what it raises is logged, and ``None`` returned."""
    try:
        return getattr(observer, event)(*args)
    except Exception as exc:
        logger.error("cleanup observer %s failed in %s()", hook_name(observer), event, exc_info=exc)
        return None


class _Watch:
    """One response's hooks as its watchers see them: the clock read once per hook for all."""

    __slots__ = ("environ", "last", "watchers")

    def __init__(self, environ: WSGIEnvironment, watchers: list[_Watcher]) -> None:
        self.environ = environ
        self.watchers = watchers
        self.last = perf_counter()

    def hook(self, hook: object, error: BaseException | None) -> None:
        now = perf_counter()
        seconds, self.last = now - self.last, now
        if not isinstance(hook, RunsLast):
            for watcher in self.watchers:
                _tell(watcher, "hook", self.environ, hook, seconds, error)

    def end(self) -> None:
        for watcher in self.watchers:
            _tell(watcher, "end")


def _is_threshold(value: object) -> bool:
    """Whether ``value`` is a number of seconds above 0 that an observer can compare with."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


def _entered(observers: tuple[_Observer, ...], environ: WSGIEnvironment) -> None:
    """Tell ``observers`` that a request entered the middleware."""
    for observer in observers:
        _tell(observer, "request", environ)


def _watch(observers: tuple[_Observer, ...], environ: WSGIEnvironment) -> _Watch | None:
    """The watch of a response's hooks by ``observers``; ``None`` when none watches them."""
    watchers = [w for o in observers if (w := _tell(o, "watch", environ)) is not None]
    return _Watch(environ, watchers) if watchers else None


class _WatchedCall(StandIn):
    """A deferred function whose run is told to the observers of the request that deferred it."""

    __slots__ = ("handed_at", "observers", "request", "work")

    def __init__(
        self, work: Callable[[], object], observers: tuple[_Observer, ...], request: str
    ) -> None:
        self.work = work
        self.observers = observers
        self.request = request
        self.handed_at = perf_counter()

    def __call__(self) -> None:
        start = perf_counter()
        error = None
        try:
            self.work()
        except BaseException as exc:
            error = exc
            raise
        finally:
            waited, seconds = start - self.handed_at, perf_counter() - start
            for observer in self.observers:
                _tell(observer, "deferred", self.work, self.request, waited, seconds, error)
            del error  # the traceback refers to this frame

    @property
    def named_after(self) -> object:
        return self.work


class _ContextExit(StandIn):
    """A registered context manager's ``__exit__``: called at close with the request's failure.

    The failure is the one recorded on the request's :class:`ResponseCleanup` (the exception
    that escaped the application or a view, or that the body's own ``close()`` raised), else the
    exception the server is handling while it closes the body (an error while sending, a client
    that went away). Looked up only here: plain hooks need no failure and pay nothing for it.
    """

    __slots__ = ("cleanup", "exit")

    def __init__(self, cleanup: ResponseCleanup, exit_: _ExitFunc) -> None:
        self.cleanup = cleanup
        self.exit = exit_

    def __call__(self) -> None:
        failure = self.cleanup.failure
        if failure is None:
            failure = sys.exc_info()[1]
        elif failure is _UNKNOWN:
            failure = None
        if failure is None:
            self.exit(None, None, None)
        else:
            self.exit(type(failure), failure, failure.__traceback__)

    @property
    def named_after(self) -> object:
        manager = getattr(self.exit, "__self__", None)
        generator = getattr(manager, "gen", None)
        # A @contextmanager is named by its function, which its generator knows.
        return generator if isinstance(generator, GeneratorType) else type(manager)


class RunsLast(StandIn):
    """A stand-in that runs after every hook and outcome callback: :func:`defer`'s hand-off, and
    :class:`_DropFailure`.

    Registered with ``last=True``, at the bottom of the stack; outcome callbacks are put above
    every one of them. Watchers are not shown it: they are shown the function it hands off when
    that runs.
    """

    __slots__ = ()


class _DropFailure(RunsLast):
    """Forgets the request's recorded failure once every hook and outcome callback ran.

    The exception's traceback holds the request's frames, which hold its environ, which holds
    the response: kept, it would leave the request, and the application its frames refer to,
    to the garbage collector.
    """

    __slots__ = ("cleanup",)

    def __init__(self, cleanup: ResponseCleanup) -> None:
        self.cleanup = cleanup

    def __call__(self) -> None:
        cleanup = self.cleanup
        # Decided first: an outcome callback registered (from another thread) as close() ends
        # still sees the request's outcome.
        cleanup._succeeded()
        del cleanup._failure

    @property
    def named_after(self) -> object:
        return self.cleanup.record_failure


class _OutcomeCall(StandIn):
    """A function given to :func:`on_success` or :func:`on_failure`: at its turn, it runs if the
    request ended as ``on_success`` says. Put above the hand-offs of :func:`defer` and below
    every other hook, so it runs after them, in registration order among its kind."""

    __slots__ = ("cleanup", "on_success", "work")

    def __init__(self, cleanup: ResponseCleanup, on_success: bool, work: _Hook) -> None:
        self.cleanup = cleanup
        self.on_success = on_success
        self.work = work

    def __call__(self) -> None:
        if self.cleanup._succeeded() is self.on_success:
            self.work()

    @property
    def named_after(self) -> object:
        return self.work


class _PythonResponseCleanupBase:
    """The slots, ``__iter__`` and garbage-collection net of :class:`ResponseCleanup`.

    The same as ``_speedups.ResponseCleanupBase``, whose C saves each request two calls into
    Python code: the server's ``iter(body)`` and ``__del__`` (see :func:`_base_class`); with it,
    ``_speedups.add_cleanup`` saves a third.
    """

    # Set by CleanupMiddleware, which builds the object without __init__ to keep each request
    # cheap: _environ and _hooks at once, _body and _close_body when the application returned
    # (or _close_body = None when it raised). _failure is set only when the request failed;
    # _outcome only once a hook failed or an outcome callback ran (ResponseCleanup._succeeded).
    __slots__ = ("_body", "_close_body", "_environ", "_failure", "_hooks", "_outcome")

    _environ: WSGIEnvironment | None  # None from the moment close() starts: it runs once
    _hooks: list[_Hook] | tuple[()]  # _CLOSED once close() took the last hook
    _failure: BaseException
    _body: Iterable[bytes]  # the body this object iterates as, if any
    _close_body: Callable[[], object] | None  # the body's own close()
    _outcome: bool  # whether the request succeeded, for outcome callbacks, once decided

    def __iter__(self) -> Iterator[bytes]:
        # The body's own iterator: the server's next() calls never enter Python code of ours.
        return iter(self._body)

    def __del__(self) -> None:
        # A last resort for a server or outer middleware that never calls close(): the hooks
        # run when the garbage collector reclaims the request, whenever and in whatever thread
        # that happens.
        try:
            environ = self._environ
        except AttributeError:  # never filled in by the middleware: nothing to close
            return
        if environ is not None:
            self._close_abandoned(environ)

    def _close_abandoned(self, environ: WSGIEnvironment) -> None:
        raise NotImplementedError  # ResponseCleanup's


#: Set (to anything but ``0``), the environment variable that keeps the C base out.
PURE_PYTHON_ENV_VAR = "CLEANUP_MIDDLEWARE_PURE_PYTHON"


def _base_class() -> type[_PythonResponseCleanupBase]:
    """The C base from ``_speedups`` if it imports and may be used, else the Python one.

    :data:`PURE_PYTHON_ENV_VAR` asks for the Python one. So does a free-threaded build running
    without the GIL: the extension does not declare that it runs so, and importing it would turn
    the GIL back on.
    """
    if os.environ.get(PURE_PYTHON_ENV_VAR, "") not in ("", "0") or _GIL_DISABLED:
        return _PythonResponseCleanupBase
    try:
        from ._speedups import ResponseCleanupBase
    except ImportError:
        return _PythonResponseCleanupBase
    return ResponseCleanupBase  # type: ignore[return-value]


if TYPE_CHECKING:
    _ResponseCleanupBase = _PythonResponseCleanupBase
else:
    _ResponseCleanupBase = _base_class()
#: Whether :class:`ResponseCleanup` has the C base of ``cleanup_middleware._speedups``.
SPEEDUPS = _ResponseCleanupBase is not _PythonResponseCleanupBase


class ResponseCleanup(_ResponseCleanupBase):
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
    ``cleanup_middleware`` logger with the hook's name and the request's method and path.

    Registering races ``close()`` safely, from any thread: a registration either runs or raises
    ``RuntimeError``. A registrant appends to the list of hooks and then checks that the list is
    still the response's; ``close()`` takes hooks until the list is empty, replaces it with
    ``_CLOSED`` and looks once more. A registrant that finds the list replaced takes its hook
    back under ``_registry_lock`` and raises, unless ``close()`` (holding the same lock for its
    last look) already took it to run. With the GIL every step is atomic; without it (the
    free-threaded build) list operations lock the list, and ``close()`` takes its last look
    with such an operation, under the lock.
    """

    # The slots, __iter__ and the garbage-collection net's __del__ are the base's.
    __slots__ = ()

    #: After every hook ran, raise a hook's exception from :meth:`close` instead of only
    #: logging it. ``CleanupMiddleware(on_hook_error="raise")`` uses a subclass that sets it.
    raise_hook_errors: ClassVar[bool] = False
    #: Who watches this class's responses (see :class:`_Observer`): the process's, then its own.
    _observers: ClassVar[tuple[_Observer, ...]] = ()
    _own_observers: ClassVar[tuple[_Observer, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _set_observers()

    @property
    def failure(self) -> BaseException | None:
        """The exception this request failed with, once recorded; ``None`` until then, and
        again once every hook ran."""
        try:
            return self._failure
        except AttributeError:
            return None

    def record_failure(self, exc: BaseException) -> None:
        """Note that the request failed although the application returned (an error page).

        Context managers entered with :func:`enter_context` are then told of ``exc`` at close
        even when the server closes the body normally. The first failure recorded is kept, until
        every hook ran. It is kept here, not in the environ, so a middleware that copies the
        environ cannot lose it.
        """
        failure = self.failure
        if failure is None or failure is _UNKNOWN:
            self._failure = exc
            # Once the response closed, nothing more runs, and the failure is kept.
            with suppress(RuntimeError):
                self._register(_DropFailure(self), "record_failure", last=True)

    def __copy__(self) -> ResponseCleanup:
        # The one registry of one request: a copy of the environ (shallow or deep) keeps it, so
        # what is registered through the copy runs at the request's close, and a copy never
        # runs a hook of its own, on either base.
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> ResponseCleanup:
        return self

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise not_picklable(self, ENVIRON_KEY)

    def _succeeded(self) -> bool:
        """Whether the request succeeded, as outcome callbacks see it; decided on first use.

        Called at close by the first outcome callback, once every hook and context exit ran.
        It failed if a hook raised by then (a context manager's ``__exit__`` included), or else
        if the request failed as :func:`enter_context`'s context managers are told: a failure
        recorded (:meth:`record_failure`, the body's own ``close()``), else the exception the
        server is handling at close; an abandoned response closed by the garbage-collection net
        is told only what was recorded. Every outcome callback of the request sees the answer
        of the first, also when one of them raises.
        """
        try:
            return self._outcome
        except AttributeError:
            pass
        failure = self.failure
        succeeded = sys.exc_info()[1] is None if failure is None else failure is _UNKNOWN
        with _outcome_lock:
            # A second close() in another thread may have decided first: its answer stands.
            try:
                return self._outcome
            except AttributeError:
                self._outcome = succeeded
        return succeeded

    def _hook_failed(
        self,
        environ: WSGIEnvironment,
        hook: _Hook,
        exc: BaseException,
        earlier: BaseException | None,
    ) -> BaseException:
        """Note at close that the request failed, if its outcome is not decided yet; log ``exc``."""
        with _outcome_lock:
            try:
                self._outcome  # noqa: B018
            except AttributeError:
                self._outcome = False
        return hook_failed(environ, hook, exc, earlier)

    def _withdraw(self, hooks: list[_Hook], hook: _Hook, call: str) -> None:
        """Take back ``hook``, appended to ``hooks`` as :meth:`close` replaced them, and raise.

        Returns instead when :meth:`close` already took the hook, which then runs.
        """
        with _registry_lock:
            # Compared by identity, from the end, where it was appended: two equal hooks of
            # different registrants must not be confused.
            for index in range(len(hooks) - 1, -1, -1):
                if hooks[index] is hook:
                    del hooks[index]
                    raise closed_error(call)

    def _register(
        self, hook: _Hook, call: str, *, last: bool = False, outcome: bool = False
    ) -> None:
        """Add ``hook`` to run at close; ``call`` names the public function, for the error.

        With ``last``, it goes to the bottom of the stack: it runs after every hook registered
        before or after it (a :class:`RunsLast`, the hand-off of
        :func:`~cleanup_middleware.defer`). With ``outcome``, it goes right above those: it
        runs after every other hook, and after the outcome callbacks registered before it.
        """
        hooks = self._hooks
        try:
            if last:
                hooks.insert(0, hook)  # type: ignore[union-attr]
            elif outcome:
                hooks.insert(_count_last(hooks), hook)  # type: ignore[union-attr]
            else:
                hooks.append(hook)  # type: ignore[union-attr]
        except AttributeError:
            raise closed_error(call) from None
        if self._hooks is not hooks:
            self._withdraw(hooks, hook, call)  # type: ignore[arg-type]

    def adopt_file_body(self, body: Iterable[bytes], close_body: Callable[[], object]) -> bool:
        """Point the file body's ``close`` here, to run ``close_body`` and then the hooks.

        The server then gets its own object back and can still send the file with
        ``sendfile()``. Returns false when the object refuses a new attribute (``__slots__``):
        the caller then wraps it, which this logs once per class at debug level.
        """
        try:
            body.close = self.close  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            log_unpatchable(type(body))
            return False
        self._close_body = close_body
        return True

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
                self.record_failure(exc)
        hooks: list[_Hook] = self._hooks  # type: ignore[assignment]
        watch = None
        if _observing and hooks:
            watch = _watch(self._observers, environ)
        # Each hook is taken off the end before it runs, so hooks registered meanwhile (by a
        # hook, say) run too, right after the one that registered them.
        while hooks:
            try:
                hook = hooks.pop()
            except IndexError:  # a second close() in another thread took the last one
                break
            try:
                hook()
            except BaseException as exc:
                hook_error = self._hook_failed(environ, hook, exc, hook_error)
                if watch is not None:
                    watch.hook(hook, exc)
            else:
                if watch is not None:
                    watch.hook(hook, None)
        # Closed: from here a registration fails or takes its hook back (see the class).
        self._hooks = _CLOSED
        if hooks or _GIL_DISABLED:
            # The loop above once more, written out: folded into it, every close() paid about
            # 140 instructions more (callgrind) for a path that races alone take.
            for hook in _take_late_hooks(hooks):
                try:
                    hook()
                except BaseException as exc:
                    hook_error = self._hook_failed(environ, hook, exc, hook_error)
                    if watch is not None:
                        watch.hook(hook, exc)
                else:
                    if watch is not None:
                        watch.hook(hook, None)
        if watch is not None:
            watch.end()
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

    def _close_abandoned(self, environ: WSGIEnvironment) -> None:
        # Called by the base when the garbage collector reclaims a response never closed.
        # Whatever exception the collecting thread is handling belongs to other code.
        if self.failure is None:
            self._failure = _UNKNOWN
        try:
            self.close()
        finally:
            for observer in self._observers:
                _tell(observer, "abandoned", environ)
            # Only now, after the hooks ran: a warning filter may turn the warning into an error.
            report_abandoned(environ)


class RaisingResponseCleanup(ResponseCleanup):
    """A :class:`ResponseCleanup` whose :meth:`close` raises a hook's error after all ran."""

    __slots__ = ()
    raise_hook_errors = True


def _count_last(hooks: list[_Hook] | tuple[()]) -> int:
    """How many :class:`RunsLast` hooks are at the bottom of ``hooks``: where outcome callbacks
    go."""
    count = 0
    for hook in hooks:
        if not isinstance(hook, RunsLast):
            break
        count += 1
    return count


def _take_late_hooks(hooks: list[_Hook]) -> list[_Hook]:
    """Take, under the lock, the hooks appended to ``hooks`` as :meth:`close` replaced them."""
    late: list[_Hook] = []
    with _registry_lock:
        # pop() until it fails, not a test of len(): pop locks the list on a free-threaded build.
        while True:
            try:
                late.append(hooks.pop())
            except IndexError:
                return late


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
        raise not_wrapped(environ, "add_cleanup") from None
    if not callable(fn):
        raise not_callable("add_cleanup", "to run at close", fn)
    if args or kwargs:
        fn = partial(fn, *args, **kwargs)
    # ResponseCleanup._register, inlined: the common case, kept one call deep.
    hooks = cleanup._hooks
    try:
        hooks.append(fn)  # type: ignore[union-attr]
    except AttributeError:
        raise closed_error("add_cleanup") from None
    if cleanup._hooks is not hooks:
        cleanup._withdraw(hooks, fn, "add_cleanup")  # type: ignore[arg-type]


if SPEEDUPS and not TYPE_CHECKING:
    from . import _speedups

    # The common case in C, without this function's frame and **kwargs dict; every other case
    # (and every error) still goes through the function above. In the first interpreter of the
    # process that imports this only: see _speedups.c.
    if _speedups.setup_add_cleanup(add_cleanup, ENVIRON_KEY, partial):
        add_cleanup = _speedups.add_cleanup


def enter_context(environ: WSGIEnvironment, cm: AbstractContextManager[_T]) -> _T:
    """Enter the context manager ``cm`` now and exit it when this request's response closes.

    Returns what ``cm.__enter__()`` returned, like :meth:`contextlib.ExitStack.enter_context`.
    Its ``__exit__`` is called with the exception the request failed with: one the application
    raised, or the one the server was handling when it closed the body (an error while sending,
    a client that went away); with ``(None, None, None)`` otherwise. Its return value is
    ignored: by then there is nothing left to suppress. If the response closes (in another
    thread) before ``cm`` is registered, ``cm`` is exited at once with the ``RuntimeError``
    that is then raised.

    :raises RuntimeError: as :func:`add_cleanup`.
    :raises TypeError: ``cm`` is not a context manager.

    Example::

        conn = enter_context(environ, closing(sqlite3.connect(path)))
    """
    try:
        cleanup: ResponseCleanup = environ[ENVIRON_KEY]
    except (KeyError, TypeError):
        raise not_wrapped(environ, "enter_context") from None
    cls = type(cm)
    try:
        enter = cls.__enter__
        exit_: _ExitFunc = cls.__exit__  # type: ignore[assignment]
    except AttributeError:
        raise TypeError(
            f"enter_context() needs a context manager, got a {cls.__module__}.{cls.__qualname__} "
            "object without __enter__/__exit__"
        ) from None
    if cleanup._hooks is _CLOSED:
        raise closed_error("enter_context")
    result: _T = enter(cm)
    bound_exit: _ExitFunc = exit_.__get__(cm, cls)
    try:
        cleanup._register(_ContextExit(cleanup, bound_exit), "enter_context")
    except RuntimeError as exc:
        # Closed meanwhile: exit now, as ExitStack exits what it entered when an error follows.
        bound_exit(type(exc), exc, exc.__traceback__)
        raise
    return result


def on_success(
    environ: WSGIEnvironment, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> None:
    """Run ``fn(*args, **kwargs)`` once at close, only if the request succeeded.

    It runs after every hook and context exit of the request, whenever they were registered, in
    registration order with the other outcome callbacks, and before the functions given to
    :func:`~cleanup_middleware.defer` are handed over. The request succeeded if nothing raised:
    not the application or a view (an exception an error handler answered counts), not the
    body while it was sent or closed (as far as the server tells: the exception it is handling
    at close, as :func:`enter_context` is told), not a hook, not a context manager's
    ``__exit__``. Every outcome callback of a request sees the same outcome.

    :raises RuntimeError: as :func:`add_cleanup`.
    :raises TypeError: ``fn`` is not callable.

    Example::

        on_success(environ, queue.enqueue, send_receipt, order_id)  # after the commit
        on_success(environ, defer, environ, warm_cache, order_id)   # to the executor
    """
    _register_outcome(environ, True, fn, args, kwargs)


def on_failure(
    environ: WSGIEnvironment, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> None:
    """Run ``fn(*args, **kwargs)`` once at close, only if the request failed.

    When and in what order: as :func:`on_success`, whose opposite it is: a request runs its
    ``on_success`` functions or its ``on_failure`` functions, never both.

    :raises RuntimeError: as :func:`add_cleanup`.
    :raises TypeError: ``fn`` is not callable.

    Example::

        on_failure(environ, os.unlink, upload_path)  # a failed request leaves no upload
    """
    _register_outcome(environ, False, fn, args, kwargs)


def _register_outcome(
    environ: WSGIEnvironment,
    on_success: bool,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """Register ``fn`` for :func:`on_success` (or, if not ``on_success``, :func:`on_failure`)."""
    call, outcome = ("on_success", "succeeded") if on_success else ("on_failure", "failed")
    try:
        cleanup: ResponseCleanup = environ[ENVIRON_KEY]
    except (KeyError, TypeError):
        raise not_wrapped(environ, call) from None
    if not callable(fn):
        raise not_callable(call, f"to run at close if the request {outcome}", fn)
    work = partial(fn, *args, **kwargs) if args or kwargs else fn
    cleanup._register(_OutcomeCall(cleanup, on_success, work), call, outcome=True)
