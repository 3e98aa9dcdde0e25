"""Bodies at the edges: reused, hostile to inspection, subclassed, file wrappers of C servers.

In-process, in the style of ``test_semantics.py``: each test calls the middleware as a server
would and checks what the server got back and what ran. The real servers are exercised by
``test_server_sendfile.py`` and the fault matrix; here are the rules, one test each.
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import threading
import types
import wsgiref.util
from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.http.wsgi import FileWrapper as GunicornFileWrapper
from test_semantics import make_environ, start_response
from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.task import ThreadedTaskDispatcher

from cleanup_middleware import CleanupMiddleware, add_cleanup, enter_context


class CachedAsset:
    """An in-memory asset an app keeps and returns for every request; close() rewinds it."""

    def __init__(self, data: bytes, events: list[str]) -> None:
        self.buffer = io.BytesIO(data)
        self.events = events

    def read(self, size: int = -1) -> bytes:
        return self.buffer.read(size)

    def close(self) -> None:
        self.events.append("asset closed")
        self.buffer.seek(0)


def uwsgi_like_file_wrapper(filelike: Any, blksize: int = 8192) -> Any:
    """uWSGI's wsgi.file_wrapper: returns the file itself, recognised later by identity."""
    return filelike


def asset_app(asset: object, events: list[str]) -> CleanupMiddleware:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        request = environ["QUERY_STRING"]
        add_cleanup(environ, events.append, f"hook {request}")
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](asset)

    return CleanupMiddleware(app)


def request(app: Any, query: str) -> Any:
    environ = make_environ(QUERY_STRING=query, **{"wsgi.file_wrapper": uwsgi_like_file_wrapper})
    return app(environ, start_response)


# -- the same body object for several requests ------------------------------------------------


def test_reused_body_gets_its_own_close_once_per_response_and_is_left_as_made() -> None:
    events: list[str] = []
    asset = CachedAsset(b"asset bytes", events)
    app = asset_app(asset, events)
    for n in range(3):
        body = request(app, str(n))
        assert body.read() == b"asset bytes", f"response {n}"
        body.close()
        assert "close" not in vars(asset), "the app's object is left as it made it"
    assert events == ["asset closed", "hook 0", "asset closed", "hook 1", "asset closed", "hook 2"]


def test_reused_body_with_its_own_close_attribute_gets_it_back() -> None:
    # gunicorn's and wsgiref's wrappers set close as an attribute of the object itself.
    events: list[str] = []
    asset = CachedAsset(b"data", events)
    own_close = asset.close
    asset.close = own_close  # type: ignore[method-assign]
    app = asset_app(asset, events)
    for n in range(2):
        request(app, str(n)).close()
    assert vars(asset)["close"] == own_close
    assert events == ["asset closed", "hook 0", "asset closed", "hook 1"]


def test_reused_body_in_flight_twice_each_response_runs_only_its_own_hooks() -> None:
    events: list[str] = []
    asset = CachedAsset(b"data", events)
    app = asset_app(asset, events)
    first = request(app, "1")
    second = request(app, "2")  # while the first is still being sent
    first.close()
    assert events == ["asset closed", "hook 1"]
    second.close()
    assert events == ["asset closed", "hook 1", "asset closed", "hook 2"]
    assert "close" not in vars(asset)


# -- bodies whose attribute lookup raises -------------------------------------------------------


class RaisingProxy:
    """A lazy proxy whose every attribute lookup fails with KeyError, as dict-backed ones do."""

    def __iter__(self) -> Iterator[bytes]:
        return iter([b"proxied"])

    def __getattr__(self, name: str) -> Any:
        raise KeyError(name)


class RaisingRead:
    def __iter__(self) -> Iterator[bytes]:
        return iter([b"read raises"])

    def close(self) -> None:
        pass

    @property
    def read(self) -> Any:
        raise ValueError("read is not available")


class RaisingClose:
    def __iter__(self) -> Iterator[bytes]:
        return iter([b"close raises"])

    @property
    def close(self) -> Any:
        raise RuntimeError("close is not available")


