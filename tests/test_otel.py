"""``cleanup_middleware.otel`` against the real OpenTelemetry SDK, in-process.

Metrics are read with the SDK's ``InMemoryMetricReader``, spans with its ``InMemorySpanExporter``
behind a ``SimpleSpanProcessor``. Hook durations come from a fake clock that the hooks advance
(``tests/test_observers.py``), so every figure is exact and nothing depends on this machine's
speed. The same under gunicorn, behind OpenTelemetry's own WSGI middleware: test_otel_gunicorn.py.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the test extra: pip install -e '.[test]'")

from conftest import Clock
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_observers import Inline, failing
from test_semantics import make_environ, serve, start_response

from cleanup_middleware import CleanupMiddleware, add_cleanup, cleanup, defer, otel
from cleanup_middleware.deferred import DeferredPool, _drain_pools


class Telemetry:
    """The SDK's providers with in-memory readers, instrumented for one test."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.exporter = InMemorySpanExporter()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.tracer_provider.get_tracer("test")

    def points(self, name: str) -> list[Any]:
        """The data points of metric ``name``, empty when it has none."""
        data = self.reader.get_metrics_data()
        return [
            point
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def durations(self) -> dict[tuple[tuple[str, Any], ...], tuple[int, float]]:
        """``cleanup.hook.duration`` by attribute set: (count, sum)."""
        return {
            tuple(sorted(point.attributes.items())): (point.count, point.sum)
            for point in self.points("cleanup.hook.duration")
        }

    def spans(self, name: str = "cleanup") -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if span.name == name]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    recorded = Telemetry()
    otel.instrument(recorded.meter_provider, recorded.tracer_provider)
    try:
        yield recorded
    finally:
        otel.uninstrument()
        recorded.meter_provider.shutdown()
        recorded.tracer_provider.shutdown()


def named(name: str, extra: dict[str, str] | None = None) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted({"cleanup.hook.name": name, **(extra or {})}.items()))


def hooks_app(clock: Clock, seen: list[Any] | None = None) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        add_cleanup(environ, partial(clock.takes(0.25)))
        add_cleanup(environ, failing)
        if seen is not None:
            add_cleanup(environ, lambda: seen.append(trace.get_current_span()))
        add_cleanup(environ, clock.takes(2))
        start_response("200 OK", [])
        return [b"x"]

    return app


def one_hook_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    add_cleanup(environ, lambda: None)
    start_response("200 OK", [])
    return [b"x"]


def test_each_hook_is_a_histogram_point_named_as_the_logs_name_it(
    telemetry: Telemetry, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    serve(CleanupMiddleware(hooks_app(clock)))
    serve(CleanupMiddleware(hooks_app(clock)))

    assert telemetry.durations() == {
        named("conftest.takes_2s"): (2, 4.0),
        named("test_observers.failing", {"error.type": "ValueError"}): (2, 0.0),
        named("conftest.takes_0.25s"): (2, 0.5),
    }
    [metric] = [
        m
        for r in telemetry.reader.get_metrics_data().resource_metrics  # type: ignore[union-attr]
        for s in r.scope_metrics
        for m in s.metrics
        if m.name == "cleanup.hook.duration"
    ]
    assert metric.unit == "s"
    assert "cleanup hook test_observers.failing failed for GET /thing" in caplog.text


def test_a_span_per_closed_response_with_hooks_child_of_the_span_current_at_close(
    telemetry: Telemetry, clock: Clock
) -> None:
    seen: list[Any] = []
    with telemetry.tracer.start_as_current_span("request") as request:
        serve(CleanupMiddleware(hooks_app(clock, seen)), make_environ(PATH_INFO="/a\nb\x1b"))
        serve(CleanupMiddleware(lambda environ, start_response: [b""]))  # no hooks: no span

    [span] = telemetry.spans()
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    assert span.context.trace_id == request.get_span_context().trace_id
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "url.path": "/a\\x0ab\\x1b",  # escaped as in the logs
        "error.type": "ValueError",
    }
    [event] = span.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "ValueError"
    assert span.status.status_code == trace.StatusCode.ERROR
    # One clock for the span and the histogram: the span lasts as long as its hooks.
    assert span.end_time is not None and span.start_time is not None
    assert span.end_time - span.start_time == 2_250_000_000
    # The hooks ran with the span current.
    assert [s.get_span_context().span_id for s in seen] == [span.context.span_id]


def test_with_no_span_recording_at_close_the_parent_is_the_span_of_the_request(
    telemetry: Telemetry,
) -> None:
    # As with OpenTelemetry's WSGI middleware outside ours: its span is current while the
    # application runs, and no longer when the server closes the body.
    with telemetry.tracer.start_as_current_span("request") as request:
        body = CleanupMiddleware(one_hook_app)(make_environ(), start_response)
    body.close()  # type: ignore[attr-defined]

    [span] = telemetry.spans()
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id


