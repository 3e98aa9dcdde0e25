"""One test (or a few) per row of the semantics table (docs/semantics.md), run in-process.

The "server" here is a few lines that do what PEP 3333 servers do: call the app, check whether
the body is their ``wsgi.file_wrapper``, iterate, and call ``close()`` in a ``finally``.
Real servers are exercised in test_servers.py.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import warnings
import wsgiref.util
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from gunicorn.http.wsgi import FileWrapper as GunicornFileWrapper
from waitress.buffers import ReadOnlyFileBasedBuffer

from cleanup_middleware import ENVIRON_KEY, CleanupMiddleware, add_cleanup, enter_context

FILE_WRAPPERS = {
    "gunicorn": GunicornFileWrapper,
    "waitress": ReadOnlyFileBasedBuffer,
    "wsgiref": wsgiref.util.FileWrapper,
}


def make_environ(**extra: Any) -> dict[str, Any]:
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/thing"}
    environ.update(extra)
    return environ


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return lambda data: None


def serve(app: Any, environ: dict[str, Any] | None = None) -> list[bytes]:
    """Do what a server does with one request: iterate the body, close it in ``finally``."""
    body = app(environ if environ is not None else make_environ(), start_response)
    try:
        return list(body)
    finally:
        if hasattr(body, "close"):
            body.close()


class Recorder:
    """Collects what ran, in order."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def __call__(self, event: object) -> None:
        self.events.append(event)


@pytest.fixture
def record() -> Recorder:
    return Recorder()


def app_returning(body_factory: Any, record: Recorder, hooks: Iterable[str] = ("hook",)) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        for name in hooks:
            add_cleanup(environ, record, name)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body_factory(environ)

    return CleanupMiddleware(app)


class ClosableBody:
    """An iterable with its own close(), which records when it is closed."""

    def __init__(self, record: Recorder, chunks: Iterable[bytes] = (b"a", b"b")) -> None:
        self.record = record
        self.chunks = list(chunks)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.record("body closed")


# -- body is a list, a generator, any iterable ------------------------------------------------


@pytest.mark.parametrize(
    "make_body",
    [
        pytest.param(lambda environ, record: [b"a", b"b"], id="list"),
        pytest.param(lambda environ, record: (c for c in [b"a", b"b"]), id="generator"),
        pytest.param(lambda environ, record: ClosableBody(record), id="iterable-with-close"),
        pytest.param(lambda environ, record: (b"a", b"b"), id="tuple"),
    ],
)
def test_body_list_generator_or_any_iterable_hooks_run_once_at_close(
    make_body: Any, record: Recorder
) -> None:
    app = app_returning(lambda environ: make_body(environ, record), record)
    body = app(make_environ(), start_response)
    assert list(body) == [b"a", b"b"]
    assert "hook" not in record.events, "hooks must wait for close()"
    body.close()
    assert record.events.count("hook") == 1


def test_body_is_iterated_without_our_code_per_chunk(record: Recorder) -> None:
    chunks = [b"x"] * 3
    body = app_returning(lambda environ: chunks, record)(make_environ(), start_response)
    # The server's iterator is the list's own: no Python code of ours runs per chunk.
    assert type(iter(body)) is type(iter(chunks))
    body.close()


# -- body is the server's wsgi.file_wrapper object ----------------------------------------------


@pytest.mark.parametrize("server", sorted(FILE_WRAPPERS))
def test_file_wrapper_body_goes_back_to_the_server_and_hooks_run_on_close(
    server: str, record: Recorder, tmp_path: Any
) -> None:
    wrapper_class = FILE_WRAPPERS[server]
    path = tmp_path / "data.bin"
    path.write_bytes(b"0123456789")
    made: list[object] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, record, "hook")
        start_response("200 OK", [])
        wrapper = environ["wsgi.file_wrapper"](open(path, "rb"), 4)
        made.append(wrapper)
        return wrapper

    body = CleanupMiddleware(app)(
        make_environ(**{"wsgi.file_wrapper": wrapper_class}), start_response
    )
    assert body is made[0], "the server must get its own file wrapper back to use sendfile()"
    assert isinstance(body, wrapper_class)
    file = made[0].filelike if server != "waitress" else made[0].file  # type: ignore[attr-defined]
    assert not file.closed
    body.close()
    assert file.closed, "the body's own close() must still run"
    assert record.events == ["hook"]