@pytest.mark.parametrize(
    ("body_class", "chunk"),
    [(RaisingProxy, b"proxied"), (RaisingRead, b"read raises"), (RaisingClose, b"close raises")],
)
def test_body_whose_attribute_lookup_raises_is_served_as_a_plain_iterable_and_no_hook_lost(
    body_class: type, chunk: bytes
) -> None:
    events: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, events.append, "hook")
        start_response("200 OK", [])
        return body_class()

    for file_wrapper in (None, GunicornFileWrapper, uwsgi_like_file_wrapper):
        environ = make_environ(**{"wsgi.file_wrapper": file_wrapper})
        body = CleanupMiddleware(app)(environ, start_response)
        assert list(body) == [chunk]
        body.close()
        assert events == ["hook"], file_wrapper
        events.clear()
    # No AttributeError from a half-built cleanup when the collector reclaims it (pytest turns
    # an exception in __del__ into a failure).
    del body
    gc.collect()


class ListWithClose(list[bytes]):
    """A list body with a close() of its own (a plain list, the fast path, has none)."""

    def __init__(self, chunks: list[bytes], events: list[str]) -> None:
        super().__init__(chunks)
        self.events = events

    def close(self) -> None:
        self.events.append("body closed")


def test_list_subclass_body_gets_its_own_close_before_the_hooks() -> None:
    events: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, events.append, "hook")
        start_response("200 OK", [])
        return ListWithClose([b"a", b"b"], events)

    body = CleanupMiddleware(app)(make_environ(), start_response)
    assert list(body) == [b"a", b"b"]
    body.close()
    assert events == ["body closed", "hook"]


# -- a subclass of the server's file wrapper ----------------------------------------------------


@pytest.mark.parametrize("server_wrapper", [GunicornFileWrapper, wsgiref.util.FileWrapper])
def test_subclass_of_the_servers_file_wrapper_goes_back_to_the_server_as_its_own(
    server_wrapper: type, tmp_path: Any
) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"data")
    subclass = type("AppFileWrapper", (server_wrapper,), {})
    events: list[str] = []
    made: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, lambda: events.append(f"hook, file closed: {made[0].filelike.closed}"))
        start_response("200 OK", [])
        made.append(subclass(open(path, "rb")))
        return made[0]

    body = CleanupMiddleware(app)(
        make_environ(**{"wsgi.file_wrapper": server_wrapper}), start_response
    )
    assert body is made[0], "gunicorn tests isinstance(): its sendfile() needs the object itself"
    body.close()
    assert events == ["hook, file closed: True"]


# -- file wrappers of C servers (mod_wsgi, bjoern, meinheld) ------------------------------------


class CFileWrapper:
    """Like bjoern's FileWrapper: no __dict__, exact type checked, close() closes the file."""

    __slots__ = ("blksize", "fd", "file")

    def __init__(self, file: Any, blksize: int = 8192) -> None:
        self.file, self.blksize, self.fd = file, blksize, file.fileno()

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.file.read(self.blksize), b"")

    def close(self) -> None:
        self.file.close()


def c_file_wrapper(file: Any, blksize: int = 8192) -> CFileWrapper:
    """Like meinheld's: a function returning such an object."""
    return CFileWrapper(file, blksize)


@pytest.mark.parametrize("server_wrapper", [CFileWrapper, c_file_wrapper])
def test_c_server_file_wrapper_gets_the_file_by_proxy_and_its_close_runs_the_hooks(
    server_wrapper: Any, tmp_path: Any
) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"0123456789")
    events: list[str] = []
    files: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, lambda: events.append(f"hook, file closed: {files[0].closed}"))
        start_response("200 OK", [])
        files.append(open(path, "rb"))
        return environ["wsgi.file_wrapper"](files[0], 4)

    environ = make_environ(**{"wsgi.file_wrapper": server_wrapper})
    body = CleanupMiddleware(app)(environ, start_response)
    assert type(body) is CFileWrapper, "the server must get its own object to send the file"
    assert environ["wsgi.file_wrapper"] is server_wrapper, "the environ key is put back"
    assert body.fd == files[0].fileno(), "the server sends from the file's own descriptor"
    assert list(body) == [b"0123", b"4567", b"89"]
    assert events == []
    body.close()
    assert events == ["hook, file closed: True"]


