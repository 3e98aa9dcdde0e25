"""Memory and references: a finished request leaves nothing behind.

* 100,000 in-process requests with hooks, file bodies (through a server-style
  ``wsgi.file_wrapper``, with a real open file), generator bodies, context managers and failing
  applications: traced memory does not grow.
* Once a response is closed, nothing of the middleware's still refers to its environ: with the
  garbage collector off, the environ is freed the moment the test drops it, although the test
  still holds the middleware and the closed body.
* A closed request leaves no reference cycle behind for the collector (and so nothing for the GC
  safety net to find).
"""

from __future__ import annotations

import contextlib
import gc
import io
import tracemalloc
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from apps.fault_inproc import FakeFileWrapper, WeakEnviron, make_environ, start_response

from cleanup_middleware import (
    CleanupMiddleware,
    ResponseCleanup,
    add_cleanup,
    enter_context,
    files,
)

KINDS = ("list", "generator", "file", "context", "raise_before", "raise_mid")
REQUESTS = 100_000
WARMUP = 5_000
# Traced memory may move by a few KiB (interned strings, free lists, dict resizes elsewhere);
# one leaked object per request would be several MiB.
ALLOWED_GROWTH = 64 * 1024


class Failure(Exception):
    pass


def _noop(*args: Any) -> None:
    pass


def make_app(path: str) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        kind = environ["PATH_INFO"][1:]
        # A hook holding the environ: the middleware must drop it once it ran.
        add_cleanup(environ, _noop, environ)
        add_cleanup(environ, _noop)
        if kind == "context":
            enter_context(environ, contextlib.nullcontext(environ))
        if kind == "raise_before":
            raise Failure
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        if kind == "list":
            return [b"chunk", b"chunk"]
        if kind == "file":
            return environ["wsgi.file_wrapper"](open(path, "rb"), 4096)
        return _generate(environ, fail=kind == "raise_mid")

    return app


def _generate(environ: dict[str, Any], fail: bool) -> Iterator[bytes]:
    add_cleanup(environ, _noop, environ)  # registered during iteration
    yield b"chunk"
    if fail:
        raise Failure
    yield b"chunk"


def one_request(mw: Any, kind: str, environ: dict[str, Any]) -> Any:
    """Serve one request like a server: iterate, then close. Returns the closed body."""
    try:
        body = mw(environ, start_response)
    except Failure:
        return None
    try:
        for _ in body:
            pass
    except Failure:
        pass
    finally:
        body.close()
    return body


@pytest.fixture
def payload(tmp_path: Any) -> str:
    path = tmp_path / "payload.bin"
    path.write_bytes(b"p" * 10_000)
    return str(path)


def test_no_memory_growth_over_100k_requests(payload: str) -> None:
    mw = CleanupMiddleware(make_app(payload))
    environs = {
        kind: make_environ("GET", f"/{kind}", file_wrapper=FakeFileWrapper) for kind in KINDS
    }

    def run(count: int) -> None:
        for i in range(count):
            kind = KINDS[i % len(KINDS)]
            # A fresh environ per request, as a server makes one (a shallow copy is enough).
            one_request(mw, kind, dict(environs[kind]))

    run(WARMUP)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        start, _ = tracemalloc.get_traced_memory()
        run(REQUESTS)
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = end - start
    if growth > ALLOWED_GROWTH:
        top = "\n".join(str(s) for s in after.compare_to(before, "lineno")[:10])
        pytest.fail(f"traced memory grew by {growth} bytes over {REQUESTS} requests:\n{top}")


@pytest.mark.parametrize("kind", KINDS)
def test_closed_response_does_not_hold_the_environ(kind: str, payload: str) -> None:
    mw = CleanupMiddleware(make_app(payload))
    gc.collect()
    gc.disable()
    try:
        environ = make_environ("GET", f"/{kind}", file_wrapper=FakeFileWrapper, cls=WeakEnviron)
        ref = weakref.ref(environ)
        body = one_request(mw, kind, environ)
        del environ
        # Freed by reference counting alone, while the middleware and the closed body live on.
        assert ref() is None, _referrers(ref)
        assert body is None or body is not None  # (kept alive until here on purpose)
    finally:
        gc.enable()


def _referrers(ref: weakref.ref[Any]) -> str:
    obj = ref()
    return "still referred to by: " + ", ".join(
        type(r).__name__ for r in gc.get_referrers(obj) if r is not obj
    )


def test_closed_requests_leave_no_cycles(payload: str) -> None:
    mw = CleanupMiddleware(make_app(payload))
    environs = {
        kind: make_environ("GET", f"/{kind}", file_wrapper=FakeFileWrapper) for kind in KINDS
    }
    gc.collect()
    gc.disable()
    try:
        for i in range(600):
            kind = KINDS[i % len(KINDS)]
            one_request(mw, kind, dict(environs[kind]))
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert unreachable == 0, f"{unreachable} objects in reference cycles after 600 requests"