def test_function_file_wrapper_like_uwsgi_gets_the_same_object_back(
    record: Recorder, tmp_path: Any
) -> None:
    # uWSGI's file_wrapper returns the file itself and recognises it by identity.
    path = tmp_path / "data.bin"
    path.write_bytes(b"data")

    # The first request, not yet knowing what the function returns, hands it a proxy of the
    # file; once it is seen to return its argument, the file itself.
    given: list[Any] = []

    def uwsgi_file_wrapper(filelike: Any, blksize: int = 8192) -> Any:
        given.append(filelike)
        return filelike

    files: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, record, f"hook {len(files)}")
        start_response("200 OK", [])
        files.append(open(path, "rb"))
        return environ["wsgi.file_wrapper"](files[-1])

    middleware = CleanupMiddleware(app)
    for request in range(2):
        body = middleware(make_environ(**{"wsgi.file_wrapper": uwsgi_file_wrapper}), start_response)
        assert body is given[-1], "the server must get back the very object it was given"
        assert body.fileno() == files[-1].fileno()
        body.close()
        assert files[-1].closed
        assert record.events == [f"hook {n}" for n in range(request + 1)]
    assert given[1] is files[1]


def test_open_file_returned_as_the_body_is_iterated_in_blocks_and_closed_before_the_hook(
    record: Recorder, tmp_path: Any
) -> None:
    # PEP 3333 allows a file object as the body; with no file_wrapper the server iterates it,
    # in blocks, not lines: a binary file can be one long line.
    path = tmp_path / "data.bin"
    path.write_bytes(b"line 1\nline 2\n" + bytes(200_000))
    files: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, lambda: record(f"hook, file closed: {files[0].closed}"))
        start_response("200 OK", [])
        files.append(open(path, "rb"))
        return files[0]

    body = CleanupMiddleware(app)(make_environ(), start_response)
    chunks = list(body)
    assert b"".join(chunks) == path.read_bytes()
    assert [len(c) for c in chunks] == [65536, 65536, 65536, 200_014 - 3 * 65536]
    body.close()
    body.close()
    assert record.events == ["hook, file closed: True"]


def test_file_wrapper_that_refuses_a_new_close_falls_back_to_a_wrapper(
    record: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    class SlottedFileWrapper:
        __slots__ = ("filelike",)

        def __init__(self, filelike: Any, blksize: int = 8192) -> None:
            self.filelike = filelike

        def __iter__(self) -> Iterator[bytes]:
            return iter([b"data"])

        def close(self) -> None:
            record("body closed")

    caplog.set_level(logging.WARNING, logger="cleanup_middleware")
    app = app_returning(lambda environ: environ["wsgi.file_wrapper"](None), record)
    environ = make_environ(**{"wsgi.file_wrapper": SlottedFileWrapper})
    assert serve(app, environ) == [b"data"]
    assert record.events == ["body closed", "hook"]
    serve(app, make_environ(**{"wsgi.file_wrapper": SlottedFileWrapper}))
    # sendfile() is lost for that class: said once, at WARNING, which default logging shows.
    said = [r for r in caplog.records if "SlottedFileWrapper" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, "logged once, at WARNING"


# -- server closes the body before the first next() -----------------------------------------


def test_server_closes_before_first_next_hooks_run(record: Recorder) -> None:
    def generate(environ: dict[str, Any]) -> Iterator[bytes]:
        try:
            yield b"never sent"
        finally:
            record("generator finally")

    body = app_returning(generate, record)(make_environ(), start_response)
    body.close()  # e.g. the client went away before the server began to send
    assert record.events == ["hook"]


# -- app raises before returning --------------------------------------------------------------


def test_app_raises_before_returning_hooks_run_then_exception_propagates_unchanged(
    record: Recorder,
) -> None:
    error = ValueError("boom")
    seen: list[object] = []

    @contextmanager
    def transaction() -> Iterator[None]:
        try:
            yield
        except BaseException as exc:
            seen.append(exc)
            raise

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, record, "first")
        enter_context(environ, transaction())
        add_cleanup(environ, record, "second")
        raise error

    with pytest.raises(ValueError) as raised:
        CleanupMiddleware(app)(make_environ(), start_response)
    assert raised.value is error
    assert record.events == ["second", "first"]
    assert seen == [error], "the context manager is told the request failed"


def test_app_raises_and_a_hook_raises_the_app_exception_still_wins(record: Recorder) -> None:
    def failing_hook() -> None:
        raise RuntimeError("hook")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, failing_hook)
        raise KeyError("app")

    middleware = CleanupMiddleware(app, on_hook_error="raise")
    with pytest.raises(KeyError, match="app"):
        middleware(make_environ(), start_response)


# -- iteration or the body's own close() raises -----------------------------------------------


