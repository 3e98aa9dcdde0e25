"""OpenTelemetry under gunicorn: its own WSGI middleware outside ours, and ours alone.

The worker sets up the real SDK and ``cleanup_middleware.otel.instrument()``; each finished
span is written as a ``span`` record (``serverkit.record``), and ``/metrics`` answers the
in-memory reader's data points as JSON, for the test to read from outside.

* ``/otel/download?token=T``: ``OpenTelemetryMiddleware(CleanupMiddleware(app))``;
* ``/plain/download?token=T``: ``CleanupMiddleware(app)`` alone.

``app`` sends a fresh temporary file through ``wsgi.file_wrapper``; a hook deletes it and
records that it ran, and a deferred function records the span it runs under.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from serverkit import record

from cleanup_middleware import CleanupMiddleware, add_cleanup, defer, otel

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

SIZE = 256 * 1024


class RecordingExporter(SpanExporter):
    """Each finished span as a ``span`` record."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            record(
                "span",
                name=span.name,
                kind=span.kind.name,
                trace_id=span.context.trace_id,
                span_id=span.context.span_id,
                parent=span.parent.span_id if span.parent else None,
                attributes=dict(span.attributes or {}),
                events=[event.name for event in span.events],
            )
        return SpanExportResult.SUCCESS


reader = InMemoryMetricReader()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(RecordingExporter()))
otel.instrument(MeterProvider(metric_readers=[reader]), tracer_provider)


def deferred(token: str) -> None:
    context = trace.get_current_span().get_span_context()
    record("deferred", token=token, trace_id=context.trace_id, span_id=context.span_id)


def download(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    token = parse_qs(environ.get("QUERY_STRING", "")).get("token", [""])[0]
    fd, path = tempfile.mkstemp(prefix="otel-")
    with os.fdopen(fd, "wb") as file:
        file.write(b"x" * SIZE)

    def delete() -> None:
        os.unlink(path)
        record("hook", token=token)

    add_cleanup(environ, delete)
    defer(environ, deferred, token)
    start_response("200 OK", [("Content-Length", str(SIZE))])
    return environ["wsgi.file_wrapper"](open(path, "rb"))  # type: ignore[no-any-return]


def metrics(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    data = reader.get_metrics_data()
    points: list[dict[str, Any]] = [
        {
            "name": metric.name,
            "attributes": dict(point.attributes or {}),
            "count": getattr(point, "count", None),
        }
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    ]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(points).encode()]


with_otel = OpenTelemetryMiddleware(CleanupMiddleware(download), tracer_provider=tracer_provider)
plain = CleanupMiddleware(download)


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path.startswith("/otel/"):
        return with_otel(environ, start_response)  # type: ignore[no-any-return]
    if path.startswith("/plain/"):
        return plain(environ, start_response)
    return metrics(environ, start_response)