class _Held:
    """Something a response holds, referenced weakly to see it freed."""

    def __call__(self) -> None:
        pass


@pytest.mark.parametrize("in_a_cycle", [False, True])
def test_a_response_releases_what_its_slots_hold(in_a_cycle: bool) -> None:
    # Every slot, on either base (the C one's dealloc, traverse and clear): one never filled in
    # by the middleware, so that no close() empties it first.
    response = ResponseCleanup()
    held = {name: _Held() for name in ("_body", "_close_body", "_failure", "hook")}
    response._body = held["_body"]  # type: ignore[assignment]
    response._close_body = held["_close_body"]
    response._failure = held["_failure"]  # type: ignore[assignment]
    response._hooks = [held["hook"]]
    if in_a_cycle:
        response._hooks.append(response)  # type: ignore[arg-type]  # freed by the collector only
    refs = {name: weakref.ref(obj) for name, obj in held.items()}
    del held
    gc.collect()
    gc.disable()
    try:
        del response
        if in_a_cycle:
            assert all(ref() is not None for ref in refs.values())
            gc.collect()
    finally:
        gc.enable()
    assert [name for name, ref in refs.items() if ref() is not None] == []


def _serve_flask(app: Any, path: str) -> bytes:
    environ = make_environ("GET", path, file_wrapper=FakeFileWrapper)
    environ.update(SERVER_NAME="localhost", SERVER_PORT="80", SERVER_PROTOCOL="HTTP/1.1")
    environ["wsgi.url_scheme"] = "http"
    body = app(environ, start_response)
    try:
        return b"".join(body)
    finally:
        body.close()


@pytest.mark.parametrize("served", ["fresh", "after-requests", "after-a-handled-error"])
def test_an_app_set_up_by_init_app_is_freed_at_refcount_zero(served: str) -> None:
    # Test suites make an app per test, and Flask tests for exactly this (its issue 3761). The
    # exception of a failed request, recorded for enter_context, has the request's frames in
    # its traceback, so it is dropped once the hooks ran.
    from flask import Flask

    import cleanup_middleware.flask

    gc.collect()
    gc.disable()
    try:
        app = Flask(__name__)
        cleanup_middleware.flask.init_app(app)

        @app.get("/works")
        def works() -> str:
            add_cleanup(_flask_environ(), _noop)
            return "ok"

        @app.get("/fails")
        def fails() -> str:
            add_cleanup(_flask_environ(), _noop)
            raise LookupError("answered by the error handler")

        @app.errorhandler(LookupError)
        def answer(error: LookupError) -> tuple[str, int]:
            return "answered", 500

        if served == "after-requests":
            app.response_class = type("Later", (app.response_class,), {})  # mixed in per request
            assert _serve_flask(app, "/works") == b"ok"
        elif served == "after-a-handled-error":
            assert _serve_flask(app, "/fails") == b"answered"
        ref = weakref.ref(app)
        del app, works, fails, answer
        assert ref() is None, _referrers(ref)
    finally:
        gc.enable()


def _flask_environ() -> dict[str, Any]:
    from flask import request

    return request.environ


class Connection:
    """A server's connection whose bound method is each request's ``wsgi.file_wrapper``."""

    def __init__(self, returns_the_file: bool) -> None:
        self.returns_the_file = returns_the_file

    def file_wrapper(self, filelike: Any, blksize: int = 8192) -> Any:
        return filelike if self.returns_the_file else FakeFileWrapper(filelike, blksize)


@pytest.mark.parametrize("returns_the_file", [False, True], ids=["wraps", "returns the file"])
def test_a_file_wrapper_made_per_request_is_not_kept_alive(returns_the_file: bool) -> None:
    # What the middleware learns of a file wrapper kept a strong reference to each one seen: a
    # server that makes one per request (a bound method of its connection, a partial) grew it
    # by an entry and a connection a request (issue 18, item 11).
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"data"))

    middleware = CleanupMiddleware(app)
    learned = len(files._returns_the_file)
    connections = []
    for _ in range(100):
        connection = Connection(returns_the_file)
        connections.append(weakref.ref(connection))
        environ = make_environ(**{"wsgi.file_wrapper": connection.file_wrapper})
        body = middleware(environ, start_response)
        assert list(body) == [b"data"]
        body.close()
        del connection, environ, body
    gc.collect()
    assert [ref for ref in connections if ref() is not None] == []
    assert len(files._returns_the_file) <= learned