def test_iteration_raises_every_hook_runs_and_exception_propagates_unchanged(
    record: Recorder,
) -> None:
    error = OSError("disk gone")

    def generate(environ: dict[str, Any]) -> Iterator[bytes]:
        yield b"first"
        raise error

    app = app_returning(generate, record, hooks=("a", "b"))
    with pytest.raises(OSError) as raised:
        serve(app)
    assert raised.value is error
    assert record.events == ["b", "a"]


def test_body_close_raises_every_hook_runs_then_its_exception_propagates(record: Recorder) -> None:
    error = RuntimeError("close failed")

    class BadClose(ClosableBody):
        def close(self) -> None:
            raise error

    app = app_returning(lambda environ: BadClose(record), record, hooks=("a", "b"))
    with pytest.raises(RuntimeError) as raised:
        serve(app)
    assert raised.value is error
    assert record.events == ["b", "a"]


# -- a hook raises ----------------------------------------------------------------------------


def failing_hook() -> None:
    raise ZeroDivisionError("hook failed")


def test_hook_raises_others_run_and_failure_is_logged_with_method_and_path(
    record: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, record, "first")
        add_cleanup(environ, failing_hook)
        add_cleanup(environ, record, "last")
        start_response("200 OK", [])
        return [b"ok"]

    caplog.set_level(logging.ERROR, logger="cleanup_middleware")
    environ = make_environ(REQUEST_METHOD="POST", SCRIPT_NAME="/app", PATH_INFO="/upload")
    assert serve(CleanupMiddleware(app), environ) == [b"ok"]  # not raised
    assert record.events == ["last", "first"]
    [log] = caplog.records
    assert log.name == "cleanup_middleware"
    assert "POST /app/upload" in log.getMessage()
    assert "failing_hook" in log.getMessage()
    assert log.exc_info is not None and isinstance(log.exc_info[1], ZeroDivisionError)


def test_hook_raises_with_on_hook_error_raise_it_propagates_after_all_ran(
    record: Recorder,
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, record, "first")
        add_cleanup(environ, failing_hook)
        start_response("200 OK", [])
        return [b"ok"]

    with pytest.raises(ZeroDivisionError):
        serve(CleanupMiddleware(app, on_hook_error="raise"))
    assert record.events == ["first"]


def test_several_hooks_raise_the_last_carries_the_earlier_as_context() -> None:
    first, second = ValueError("first"), KeyError("second")

    def raise_(exc: BaseException) -> None:
        raise exc

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, raise_, second)  # runs last
        add_cleanup(environ, raise_, first)  # runs first
        start_response("200 OK", [])
        return []

    with pytest.raises(KeyError) as raised:
        serve(CleanupMiddleware(app, on_hook_error="raise"))
    assert raised.value is second and raised.value.__context__ is first


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_hook_raises_base_exception_remaining_hooks_run_then_it_propagates(
    exc_type: type[BaseException], record: Recorder
) -> None:
    def interrupt() -> None:
        raise exc_type()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, record, "first")
        add_cleanup(environ, interrupt)
        add_cleanup(environ, record, "last")
        start_response("200 OK", [])
        return []

    with pytest.raises(exc_type):
        serve(CleanupMiddleware(app))  # even without on_hook_error="raise"
    assert record.events == ["last", "first"]


def test_on_hook_error_must_be_log_or_raise() -> None:
    with pytest.raises(ValueError, match="'log' or 'raise'"):
        CleanupMiddleware(lambda environ, start_response: [], on_hook_error="ignore")  # type: ignore[arg-type]


# -- close() twice, or the middleware nested in itself ----------------------------------------


def test_close_called_twice_each_hook_runs_once(record: Recorder) -> None:
    body = app_returning(lambda environ: ClosableBody(record), record)(
        make_environ(), start_response
    )
    body.close()
    body.close()
    assert record.events == ["body closed", "hook"]


def test_middleware_nested_in_itself_each_hook_runs_once(record: Recorder) -> None:
    app = CleanupMiddleware(CleanupMiddleware(app_returning(lambda environ: [b"x"], record)))
    assert serve(app) == [b"x"]
    assert record.events == ["hook"]


# -- order ------------------------------------------------------------------------------------


def test_order_body_close_first_then_hooks_last_registered_first(record: Recorder) -> None:
    app = app_returning(lambda environ: ClosableBody(record), record, hooks=("1", "2", "3"))
    serve(app)
    assert record.events == ["body closed", "3", "2", "1"]


def test_order_context_managers_and_callbacks_interleave_lifo(record: Recorder) -> None:
    @contextmanager
    def step(name: str) -> Iterator[str]:
        record(f"enter {name}")
        yield name
        record(f"exit {name}")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        assert enter_context(environ, step("a")) == "a"
        add_cleanup(environ, record, "hook")
        enter_context(environ, step("b"))
        start_response("200 OK", [])
        return [b""]

    serve(CleanupMiddleware(app))
    assert record.events == ["enter a", "enter b", "exit b", "hook", "exit a"]


