"""Misbehaving neighbours, in-process: servers and outer middleware that are not perfect.

* A server or outer middleware that never calls ``close()``: the hooks still run, when the
  response is garbage-collected, with a ``ResourceWarning`` naming the request. A last resort,
  not a substitute for ``close()``.
* Outer middleware that iterates the body itself, or wraps it (werkzeug's ``ClosingIterator``,
  OpenTelemetry's generator, a Sentry-style proxy): the hooks still run exactly once.
* Hooks that are slow or raise do not affect other requests; a hook raising ``KeyboardInterrupt``
  or ``SystemExit`` lets the remaining hooks run before it propagates.
"""

from __future__ import annotations

import gc
import logging
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from apps.fault_inproc import (
    FakeFileWrapper,
    collect_unraisable,
    make_environ,
    serve,
    start_response,
)
from werkzeug.utils import send_file
from werkzeug.wsgi import ClosingIterator

from cleanup_middleware import CleanupMiddleware, add_cleanup
from cleanup_middleware.response import CleanupResponse

App = Callable[..., Iterable[bytes]]


def recording_app(ran: list[str], body_kind: str = "list", tmp_path: Any = None) -> App:
    """An app registering hooks ``a`` and ``b`` (so they run b, a) and returning ``body_kind``."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        add_cleanup(environ, ran.append, "a")
        add_cleanup(environ, ran.append, "b")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        if body_kind == "list":
            return [b"one", b"two"]
        if body_kind == "generator":

            def generate() -> Iterator[bytes]:
                try:
                    yield b"one"
                    yield b"two"
                finally:
                    ran.append("generator-finally")

            return generate()
        path = tmp_path / "download.bin"
        path.write_bytes(b"x" * 10000)
        if body_kind == "file_wrapper":
            return environ["wsgi.file_wrapper"](_RecordingFile(path, ran), 4096)
        # send_file: werkzeug with the Response mixin, as a Flask view would do it.
        response = send_file(
            _RecordingFile(path, ran),
            environ,
            mimetype="application/octet-stream",
            response_class=CleanupResponse,
        )
        response.call_on_close(lambda: ran.append("call_on_close"))
        return response(environ, start_response)

    return app


class _RecordingFile:
    """A file whose ``close()`` leaves a trace, to check it is closed before the hooks run."""

    def __init__(self, path: Any, ran: list[str]) -> None:
        self._file = open(path, "rb")
        self._ran = ran

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def close(self) -> None:
        if not self._file.closed:
            self._ran.append("file-close")
        self._file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _collect_abandoned() -> None:
    """Drop everything unreachable now, as the collector would do some time later."""
    with collect_unraisable() as unraisable:
        gc.collect()
    assert unraisable == [], [u.exc_value for u in unraisable]


# --------------------------------------------------------------------------------------------
# A server or outer middleware that never calls close(): the GC safety net.

BODY_KINDS = ("list", "generator", "file_wrapper", "send_file")
EXPECTED_AT_GC = {
    "list": ["b", "a"],
    "generator": ["generator-finally", "b", "a"],
    "file_wrapper": ["file-close", "b", "a"],
    "send_file": ["file-close", "call_on_close", "b", "a"],
}


@pytest.mark.parametrize("reads", [0, 1, None], ids=["unread", "one-chunk", "read-all"])
@pytest.mark.parametrize("body_kind", BODY_KINDS)
def test_server_that_never_closes(body_kind: str, reads: int | None, tmp_path: Any) -> None:
    ran: list[str] = []
    mw = CleanupMiddleware(recording_app(ran, body_kind, tmp_path))
    environ = make_environ("GET", "/download/report", file_wrapper=FakeFileWrapper)

    serve(mw, environ, reads=reads, closes=0)
    if body_kind == "generator" and reads is None:
        ran.remove("generator-finally")  # ran when the generator was exhausted, not at close
    assert "a" not in ran, "a hook ran although nothing closed the response"

    del environ
    with pytest.warns(ResourceWarning, match=r"GET /download/report") as warned:
        _collect_abandoned()
    expected = EXPECTED_AT_GC[body_kind]
    if body_kind == "generator" and (reads is None or reads == 0):
        # Exhausted, or never started: nothing to run in its finally at close.
        expected = ["b", "a"]
    assert ran == expected
    assert len(warned) == 1
    # The warning tells the reader that this is a last resort, not a way to do it.
    assert "close()" in str(warned[0].message)


def test_outer_middleware_that_drops_the_body() -> None:
    # Buffers the body and returns its own list, forgetting the inner body's close().
    ran: list[str] = []
    inner = CleanupMiddleware(recording_app(ran))

    def buffering(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return [b"".join(inner(environ, start_response))]

    environ = make_environ("POST", "/api/upload")
    assert serve(buffering, environ) == [b"onetwo"]
    assert ran == []
    del environ
    with pytest.warns(ResourceWarning, match=r"POST /api/upload"):
        _collect_abandoned()
    assert ran == ["b", "a"]


def test_a_closed_response_is_not_run_again_by_the_collector() -> None:
    ran: list[str] = []
    mw = CleanupMiddleware(recording_app(ran))
    environ = make_environ()
    serve(mw, environ, closes=1)
    del environ
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        _collect_abandoned()
    assert ran == ["b", "a"]


def test_collector_net_runs_every_hook_even_if_one_raises(caplog: Any) -> None:
    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        add_cleanup(environ, ran.append, "a")
        add_cleanup(environ, _raise, ValueError("boom"))
        add_cleanup(environ, ran.append, "c")
        start_response("200 OK", [])
        return [b"x"]

    environ = make_environ("GET", "/gc-raise")
    serve(CleanupMiddleware(app), environ, closes=0)
    del environ
    with pytest.warns(ResourceWarning), caplog.at_level(logging.ERROR, "cleanup_middleware"):
        _collect_abandoned()
    assert ran == ["c", "a"]
    assert any("GET /gc-raise" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------------------------
# Outer middleware that iterates or wraps the body.


def closing_iterator_mw(app: App, ran: list[str]) -> App:
    """The common pattern: werkzeug's ClosingIterator with a callback of its own."""

    def mw(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return ClosingIterator(app(environ, start_response), lambda: ran.append("outer"))

    return mw


def otel_mw(app: App, ran: list[str]) -> App:
    """The shape of OpenTelemetry's WSGI middleware: a generator that closes in ``finally``."""

    def _end_span_after_iterating(iterable: Iterable[bytes]) -> Iterator[bytes]:
        try:
            yield from iterable
        finally:
            close = getattr(iterable, "close", None)
            if close:
                close()
            ran.append("outer")

    def mw(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return _end_span_after_iterating(app(environ, start_response))

    return mw


def proxy_mw(app: App, ran: list[str]) -> App:
    """A proxy class, as Sentry's: forwards iteration and close()."""

    class Proxy:
        def __init__(self, body: Iterable[bytes]) -> None:
            self.body = body

        def __iter__(self) -> Iterator[bytes]:
            return iter(self.body)

        def close(self) -> None:
            try:
                close = getattr(self.body, "close", None)
                if close:
                    close()
            finally:
                ran.append("outer")

    def mw(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return Proxy(app(environ, start_response))

    return mw


def buffering_mw(app: App, ran: list[str]) -> App:
    """Iterates the body itself (to buffer or rewrite it), then closes it, as it should."""

    def mw(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = app(environ, start_response)
        try:
            data = b"".join(body)
        finally:
            close = getattr(body, "close", None)
            if close:
                close()
            ran.append("outer")
        return [data]

    return mw


OUTER = {
    "ClosingIterator": closing_iterator_mw,
    "opentelemetry": otel_mw,
    "proxy": proxy_mw,
    "buffering": buffering_mw,
}


@pytest.mark.parametrize("closes", [1, 2])
@pytest.mark.parametrize("reads", [0, 1, None], ids=["unread", "one-chunk", "read-all"])
@pytest.mark.parametrize("body_kind", BODY_KINDS)
@pytest.mark.parametrize("outer", list(OUTER))
def test_outer_middleware_keeps_hooks_exactly_once(
    outer: str, body_kind: str, reads: int | None, closes: int, tmp_path: Any
) -> None:
    ran: list[str] = []
    app = OUTER[outer](CleanupMiddleware(recording_app(ran, body_kind, tmp_path)), ran)
    environ = make_environ("GET", "/outer", file_wrapper=FakeFileWrapper)

    serve(app, environ, reads=reads, closes=closes)
    if outer == "opentelemetry" and reads == 0:
        # The server closed the generator before its first next(): a generator that never
        # started never runs its finally, so the inner body is never closed. Only the collector
        # can run the hooks now (and warns).
        assert "a" not in ran
        del environ
        with pytest.warns(ResourceWarning, match="GET /outer"):
            _collect_abandoned()
    assert ran.count("a") == ran.count("b") == 1, ran
    hooks = [r for r in ran if r in ("a", "b")]
    assert hooks == ["b", "a"]
    if "file-close" in ran:
        assert ran.index("file-close") < ran.index("b"), "file must be closed before hooks"


# --------------------------------------------------------------------------------------------
# Hooks that are slow or raise, and other requests.


def _raise(exc: BaseException) -> None:
    raise exc


def test_slow_hook_does_not_hold_up_other_requests() -> None:
    ran: list[str] = []
    lock = threading.Lock()
    release, blocked = threading.Event(), threading.Event()

    def slow() -> None:
        blocked.set()
        assert release.wait(10)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        add_cleanup(environ, lambda: _append(lock, ran, path))
        if path == "/slow":
            add_cleanup(environ, slow)
        start_response("200 OK", [])
        return [path.encode()]

    mw = CleanupMiddleware(app)
    errors: list[BaseException] = []

    def slow_request() -> None:
        try:
            serve(mw, make_environ("GET", "/slow"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=slow_request)
    thread.start()
    try:
        assert blocked.wait(10), "the slow hook never started"
        for i in range(50):
            assert serve(mw, make_environ("GET", f"/fast/{i}")) == [f"/fast/{i}".encode()]
        # Every other request finished, hooks included, while /slow's hook still waits.
        assert ran == [f"/fast/{i}" for i in range(50)]
    finally:
        release.set()
        thread.join(10)
    assert not thread.is_alive() and errors == []
    assert ran[-1] == "/slow"


def _append(lock: threading.Lock, ran: list[str], item: str) -> None:
    with lock:
        ran.append(item)


def test_raising_hook_does_not_affect_other_requests(caplog: Any) -> None:
    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        add_cleanup(environ, ran.append, path + ":first")
        if path == "/bad":
            add_cleanup(environ, _raise, RuntimeError("hook failed on purpose"))
        add_cleanup(environ, ran.append, path + ":last")
        start_response("200 OK", [])
        return [b"ok"]

    mw = CleanupMiddleware(app)
    with caplog.at_level(logging.ERROR, "cleanup_middleware"):
        serve(mw, make_environ("GET", "/good1"))
        serve(mw, make_environ("DELETE", "/bad"))  # close() does not raise: logged only
        serve(mw, make_environ("GET", "/good2"))
    assert ran == [
        "/good1:last",
        "/good1:first",
        "/bad:last",
        "/bad:first",
        "/good2:last",
        "/good2:first",
    ]
    [failure] = [r for r in caplog.records if r.name == "cleanup_middleware"]
    assert "DELETE /bad" in failure.getMessage()
    assert failure.exc_info and isinstance(failure.exc_info[1], RuntimeError)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_hook_runs_the_rest_then_propagates(
    exc_type: type[BaseException],
) -> None:
    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        add_cleanup(environ, ran.append, "first")
        add_cleanup(environ, _raise, exc_type("from a hook"))
        add_cleanup(environ, ran.append, "last")
        start_response("200 OK", [])
        return [b"ok"]

    mw = CleanupMiddleware(app)
    environ = make_environ()
    body = mw(environ, start_response)
    assert list(body) == [b"ok"]
    with pytest.raises(exc_type, match="from a hook"):
        body.close()  # type: ignore[attr-defined]
    assert ran == ["last", "first"]
    body.close()  # type: ignore[attr-defined]  # and only once
    assert ran == ["last", "first"]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_first_of_two_base_exceptions_wins_and_every_hook_runs(
    exc_type: type[BaseException],
) -> None:
    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        add_cleanup(environ, ran.append, "first")
        add_cleanup(environ, _raise, SystemExit("second to run"))
        add_cleanup(environ, ran.append, "middle")
        add_cleanup(environ, _raise, exc_type("first to run"))
        add_cleanup(environ, ran.append, "last")
        start_response("200 OK", [])
        return [b"ok"]

    body = CleanupMiddleware(app)(make_environ(), start_response)
    with pytest.raises(exc_type, match="first to run"):
        body.close()  # type: ignore[attr-defined]
    assert ran == ["last", "middle", "first"]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_hook_propagates_when_the_app_raised(
    exc_type: type[BaseException],
) -> None:
    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        add_cleanup(environ, ran.append, "first")
        add_cleanup(environ, _raise, exc_type("from a hook"))
        add_cleanup(environ, ran.append, "last")
        raise LookupError("the app failed")

    with pytest.raises(exc_type, match="from a hook") as info:
        CleanupMiddleware(app)(make_environ(), start_response)
    assert ran == ["last", "first"]
    # The application's error is not lost: it is the context of the interrupt.
    assert isinstance(info.value.__context__, LookupError)


def test_ordinary_hook_error_never_replaces_the_app_error() -> None:
    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        add_cleanup(environ, ran.append, "first")
        add_cleanup(environ, _raise, ValueError("from a hook"))
        raise LookupError("the app failed")

    for option in ("log", "raise"):
        with pytest.raises(LookupError, match="the app failed"):
            CleanupMiddleware(app, on_hook_error=option)(make_environ(), start_response)  # type: ignore[arg-type]
    assert ran == ["first", "first"]