@pytest.mark.parametrize("first_wrapper", [wsgiref.util.FileWrapper, None])
def test_c_server_file_wrapper_after_another_servers_requests_is_judged_again(
    first_wrapper: Any, tmp_path: Any
) -> None:
    # The middleware judges the server's file wrapper once and then stops looking; a C server's
    # environ after a gunicorn-like one (a test calling the app in-process, say) is served
    # wrapped once, its hooks run, and its next request gets its own object back.
    path = tmp_path / "data.bin"
    path.write_bytes(b"0123456789")
    events: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, events.append, "hook")
        start_response("200 OK", [])
        file_wrapper = environ.get("wsgi.file_wrapper", wsgiref.util.FileWrapper)
        return file_wrapper(open(path, "rb"), 4)

    middleware = CleanupMiddleware(app)
    first = {} if first_wrapper is None else {"wsgi.file_wrapper": first_wrapper}
    body = middleware(make_environ(**first), start_response)
    body.close()
    bodies = [
        middleware(make_environ(**{"wsgi.file_wrapper": CFileWrapper}), start_response)
        for _ in range(2)
    ]
    assert type(bodies[0]) is not CFileWrapper, "refused a close: wrapped, iterated"
    assert type(bodies[1]) is CFileWrapper, "judged again: the server gets its own object"
    for body in bodies:
        assert b"".join(body) == b"0123456789"
        body.close()
    assert events == ["hook"] * 3


def test_c_server_file_wrapper_inside_another_body_closes_the_file_then_the_hooks(
    tmp_path: Any,
) -> None:
    # werkzeug wraps the server's file wrapper for a Range request: the body is then not the
    # server's object, and closing it must still close the file, once, before the hooks.
    path = tmp_path / "data.bin"
    path.write_bytes(b"0123456789")
    events: list[str] = []
    files: list[Any] = []

    class RangeBody:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __iter__(self) -> Iterator[bytes]:
            return iter(self.inner)

        def close(self) -> None:
            self.inner.close()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, lambda: events.append(f"hook, file closed: {files[0].closed}"))
        start_response("206 Partial Content", [])
        files.append(open(path, "rb"))
        return RangeBody(environ["wsgi.file_wrapper"](files[0]))

    body = CleanupMiddleware(app)(
        make_environ(**{"wsgi.file_wrapper": CFileWrapper}), start_response
    )
    assert b"".join(body) == b"0123456789"
    body.close()
    body.close()
    assert events == ["hook, file closed: True"]


def test_app_raising_puts_the_servers_file_wrapper_back() -> None:
    environ = make_environ(**{"wsgi.file_wrapper": CFileWrapper})

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        raise LookupError("the app failed")

    with pytest.raises(LookupError):
        CleanupMiddleware(app)(environ, start_response)
    assert environ["wsgi.file_wrapper"] is CFileWrapper


# -- text-mode bodies --------------------------------------------------------------------------


class TextReader:
    """A file-like object that reads ``str`` and cannot be iterated."""

    def read(self, size: int = -1) -> str:
        return ""

    def close(self) -> None:
        pass


TEXT_BODIES = {
    "empty text file": lambda path: open(path.with_name("empty.txt"), encoding="utf-8"),
    "text file": lambda path: open(path, encoding="utf-8"),
    "empty StringIO": lambda path: io.StringIO(""),
    "StringIO": lambda path: io.StringIO("one\ntwo\n"),
    "str reader": lambda path: TextReader(),
}


def served_chunks(body: Any) -> list[Any] | str:
    """The chunks a server iterates, at most 1000 (a body that never ends gives 1000), or the
    iteration's error, with its message."""
    try:
        return list(itertools.islice(body, 1000))
    except TypeError as exc:
        return f"TypeError: {exc}"


@pytest.mark.parametrize("make_body", TEXT_BODIES.values(), ids=TEXT_BODIES)
@pytest.mark.parametrize("file_wrapper", [None, GunicornFileWrapper])
def test_a_text_file_body_never_loops_and_its_hooks_run(
    make_body: Any, file_wrapper: Any, tmp_path: Any
) -> None:
    # An open file returned whole is served in blocks that end at the first b"" read; a text
    # file reads "" at its end, so the server got "" for ever (waitress skips empty chunks:
    # one thread at 100% CPU). The server must get what it gets from the bare application.
    path = tmp_path / "page.txt"
    path.write_text("line 1\nline 2\n", encoding="utf-8")
    path.with_name("empty.txt").write_text("", encoding="utf-8")
    events: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, events.append, "hook")
        start_response("200 OK", [])
        return make_body(path)

    bare = make_body(path)
    expected = served_chunks(bare)
    bare.close()
    environ = make_environ(**({"wsgi.file_wrapper": file_wrapper} if file_wrapper else {}))
    body = CleanupMiddleware(app)(environ, start_response)
    assert served_chunks(body) == expected
    body.close()
    assert events == ["hook"]