# -- add_cleanup with an environ that did not pass through the middleware --------------------


def test_add_cleanup_without_middleware_says_to_wrap_the_app() -> None:
    with pytest.raises(RuntimeError, match=r"CleanupMiddleware\(app\)"):
        add_cleanup(make_environ(), print)
    with pytest.raises(RuntimeError, match=r"enter_context\(\).*CleanupMiddleware"):
        enter_context(make_environ(), open(__file__))


def test_add_cleanup_with_something_that_is_not_an_environ() -> None:
    with pytest.raises(TypeError, match="environ dict"):
        add_cleanup(None, print)  # type: ignore[arg-type]


def test_add_cleanup_binds_positional_and_keyword_arguments_of_any_name(record: Recorder) -> None:
    # With the C base, add_cleanup's common case is in C (cleanup_middleware._speedups); make
    # test runs this file on both bases.
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, record, "positional")
        add_cleanup(environ, lambda **kw: record(sorted(kw.items())), environ="e", fn="f")
        add_cleanup(environ, lambda *a, **kw: record((a, kw)), 1, 2, x=3)
        with pytest.raises(TypeError):
            add_cleanup(environ)  # type: ignore[call-arg]
        start_response("200 OK", [])
        return [b"x"]

    serve(CleanupMiddleware(app))
    assert record.events == [((1, 2), {"x": 3}), [("environ", "e"), ("fn", "f")], "positional"]


# -- add_cleanup with something that is not callable ------------------------------------------


def test_add_cleanup_not_callable_raises_type_error_at_registration(record: Recorder) -> None:
    errors: list[BaseException] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            add_cleanup(environ, "os.unlink")  # type: ignore[arg-type]
        except TypeError as exc:
            errors.append(exc)
        try:
            enter_context(environ, object())  # type: ignore[arg-type]
        except TypeError as exc:
            errors.append(exc)
        start_response("200 OK", [])
        return []

    serve(CleanupMiddleware(app))
    assert "needs a callable" in str(errors[0]) and "got a str object" in str(errors[0])
    assert "needs a context manager" in str(errors[1])


# -- a hook registered while the body is being iterated, or by another hook -------------------


def test_hook_registered_during_iteration_or_by_another_hook_runs_too(record: Recorder) -> None:
    def generate(environ: dict[str, Any]) -> Iterator[bytes]:
        add_cleanup(environ, record, "during iteration")
        yield b"x"

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, lambda: add_cleanup(environ, record, "added by a hook"))
        start_response("200 OK", [])
        return generate(environ)

    serve(CleanupMiddleware(app))
    assert record.events == ["during iteration", "added by a hook"]


def test_a_hook_registered_by_a_hook_runs_right_after_it(record: Recorder) -> None:
    def hook(name: str, environ: dict[str, Any]) -> None:
        record(name)
        add_cleanup(environ, record, f"added by {name}")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        for name in ("first", "second", "third"):
            add_cleanup(environ, hook, name, environ)
        start_response("200 OK", [])
        return [b""]

    serve(CleanupMiddleware(app))
    assert record.events == [
        "third",
        "added by third",
        "second",
        "added by second",
        "first",
        "added by first",
    ]


def test_registering_after_close_is_an_error_not_a_silent_drop(record: Recorder) -> None:
    environ = make_environ()
    serve(app_returning(lambda environ: [b"x"], record), environ)
    with pytest.raises(RuntimeError, match="after the response was closed"):
        add_cleanup(environ, record, "too late")
    with pytest.raises(RuntimeError, match="after the response was closed"):
        enter_context(environ, open(__file__))


# -- threads and processes: no global per-request state ---------------------------------------


def test_threads_hooks_never_run_for_or_see_another_request() -> None:
    seen: dict[int, list[int]] = {}
    barrier = threading.Barrier(8, timeout=10)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        request_id = environ["request.id"]
        add_cleanup(environ, lambda: seen.setdefault(request_id, []).append(environ["request.id"]))
        barrier.wait()  # every request has registered before any closes
        start_response("200 OK", [])
        return [b"x"]

    middleware = CleanupMiddleware(app)

    def client(request_id: int) -> None:
        for _ in range(25):
            serve(middleware, make_environ(**{"request.id": request_id}))
            barrier.wait()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(not thread.is_alive() for thread in threads)
    assert seen == {n: [n] * 25 for n in range(8)}