def test_instrument_covers_middleware_made_before_and_uninstrument_stops_everything(
    clock: Clock,
) -> None:
    middleware = CleanupMiddleware(hooks_app(clock))
    telemetry = Telemetry()
    otel.instrument(telemetry.meter_provider, telemetry.tracer_provider)
    try:
        serve(middleware)
    finally:
        otel.uninstrument()
    before = telemetry.durations()
    serve(middleware)
    serve(CleanupMiddleware(hooks_app(clock)))

    assert sum(count for count, _ in before.values()) == 3
    assert telemetry.durations() == before
    assert len(telemetry.spans()) == 1
    assert cleanup.ResponseCleanup._observers == ()


def test_instrument_again_replaces_the_providers(clock: Clock) -> None:
    first, second = Telemetry(), Telemetry()
    otel.instrument(first.meter_provider, first.tracer_provider)
    try:
        otel.instrument(second.meter_provider, second.tracer_provider)
        serve(CleanupMiddleware(hooks_app(clock)))
    finally:
        otel.uninstrument()
    assert first.durations() == {} and first.spans() == []
    assert len(second.spans()) == 1
    assert len(cleanup.ResponseCleanup._observers) == 0


def test_responses_closed_by_the_garbage_collection_net_are_counted(
    telemetry: Telemetry,
) -> None:
    body = CleanupMiddleware(one_hook_app)(make_environ(), start_response)
    with pytest.warns(ResourceWarning):
        del body
        gc.collect()  # the environ and its cleanup refer to each other
    [point] = telemetry.points("cleanup.response.abandoned")
    assert point.value == 1


def test_deferred_functions_are_timed_and_their_wait_recorded(
    telemetry: Telemetry, clock: Clock
) -> None:
    given: list[Any] = []

    class Later(Inline):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            given.append(fn)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        defer(environ, clock.takes(1.5))
        defer(environ, failing)
        start_response("200 OK", [])
        return [b"x"]

    serve(CleanupMiddleware(app, executor=Later()))
    clock.now += 4  # both wait 4 s before the first runs
    for fn in given:
        fn()
    assert telemetry.durations() == {
        named("conftest.takes_1.5s"): (1, 1.5),
        named("test_observers.failing", {"error.type": "ValueError"}): (1, 0.0),
    }
    waits = {
        point.attributes["cleanup.hook.name"]: (point.count, point.sum)
        for point in telemetry.points("cleanup.deferred.wait")
    }
    assert waits == {"conftest.takes_1.5s": (1, 4.0), "test_observers.failing": (1, 5.5)}


def test_the_pool_queue_depth_inline_runs_and_abandoned_work(telemetry: Telemetry) -> None:
    pool = DeferredPool(max_workers=1, max_queued=2, name="observed")
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        defer(environ, ran.append, environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"x"]

    pool.submit(lambda: (started.set(), release.wait(10)))
    assert started.wait(10)
    middleware = CleanupMiddleware(app, executor=pool)
    for path in ("/1", "/2", "/3"):  # two wait in the queue; the third runs inline
        serve(middleware, make_environ(PATH_INFO=path))

    def of_pool(name: str) -> list[Any]:
        return [
            p.value
            for p in telemetry.points(name)
            if p.attributes.get("cleanup.deferred.pool") == "observed"
        ]

    assert ran == ["/3"]
    assert of_pool("cleanup.deferred.queue.depth") == [2]
    assert of_pool("cleanup.deferred.inline") == [1]
    [abandoned_before] = [p.value for p in telemetry.points("cleanup.deferred.abandoned")]
    try:
        assert _drain_pools([pool], 0) == 3  # the running one and the two queued
        [abandoned] = [p.value for p in telemetry.points("cleanup.deferred.abandoned")]
        assert abandoned == abandoned_before + 3
    finally:
        release.set()
        pool.shutdown(wait=True)
    assert sorted(ran) == ["/1", "/2", "/3"]
    assert of_pool("cleanup.deferred.queue.depth") == [0]


def test_deferred_work_carries_the_trace_context_of_the_request_that_deferred_it(
    telemetry: Telemetry,
) -> None:
    pool = DeferredPool(max_workers=1, name="traced")
    seen: list[trace.SpanContext] = []
    done = threading.Event()

    def work() -> None:
        seen.append(trace.get_current_span().get_span_context())
        done.set()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        defer(environ, work)
        start_response("200 OK", [])
        return [b"x"]

    try:
        with telemetry.tracer.start_as_current_span("request") as request:
            serve(CleanupMiddleware(app, executor=pool))
        assert done.wait(10)
    finally:
        pool.shutdown(wait=True)
    assert seen == [request.get_span_context()]
