"""Slow after-response work that does not hold the server's thread: :func:`defer`.

A cleanup hook (:func:`~cleanup_middleware.add_cleanup`) runs in the server's thread when the
server closes the response. For a hook of 200 ms (uploading an audit record, warming a cache,
deleting a large scratch tree) that is 200 ms in which a gunicorn sync worker serves nobody, and
in which a gthread worker's next request on the same keep-alive connection waits.
:func:`defer` keeps the *when* of ``add_cleanup`` (once the response is closed and every hook
of the request ran) and hands the function to an executor instead, so the server's thread
returns at once.

The default executor is a :class:`DeferredPool`: a small bounded thread pool per process,
created on first use and fork-safe. Its policies:

* **Full queue**: when :data:`DEFAULT_MAX_QUEUED` functions are already waiting, the next one
  runs inline, in the server's thread at close, as a hook would; nothing is dropped and the
  queue's memory stays bounded. The worker slows down instead, which is the back-pressure
  an overloaded process needs. Logged as a warning at most once a minute.
* **Refused work**: an executor that refuses work (one that was shut down) gets the same
  fallback, logged each time.
* **Context**: each deferred function runs in a copy of the :mod:`contextvars` context of the
  code that called :func:`defer`, as :func:`asyncio.to_thread` runs its function, whatever the
  executor: it sees the request's context variables (structlog's bound variables, an
  OpenTelemetry context), never another request's, and what it sets stays its own.
* **Failures**: a deferred function that raises is logged on the ``cleanup_middleware``
  logger as a failing hook is (its name, the request's method and path), and goes no further.
* **Graceful stop**: a stopping process waits for the work every :class:`DeferredPool` of it
  accepted, up to a limit, and says at WARNING what it waits for and then what it abandons, by
  name and count: nobody configures our logger under gunicorn or waitress, and Python's last
  resort prints WARNING and above on stderr, the server's own output. A gunicorn worker finds
  its own ``graceful_timeout`` (see :class:`_WorkerStop`), with no line in a config file: its
  wait ends :data:`STOP_MARGIN` before the arbiter's kill, counted from when it was told to
  stop, however long its last requests then take. Any other process waits at exit, up to
  :data:`EXIT_DRAIN_TIMEOUT`; :func:`drain` does the same from code.

Work that must survive a crash or a ``SIGKILL`` belongs in a task queue (Celery, RQ), not in a
thread of the web worker: ``defer(environ, send_receipt.delay, order_id)`` hands it to Celery
once the response is closed.
"""

from __future__ import annotations

import atexit
import contextvars
import gc
import os
import sys
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .cleanup import ENVIRON_KEY, RunsLast, _WatchedCall
from .reporting import describe_request, hook_name, logger, not_callable, not_wrapped

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .cleanup import ResponseCleanup

__all__ = [
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_MAX_WORKERS",
    "EXIT_DRAIN_TIMEOUT",
    "STOP_MARGIN",
    "DeferredPool",
    "default_executor",
    "defer",
    "drain",
    "worker_exit",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Threads of the default pool. Deferred work is mostly waiting (network, disk), and each
#: thread holds the GIL only while it computes.
DEFAULT_MAX_WORKERS = 4
#: Functions the default pool holds waiting. A full queue of 200 ms functions drains in
#: about 13 s on four threads, inside gunicorn's default ``graceful_timeout`` of 30 s.
DEFAULT_MAX_QUEUED = 256
#: Seconds a gunicorn worker leaves of its ``graceful_timeout`` (and ``timeout``), counted from
#: when it was told to stop, so that it logs what it abandons before the arbiter kills it.
STOP_MARGIN = 1.0
#: Seconds any other process waits at exit: gunicorn's default ``graceful_timeout`` (30 s)
#: less :data:`STOP_MARGIN`.
EXIT_DRAIN_TIMEOUT = 29.0
# How often the watcher of a gunicorn worker looks whether it was told to stop: it sees the
# stop at most this late, well inside STOP_MARGIN.
_STOP_POLL = 0.1
# At most one "queue full" warning per this many seconds and pool.
_FULL_WARNING_INTERVAL = 60.0


class _DeferredCall:
    """One deferred function with its arguments, the context it runs in, and the request it
    came from, for the log."""

    __slots__ = ("context", "request", "work")

    def __init__(
        self, work: Callable[[], object], context: contextvars.Context, request: str
    ) -> None:
        self.work = work
        self.context = context
        self.request = request  # method and path, escaped: never the environ itself

    def __call__(self) -> None:
        try:
            self.context.run(self.work)
        except Exception as exc:
            _log_failure(self, exc)

    @property
    def name(self) -> str:
        return hook_name(self.work)


class _FutureCall:
    """A :meth:`DeferredPool.submit` call: runs the function and settles its future."""

    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[], Any], future: Future[Any]) -> None:
        self.fn = fn
        self.future = future

    def __call__(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn()
        except BaseException as exc:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)

    @property
    def name(self) -> str:
        return hook_name(self.fn)


