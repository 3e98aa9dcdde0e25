"""OpenTelemetry metrics and spans of cleanup, which runs where request telemetry has stopped.

Cleanup runs after the response: an APM latency chart stops at the last byte, so a hook that
takes 2 s shows nowhere, although a gunicorn sync worker serves nobody for those 2 s. Failures
are log lines only. :func:`instrument` gives operators the numbers in the tools they already run,
for every :class:`~cleanup_middleware.CleanupMiddleware` of the process (those made before the
call too), following the conventions of OpenTelemetry's WSGI instrumentation:

* ``cleanup.hook.duration`` (histogram, ``s``): one point per hook run and per deferred function
  run, with ``cleanup.hook.name`` (``module.qualname``, as the logs name it) and, when it
  raised, ``error.type`` (the exception's class name);
* ``cleanup.response.abandoned`` (counter): responses closed by the garbage-collection net;
* ``cleanup.deferred.queue.depth`` (observable up-down counter): functions waiting in each
  :class:`~cleanup_middleware.deferred.DeferredPool`, by ``cleanup.deferred.pool``;
* ``cleanup.deferred.wait`` (histogram, ``s``): how long a deferred function waited between its
  hand-off at close and the start of its run;
* ``cleanup.deferred.inline`` (observable counter): functions a full pool ran in the caller's
  thread; ``cleanup.deferred.abandoned`` (observable counter): functions abandoned at shutdown;
* a span ``cleanup`` for each closed response that had hooks, covering them, with
  ``http.request.method`` and ``url.path`` (escaped and bounded as in the logs) and an
  ``exception`` event for each failing hook. Its parent is the span current at close if one is
  recording, else the span current when the request entered the middleware (with
  OpenTelemetry's WSGI middleware outside ours, the request's span). The hooks run with it
  current, so spans they start are its children.

Deferred functions run in a copy of the context of the code that called
:func:`~cleanup_middleware.defer`, so their spans belong to the request's trace.

Not instrumented, nothing of OpenTelemetry is imported and a request pays no more than a test
of a module global. Instrumented, each hook costs one clock read, shared by the span and the
histogram, and the histogram point; ``python -m bench.inprocess`` measures it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from functools import partial
from types import BuiltinFunctionType, FunctionType, MethodType
from typing import TYPE_CHECKING

from ._extras import missing_extra
from .cleanup import _add_observer, _Observer, _remove_observer, _Watcher
from .reporting import hook_name, method_and_path

try:
    from opentelemetry import context, metrics, trace
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:
    raise missing_extra(__name__, "otel", exc) from exc

from . import deferred

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["instrument", "uninstrument"]

#: The instrumentation scope of the meter and the tracer.
SCOPE = "cleanup_middleware"
# The context current when a request entered the middleware: the parent of its span.
_CONTEXT_KEY = "cleanup_middleware.otel.context"
# Buckets for hooks, which mostly take well under a millisecond, and the slow ones to 10 s.
_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Functions named by module and qualname alone, whose attributes can be kept by those.
_NAMED_BY_ATTRIBUTES = (FunctionType, MethodType, BuiltinFunctionType)
# The most attribute sets kept (functions made at run time could otherwise grow it for ever).
_CACHE_SIZE = 1024

_lock = threading.Lock()
_telemetry: _Telemetry | None = None


def instrument(
    meter_provider: metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> None:
    """Record metrics and spans of cleanup, for every middleware of the process, from now on.

    :param meter_provider: where the metrics go; with ``None``, OpenTelemetry's global one.
    :param tracer_provider: where the spans go; with ``None``, OpenTelemetry's global one.

    Calling it again replaces the providers. Example::

        from cleanup_middleware import otel

        otel.instrument()  # after the SDK is set up, e.g. in gunicorn's post_fork
    """
    global _telemetry
    telemetry = _Telemetry(
        (meter_provider or metrics.get_meter_provider()).get_meter(SCOPE),
        (tracer_provider or trace.get_tracer_provider()).get_tracer(SCOPE),
    )
    with _lock:
        old, _telemetry = _telemetry, telemetry
        if old is not None:
            old.stop()
        _add_observer(telemetry)


def uninstrument() -> None:
    """Stop recording: after it returns, nothing more is recorded."""
    global _telemetry
    with _lock:
        old, _telemetry = _telemetry, None
        if old is not None:
            old.stop()


class _Telemetry(_Observer):
    """The instruments and the tracer of one :func:`instrument` call, and what it records."""

    def __init__(self, meter: metrics.Meter, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self.active = True
        self.duration = meter.create_histogram(
            "cleanup.hook.duration",
            unit="s",
            description="How long each cleanup hook and deferred function ran.",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self.abandoned_responses = meter.create_counter(
            "cleanup.response.abandoned",
            unit="{response}",
            description="Responses nobody closed, whose hooks the garbage collector ran.",
        )
        self.wait = meter.create_histogram(
            "cleanup.deferred.wait",
            unit="s",
            description="How long deferred functions waited between hand-off and run.",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        meter.create_observable_up_down_counter(
            "cleanup.deferred.queue.depth",
            callbacks=[self._queued],
            unit="{function}",
            description="Deferred functions waiting in each DeferredPool's queue.",
        )
        meter.create_observable_counter(
            "cleanup.deferred.inline",
            callbacks=[self._ran_inline],
            unit="{function}",
            description="Deferred functions run in the server's thread: the queue was full.",
        )
        meter.create_observable_counter(
            "cleanup.deferred.abandoned",
            callbacks=[self._abandoned],
            unit="{function}",
            description="Deferred functions still queued or running when the process stopped.",
        )
        # Attribute sets by function (module, qualname): naming a hook costs microseconds.
        self._attributes: dict[tuple[object, object], dict[str, str]] = {}

    def stop(self) -> None:
        self.active = False
        _remove_observer(self)

    def attributes(self, fn: object) -> dict[str, str]:
        """``cleanup.hook.name`` of a hook or deferred function, as the logs name it."""
        named = fn
        while type(named) is partial:
            named = named.func
        if type(named) not in _NAMED_BY_ATTRIBUTES:
            return {"cleanup.hook.name": hook_name(fn)}
        key = (getattr(named, "__module__", None), getattr(named, "__qualname__", None))
        attributes = self._attributes.get(key)
        if attributes is None:
            if len(self._attributes) >= _CACHE_SIZE:
                self._attributes.clear()
            attributes = self._attributes[key] = {"cleanup.hook.name": hook_name(fn)}
        return attributes

    def record(self, fn: object, seconds: float, error: BaseException | None) -> None:
        attributes = self.attributes(fn)
        if error is not None:
            attributes = {**attributes, "error.type": type(error).__qualname__}
        self.duration.record(seconds, attributes)

    # What the observer seam tells (see cleanup._Observer).

    def request(self, environ: WSGIEnvironment) -> None:
        if self.active:
            environ[_CONTEXT_KEY] = context.get_current()

    def watch(self, environ: WSGIEnvironment) -> _Watcher | None:
        if not self.active:
            return None
        parent = None
        if not trace.get_current_span().is_recording():
            parent = environ.get(_CONTEXT_KEY)
        method, path = method_and_path(environ)
        start = time.time_ns()
        span = self.tracer.start_span(
            "cleanup",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes={"http.request.method": method, "url.path": path},
            start_time=start,
        )
        return _SpanWatch(self, span, start)

    def deferred(
        self, work: object, request: str, waited: float, seconds: float, error: BaseException | None
    ) -> None:
        if self.active:
            self.wait.record(waited, self.attributes(work))
            self.record(work, seconds, error)

    def abandoned(self, environ: WSGIEnvironment) -> None:
        if self.active:
            self.abandoned_responses.add(1)

    # Observable instruments' callbacks.

    def _queued(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self.active:
            return []
        return [
            Observation(len(pool._queue), {"cleanup.deferred.pool": pool.name})
            for pool in list(deferred._pools)
        ]

    def _ran_inline(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self.active:
            return []
        return [
            Observation(pool._ran_inline, {"cleanup.deferred.pool": pool.name})
            for pool in list(deferred._pools)
        ]

    def _abandoned(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(deferred._abandoned)] if self.active else []


class _SpanWatch(_Watcher):
    """One response's ``cleanup`` span, current while its hooks run, and their histogram points."""

    __slots__ = ("seconds", "span", "start", "telemetry", "token")

    def __init__(self, telemetry: _Telemetry, span: trace.Span, start: int) -> None:
        self.telemetry = telemetry
        self.span = span
        self.start = start
        self.seconds = 0.0
        self.token = context.attach(trace.set_span_in_context(span))

    def hook(
        self, environ: WSGIEnvironment, hook: object, seconds: float, error: BaseException | None
    ) -> None:
        self.seconds += seconds
        if error is not None:
            self.span.record_exception(error)
            self.span.set_status(Status(StatusCode.ERROR))
            self.span.set_attribute("error.type", type(error).__qualname__)
        if self.telemetry.active:
            self.telemetry.record(hook, seconds, error)

    def end(self) -> None:
        context.detach(self.token)
        # The span's times are the hooks' clock: it ends when the last one did.
        self.span.end(end_time=self.start + round(self.seconds * 1e9))