# -- waitress closes file bodies on its I/O thread ---------------------------------------------


class WaitressChannel:
    """What ``environ["waitress.client_disconnected"]`` is a method of: a connection, whose
    server holds the task dispatcher (here a real one)."""

    def __init__(self, dispatcher: ThreadedTaskDispatcher) -> None:
        self.server = types.SimpleNamespace(task_dispatcher=dispatcher)

    def check_client_disconnected(self) -> None:
        pass


class FailingBytesIO(io.BytesIO):
    def close(self) -> None:
        super().close()
        raise OSError("the file's close() failed on purpose")


def waitress_request(
    dispatcher: ThreadedTaskDispatcher,
    events: list[str],
    done: threading.Event,
    data_class: type[io.BytesIO] = io.BytesIO,
) -> tuple[Any, io.BytesIO]:
    """A file response made on this thread (waitress's task thread): two hooks and a witness."""
    data = data_class(b"file")

    @contextlib.contextmanager
    def witness() -> Iterator[None]:
        try:
            yield
        except BaseException as exc:
            events.append(f"witness told {type(exc).__name__}")
            raise
        finally:
            events.append(f"witness on {threading.current_thread().name}")
            done.set()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        enter_context(environ, witness())
        add_cleanup(environ, lambda: events.append(f"first, file closed: {data.closed}"))
        add_cleanup(environ, events.append, "second")
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](data)

    environ = make_environ(
        **{
            "wsgi.file_wrapper": ReadOnlyFileBasedBuffer,
            "waitress.client_disconnected": WaitressChannel(dispatcher).check_client_disconnected,
        }
    )
    body = CleanupMiddleware(app)(environ, start_response)
    assert type(body) is ReadOnlyFileBasedBuffer, "waitress must get its own buffer back"
    return body, data


def close_on_io_thread(body: Any) -> list[str]:
    """Close ``body`` twice on another thread, as waitress's I/O thread does when a client
    reset the connection: inside the handler of the error. Returns what the closes raised."""
    raised: list[str] = []

    def io_thread() -> None:
        try:
            raise ConnectionResetError("the client went away")
        except ConnectionResetError:
            for _ in range(2):
                try:
                    body.close()
                except Exception as exc:
                    raised.append(str(exc))

    thread = threading.Thread(target=io_thread, name="io-thread")
    thread.start()
    thread.join()
    return raised


@pytest.mark.parametrize(
    ("data_class", "told", "raised"),
    [
        (io.BytesIO, "ConnectionResetError", []),
        # The body's own close() fails: raised there, to waitress; context managers told of it.
        (FailingBytesIO, "OSError", ["the file's close() failed on purpose"]),
    ],
)
def test_waitress_runs_no_hook_on_its_io_thread(
    data_class: type[io.BytesIO], told: str, raised: list[str]
) -> None:
    # waitress closes a file body on its I/O thread when it finished sending it: the hooks ran
    # there, and no other connection was served meanwhile. The body is closed there at once;
    # the hooks run once each on a task thread, in order, told what the I/O thread was handling.
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(1)
    try:
        events: list[str] = []
        done = threading.Event()
        body, data = waitress_request(dispatcher, events, done, data_class)
        assert close_on_io_thread(body) == raised
        assert data.closed, "the body must be closed on the I/O thread at once"
        assert done.wait(10), f"the hooks did not run: {events}"
        assert events == [
            "second",
            "first, file closed: True",
            f"witness told {told}",
            "witness on waitress-0",
        ]
    finally:
        dispatcher.shutdown()


def test_waitress_hooks_still_queued_when_it_stops_run_then() -> None:
    dispatcher = ThreadedTaskDispatcher()  # no task thread: the hooks stay queued
    events: list[str] = []
    done = threading.Event()
    body, _ = waitress_request(dispatcher, events, done)
    close_on_io_thread(body)
    assert events == []
    dispatcher.shutdown()  # cancels what is queued
    assert done.is_set()
    assert events[-1] == f"witness on {threading.current_thread().name}"
    assert len(events) == 4


def test_waitress_file_body_closed_on_the_apps_thread_runs_its_hooks_there() -> None:
    # A file small enough to go out at once is closed by the task thread itself.
    dispatcher = ThreadedTaskDispatcher()
    events: list[str] = []
    done = threading.Event()
    body, _ = waitress_request(dispatcher, events, done)
    body.close()
    assert done.is_set()
    assert events[-1] == f"witness on {threading.current_thread().name}"