def test_threads_registering_on_one_request_at_once_lose_no_hook() -> None:
    workers, requests = 4, 200
    ran: list[tuple[int, int, int]] = []
    current: list[dict[str, Any]] = []
    go = threading.Barrier(workers + 1, timeout=10)
    registered = threading.Barrier(workers + 1, timeout=10)

    @contextmanager
    def exits_into_ran(key: tuple[int, int, int]) -> Iterator[None]:
        yield
        ran.append(key)

    def worker(worker_id: int) -> None:
        for request_id in range(requests):
            go.wait()
            environ = current[-1]
            # Each request's hooks race on its one list of hooks.
            add_cleanup(environ, ran.append, (request_id, worker_id, 0))
            enter_context(environ, exits_into_ran((request_id, worker_id, 1)))
            add_cleanup(environ, ran.append, (request_id, worker_id, 2))
            registered.wait()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        current.append(environ)
        go.wait()
        registered.wait()
        start_response("200 OK", [])
        return [b"x"]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    middleware = CleanupMiddleware(app)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows
    try:
        for thread in threads:
            thread.start()
        for _ in range(requests):
            serve(middleware)
    except BaseException:
        go.abort()  # the workers stop at once rather than at the barrier's timeout
        registered.abort()
        raise
    finally:
        sys.setswitchinterval(interval)
        for thread in threads:
            thread.join(timeout=10)
    assert sorted(ran) == [
        (r, w, k) for r in range(requests) for w in range(workers) for k in range(3)
    ]


# -- enter_context: told whether the request failed -------------------------------------------


class Tracked:
    """A context manager that records what its __exit__ was told."""

    def __init__(self) -> None:
        self.exits: list[type[BaseException] | None] = []

    def __enter__(self) -> Tracked:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.exits.append(exc_type)
        assert (exc_type is None) == (exc is None) == (tb is None)


def test_enter_context_success_exits_with_no_failure() -> None:
    cm = Tracked()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        assert enter_context(environ, cm) is cm
        start_response("200 OK", [])
        return [b"x"]

    serve(CleanupMiddleware(app))
    assert cm.exits == [None]


def test_enter_context_is_told_when_the_server_closes_while_handling_an_error() -> None:
    cm = Tracked()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        enter_context(environ, cm)
        start_response("200 OK", [])
        return [b"x", b"y"]

    body = CleanupMiddleware(app)(make_environ(), start_response)
    try:
        for _ in body:
            raise BrokenPipeError("client went away")  # the server's write fails
    except BrokenPipeError:
        body.close()  # as gunicorn and wsgiref do in their error paths
    assert cm.exits == [BrokenPipeError]


def test_enter_context_is_told_when_iteration_raises() -> None:
    cm = Tracked()

    def generate() -> Iterator[bytes]:
        yield b"x"
        raise LookupError("mid-stream")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        enter_context(environ, cm)
        start_response("200 OK", [])
        return generate()

    with pytest.raises(LookupError):
        serve(CleanupMiddleware(app))
    assert cm.exits == [LookupError]


def test_enter_context_is_told_when_the_bodys_own_close_raises(record: Recorder) -> None:
    cm = Tracked()

    class BadClose(ClosableBody):
        def close(self) -> None:
            raise OSError("flush failed")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        enter_context(environ, cm)
        start_response("200 OK", [])
        return BadClose(record)

    with pytest.raises(OSError, match="flush failed"):
        serve(CleanupMiddleware(app))
    assert cm.exits == [OSError]


def test_record_failure_is_passed_even_when_the_body_closes_normally() -> None:
    cm = Tracked()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        enter_context(environ, cm)
        environ[ENVIRON_KEY].record_failure(ValueError("turned into a 500 page"))
        start_response("500 Internal Server Error", [])
        return [b"error page"]

    serve(CleanupMiddleware(app))
    assert cm.exits == [ValueError]


# -- a server that never calls close(): the garbage collector is the last resort --------------


def test_body_never_closed_hooks_run_on_garbage_collection_with_resource_warning(
    record: Recorder,
) -> None:
    app = app_returning(lambda environ: [b"x"], record)
    body = app(make_environ(REQUEST_METHOD="PUT", PATH_INFO="/forgotten"), start_response)
    assert list(body) == [b"x"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del body
        gc.collect()
    assert record.events == ["hook"]
    [warning] = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert "PUT /forgotten" in str(warning.message) and "never closed" in str(warning.message)


def test_closed_responses_do_not_warn_or_rerun_on_garbage_collection(record: Recorder) -> None:
    app = app_returning(lambda environ: [b"x"], record)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        serve(app)
        gc.collect()
    assert record.events == ["hook"]