_Work = _DeferredCall | _FutureCall

# Every DeferredPool alive, for drain() and for resetting them in a forked child.
_pools: weakref.WeakSet[DeferredPool] = weakref.WeakSet()
# Deferred functions abandoned at a stop in this process, in all: for cleanup_middleware.otel.
_abandoned = 0


class DeferredPool(Executor):
    """A bounded thread pool that runs work after responses; the default executor of :func:`defer`.

    Threads are started when work comes and none is idle, up to ``max_workers``; they are
    daemon threads, so a process never hangs at exit on a deferred function: :func:`drain`
    decides how long to wait. When ``max_queued`` functions are waiting, :meth:`submit` runs the
    next one in the caller's thread (and :func:`defer` at close, in the server's thread).

    Fork-safe: in a child process the pool starts empty with no threads, and starts its own
    when work comes; work queued in the parent stays the parent's.

    :param max_workers: the most threads it runs at once.
    :param max_queued: the most functions it holds waiting.
    :param name: the prefix of its threads' names.

    Example::

        pool = DeferredPool(max_workers=8, max_queued=1000)
        app = CleanupMiddleware(app, executor=pool)
    """

    def __init__(
        self,
        max_workers: int = DEFAULT_MAX_WORKERS,
        max_queued: int = DEFAULT_MAX_QUEUED,
        *,
        name: str = "cleanup-middleware-defer",
    ) -> None:
        for key, value in (("max_workers", max_workers), ("max_queued", max_queued)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DeferredPool({key}={value!r}): give a whole number, at least 1")
        self.max_workers = max_workers
        self.max_queued = max_queued
        self.name = name
        self._shut_down = False
        self._drained = False  # by drain(): the exit net leaves it alone then
        self._start_empty()
        _pools.add(self)

    def _start_empty(self) -> None:
        """No threads, nothing queued: a new pool, or this one in a forked child."""
        # Re-entrant: a garbage collection while this thread holds it may finalize an unclosed
        # response, whose close() hands its deferred work to this very pool.
        self._condition = threading.Condition(threading.RLock())
        self._queue: deque[_Work] = deque()
        self._running: dict[int, _Work] = {}  # by thread id: what each thread runs now
        self._threads = 0
        self._idle = 0
        self._refused_since_warning = 0
        self._last_full_warning = -_FULL_WARNING_INTERVAL
        self._ran_inline = 0  # in all, in this process: for cleanup_middleware.otel

    def _put(self, work: _Work) -> bool:
        """Queue ``work``; false when the queue is full (the caller then runs it).

        :raises RuntimeError: the pool was shut down.
        """
        with self._condition:
            if self._shut_down:
                raise RuntimeError("cannot schedule new work after shutdown")
            if len(self._queue) >= self.max_queued:
                self._refused_since_warning += 1
                self._ran_inline += 1
                return False
            self._queue.append(work)
            if len(self._queue) > self._idle and self._threads < self.max_workers:
                self._threads += 1
                thread = threading.Thread(
                    target=self._work, name=f"{self.name}-{self._threads}", daemon=True
                )
                try:
                    thread.start()
                except RuntimeError:
                    # No thread (at interpreter shutdown, or none left): the caller runs it.
                    self._threads -= 1
                    self._queue.remove(work)
                    raise
            else:
                self._condition.notify()
        return True

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Run ``fn(*args, **kwargs)`` in the pool; in the caller's thread if the queue is full."""
        future: Future[_T] = Future()
        work = _FutureCall(partial(fn, *args, **kwargs), future)
        if not self._put(work):
            work()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work; with ``wait``, return once the accepted work finished.

        With ``cancel_futures``, :meth:`submit` calls not yet started are cancelled; functions
        from :func:`defer` still run, since nobody holds a future to learn that they did not.
        """
        with self._condition:
            self._shut_down = True
            if cancel_futures:
                for work in self._queue:
                    if isinstance(work, _FutureCall):
                        work.future.cancel()  # its turn then does nothing
            self._condition.notify_all()
            while wait and (self._queue or self._running):
                self._condition.wait()

    def _drain(self, deadline: float) -> None:
        """Shut down, and wait until ``deadline`` (monotonic) for the accepted work."""
        with self._condition:
            self._shut_down = self._drained = True
            self._condition.notify_all()
            while self._queue or self._running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)

    def _left(self) -> list[_Work]:
        """What is running or queued now, running first."""
        with self._condition:
            return [*self._running.values(), *self._queue]

    def _work(self) -> None:
        me = threading.get_ident()
        condition = self._condition
        with condition:
            while True:
                while not self._queue and not self._shut_down:
                    self._idle += 1
                    condition.wait()
                    self._idle -= 1
                if not self._queue:  # shut down, and nothing left to do
                    break
                work = self._running[me] = self._queue.popleft()
                condition.release()
                try:
                    work()
                except BaseException as exc:  # SystemExit from a deferred function, say
                    _log_failure(work, exc)
                finally:
                    condition.acquire()
                    del self._running[me]
                    if self._shut_down:
                        condition.notify_all()  # drain() or shutdown(wait=True) is waiting
            self._threads -= 1

    def _warn_full(self, work: _Work) -> None:
        """Log, at most once a minute, that work ran inline because the queue was full."""
        now = time.monotonic()
        with self._condition:
            if now - self._last_full_warning < _FULL_WARNING_INTERVAL:
                return
            self._last_full_warning = now
            count, self._refused_since_warning = self._refused_since_warning, 0
        logger.warning(
            "deferred work ran in the server's thread at close: the %s queue was full "
            "(%d functions waiting, %d run inline since the last warning, the latest %s); "
            "give CleanupMiddleware(executor=DeferredPool(max_workers=..., max_queued=...)) "
            "more threads, or hand slow work to a task queue",
            self.name,
            self.max_queued,
            count,
            work.name,
        )


_default_pool: DeferredPool | None = None
_default_pool_lock = threading.RLock()  # re-entrant for the reason the pools' locks are


def default_executor() -> DeferredPool:
    """This process's default :class:`DeferredPool`, made on first use."""
    global _default_pool
    pool = _default_pool
    if pool is None:
        with _default_pool_lock:
            pool = _default_pool
            if pool is None:
                pool = _default_pool = DeferredPool()
    return pool


def _reset_after_fork() -> None:
    # Locks held by another thread at the fork would stay held forever in the child, and the
    # parent's threads do not exist here: every pool starts over, empty, and a forked gunicorn
    # worker looks for its own worker object.
    global _default_pool_lock, _worker_lock, _looked_for_worker, _worker_stop
    _default_pool_lock = threading.RLock()
    _worker_lock = threading.RLock()
    _looked_for_worker, _worker_stop = False, None
    for pool in list(_pools):
        pool._start_empty()
    # Gunicorn's arbiter forks a worker from spawn_worker(), whose local ``worker`` is this
    # process's (as with --preload): watch it from its first moment.
    forking = sys._getframe().f_back
    worker = forking.f_locals.get("worker") if forking is not None else None
    if _is_gunicorn_worker(worker):
        _watch_gunicorn_worker(worker)


os.register_at_fork(after_in_child=_reset_after_fork)


def defer(environ: WSGIEnvironment, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
    """Run ``fn(*args, **kwargs)`` in an executor once this request's response is closed.

    ``fn`` is handed over after the body's own ``close()`` and every cleanup hook of the
    request ran, so the server's thread returns at once; deferred functions are handed over in
    the order they were deferred. The executor is the middleware's ``executor``, else this
    process's :class:`DeferredPool` (see the module's docs for a full queue, failures and
    shutdown). ``fn`` must not use the request's resources that hooks close, nor the environ.

    :raises RuntimeError: ``environ`` did not pass through
        :class:`~cleanup_middleware.CleanupMiddleware`, or its response was already closed.
    :raises TypeError: ``fn`` is not callable.

    Example::

        defer(environ, upload_audit_record, user_id, action="download")
    """
    try:
        cleanup: ResponseCleanup = environ[ENVIRON_KEY]
    except (KeyError, TypeError):
        raise not_wrapped(environ, "defer") from None
    if not callable(fn):
        raise not_callable("defer", "to run after the response", fn)
    work = partial(fn, *args, **kwargs) if args or kwargs else fn
    # The caller's context, as now: what the request bound before it deferred (O(1) to copy).
    hand_off = _HandOff(cleanup, work, contextvars.copy_context(), environ)
    cleanup._register(hand_off, "defer", last=True)


class _HandOff(RunsLast):
    """A function given to :func:`defer`: at its turn in ``close()``, last of all, it goes to the
    executor. Deferred functions sit at the bottom of the stack in the order deferred, so they
    are handed over in that order, after every hook."""

    __slots__ = ("cleanup", "context", "environ", "work")

    def __init__(
        self,
        cleanup: ResponseCleanup,
        work: Callable[[], object],
        context: contextvars.Context,
        environ: WSGIEnvironment,
    ) -> None:
        self.cleanup = cleanup
        self.work = work
        self.context = context
        self.environ = environ  # for the log: method and path

    def __call__(self) -> None:
        request = describe_request(self.environ)
        executor: Executor | None = getattr(self.cleanup, "executor", None)
        if executor is None:
            executor = default_executor()
        observers = self.cleanup._observers
        work = _DeferredCall(
            _WatchedCall(self.work, observers, request) if observers else self.work,
            self.context,
            request,
        )
        try:
            if isinstance(executor, DeferredPool):
                if not executor._put(work):
                    executor._warn_full(work)
                    work()
                return
            executor.submit(work)
        except Exception as exc:
            logger.warning(
                "deferred function %s ran in the server's thread at close for %s: the "
                "executor refused it (%s: %s)",
                work.name,
                request,
                type(exc).__name__,
                exc,
            )
            work()

    @property
    def named_after(self) -> object:
        return self.work


class _DeferredHook:
    """A config hook declared ``defer = true``: called at close, it defers ``fn(environ)``.

    Deferred from the hook loop of ``close()``, it is handed off with the request's other
    deferred functions once every hook ran. Its context is a copy of the one ``close()`` runs
    in: the server thread's, which holds what the request bound where the server closes the
    response in the thread that ran the application, as most do. Equal for equal functions, so
    that nested middleware with the same config register it once.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[WSGIEnvironment], object]) -> None:
        self.fn = fn

    def __call__(self, environ: WSGIEnvironment) -> None:
        defer(environ, self.fn, environ)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _DeferredHook) and other.fn == self.fn

    def __hash__(self) -> int:
        return hash(self.fn)


def deferring(fn: Callable[[WSGIEnvironment], object]) -> Callable[[WSGIEnvironment], None]:
    """``fn`` as a config hook declared ``defer = true`` (see :class:`_DeferredHook`)."""
    return _DeferredHook(fn)


def drain(timeout: float) -> int:
    """Wait up to ``timeout`` seconds for the work the process's pools accepted; log the rest.

    Every :class:`DeferredPool` of this process is shut down: deferred work that comes later
    runs inline at close. What is queued or running is logged as a warning when the wait
    begins, and what still is when the time is up, by name and count; that is abandoned when
    the process exits. Returns how many functions were abandoned. An executor given as
    ``executor=`` that is not a :class:`DeferredPool` is left to its own shutdown rules.
    """
    return _drain_pools(list(_pools), timeout)


def _drain_pools(pools: list[DeferredPool], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    pending = _left_in(pools)
    if pending:
        _log_waiting(pending, timeout)
    left: list[_Work] = []
    try:
        for pool in pools:
            pool._drain(deadline)
    finally:
        # Also when the wait is cut short (gunicorn's SIGABRT raises SystemExit in it).
        left = _left_in(pools)
        if left:
            _log_abandoned(left, timeout)
    return len(left)


def _left_in(pools: list[DeferredPool]) -> list[_Work]:
    return [work for pool in pools for work in pool._left()]


def _log_waiting(works: list[_Work], seconds: float) -> None:
    logger.warning(
        "waiting up to %.1f s for %d deferred function%s still queued or running, lost if the "
        "process is killed first: %s",
        seconds,
        len(works),
        "" if len(works) == 1 else "s",
        _names(works),
    )


def _log_abandoned(works: list[_Work], seconds: float) -> None:
    global _abandoned
    _abandoned += len(works)  # each piece of work is said abandoned once
    logger.warning(
        "abandoned %d deferred function%s still queued or running after %.1f s: %s",
        len(works),
        "" if len(works) == 1 else "s",
        seconds,
        _names(works),
    )


def _names(works: list[_Work]) -> str:
    counts = Counter(work.name for work in works)
    return ", ".join(f"{count} x {name}" for name, count in counts.most_common())


class _WorkerStop:
    """A gunicorn worker's stop as the worker sees it: when its wait for deferred work ends.

    Gunicorn kills a worker ``graceful_timeout`` after telling it to stop (or ``timeout`` after
    it last checked in, when it stops on its own after ``max_requests``), however much of that
    it spent finishing its last requests. So the wait ends :data:`STOP_MARGIN` before then,
    counted from when the worker's ``alive`` flag dropped, whoever waits: a thread that watches
    the flag (from when this module is imported in the worker, or from the fork when it was
    imported in gunicorn's master) and says at the deadline what is left if the worker is still
    busy, :func:`worker_exit`, or the exit net. Each piece of work is said once as waited for
    and once as abandoned, whoever sees it first.

    :param worker: this process's gunicorn worker object.

    Example::

        stop = _WorkerStop(worker)
        stop.drain()  # at the worker's exit
    """

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        cfg = worker.cfg
        limit = cfg.graceful_timeout if not cfg.timeout else min(cfg.graceful_timeout, cfg.timeout)
        self.limit = max(0.0, limit - STOP_MARGIN)
        self.deadline: float | None = None
        self._lock = threading.Lock()
        self._said_waiting: set[_Work] = set()
        self._said_abandoned: set[_Work] = set()

    def watch(self) -> None:
        """Wait for the worker to stop; at the deadline, say what is left."""
        while self.worker.alive:  # as long as the worker serves
            time.sleep(_STOP_POLL)
        time.sleep(max(0.0, self.begin() - time.monotonic()))
        self.report()

    def begin(self) -> float:
        """The deadline, set by whoever sees the stop first; say what is pending, if new."""
        with self._lock:
            if self.deadline is None:
                self.deadline = time.monotonic() + self.limit
            deadline = self.deadline
        pending = self._new(self._said_waiting)
        if pending:
            _log_waiting(pending, max(0.0, deadline - time.monotonic()))
        return deadline

    def drain(self) -> None:
        """Shut the pools down and wait for them until the deadline; say what is left."""
        deadline = self.begin()
        pools = list(_pools)
        try:
            for pool in pools:
                pool._drain(deadline)
        finally:
            self.report()

    def report(self) -> None:
        left = self._new(self._said_abandoned)
        if left:
            _log_abandoned(left, self.limit)

    def _new(self, said: set[_Work]) -> list[_Work]:
        """What the pools hold now, if any of it is not in ``said`` yet (all of it is then)."""
        works = _left_in(list(_pools))
        with self._lock:
            if said.issuperset(works):
                return []
            said.update(works)
        return works


# This process's gunicorn worker, once looked for: at import, or at the fork.
_looked_for_worker = False
_worker_stop: _WorkerStop | None = None
_worker_lock = threading.RLock()  # re-entrant for the reason the pools' locks are


def _watch_gunicorn_worker(worker: Any = None) -> None:
    """In a gunicorn worker, start watching for its stop; elsewhere nothing. Once a process."""
    global _looked_for_worker, _worker_stop
    with _worker_lock:
        if _looked_for_worker:
            return
        _looked_for_worker = True
        if worker is None:
            worker = _find_gunicorn_worker()
            if worker is None:
                return
        stop = _worker_stop = _WorkerStop(worker)
    threading.Thread(target=stop.watch, name="cleanup-middleware-stop", daemon=True).start()


def _is_gunicorn_worker(candidate: object) -> bool:
    base = sys.modules.get("gunicorn.workers.base")
    return base is not None and isinstance(candidate, base.Worker)


def _find_gunicorn_worker() -> Any:
    """This process's gunicorn worker object, or None in any other process.

    Gunicorn imports the application in a method of the worker (``load_wsgi``), and every
    worker class runs its loop (``run``) and handles requests (``handle``) in methods of it, so
    a thread's stack holds it as ``self``; failing that (a module imported in a server hook, or
    by gevent's pywsgi worker), the garbage collector's list of objects does.
    """
    if "gunicorn.workers.base" not in sys.modules:
        return None
    pid = os.getpid()

    def is_ours(candidate: object) -> bool:
        # The arbiter's copies of its other workers, made before the fork, are not.
        return _is_gunicorn_worker(candidate) and getattr(candidate, "pid", None) == pid

    for top in sys._current_frames().values():
        frame: FrameType | None = top
        while frame is not None:
            if frame.f_code.co_varnames[:1] == ("self",):
                candidate = frame.f_locals.get("self")
                if is_ours(candidate):
                    return candidate
            frame = frame.f_back
    return next((candidate for candidate in gc.get_objects() if is_ours(candidate)), None)


def worker_exit(server: Any, worker: Any) -> None:
    """Gunicorn server hook: a stopping worker waits for its deferred work, then logs the rest.

    Not needed any more (the worker finds its ``graceful_timeout`` itself and waits at exit),
    but harmless: ``cleanup-middleware serve`` installs it, so that the wait comes before a
    ``worker_exit`` hook of the operator's. It waits until :class:`_WorkerStop`'s deadline.
    """
    global _worker_stop
    with _worker_lock:
        stop = _worker_stop
        if stop is None or stop.worker is not worker:
            stop = _worker_stop = _WorkerStop(worker)
    stop.drain()


_watch_gunicorn_worker()


@atexit.register
def _drain_at_exit() -> None:
    if _worker_stop is not None:
        _worker_stop.drain()  # a gunicorn worker: until its deadline, at most once in effect
        return
    # Pools that drain() saw already had their wait.
    pools = [pool for pool in list(_pools) if not pool._drained]
    if _left_in(pools):
        _drain_pools(pools, EXIT_DRAIN_TIMEOUT)


def _log_failure(work: _Work, exc: BaseException) -> None:
    request = work.request if isinstance(work, _DeferredCall) else "a submit() call"
    logger.error("deferred function %s failed for %s", work.name, request, exc_info=exc)
