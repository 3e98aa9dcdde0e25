"""The fault matrix's application: every application behaviour is a route of this one WSGI app.

Served by each real server (see ``tests/test_fault_matrix.py``). Every ``/fault/...`` request
carries ``token`` (to find its records among all others) and ``size`` (body bytes) in its query
string, and leaves records with :func:`serverkit.record` in ``$CLEANUP_RECORD_DIR``:

* ``registered`` (``via``): a hook was registered; written right after the registration;
* ``ran`` (``via``): that hook ran; the hook ``witness`` is a context manager entered with
  ``enter_context`` first thing, so its ``ran`` (with ``failure``) comes last;
* ``created`` (``path``): the request's temporary file; the hook ``delete`` removes it and
  records ``existed``;
* ``body_close``: the body's own ``close()`` ran (for the bodies that can tell).

So for each token the ``ran`` records must be exactly the ``registered`` ones, reversed, and the
file must be gone. Routes (``/fault/NAME``):

===============  ===========================================================================
``list``         a list body (a list subclass whose ``close()`` records ``body_close``)
``generator``    a generator body; registers ``during`` at its first chunk, ``after`` at its end
``file``         werkzeug ``send_file`` of the temporary file (direct passthrough, so the
                 server's ``wsgi.file_wrapper``), deleted by ``response.call_on_close``; with
                 ``HEAD``, ``If-Modified-Since`` (304) or ``Range`` (206) from the client
``raise_before`` registers hooks, then raises before returning
``raise_first``  a generator that registers ``during`` and raises before its first chunk
``raise_mid``    a generator that raises half way through the body
``close_raises`` an iterable whose ``close()`` records ``body_close`` and raises
``hook_raises``  one of the hooks raises ``RuntimeError`` after recording that it ran
``status_204``   ``204 No Content`` with an empty list body
``held_file``    ``file``, plus a hook ``hold`` that records ``held``, then waits until
                 ``/release?token=T`` (or :data:`HOLD_SECONDS`) and records whether released
``text``         a body that yields ``str``: ``case`` in the query string names one of
                 :data:`TEXT_BODIES`; ``/bare/CASE`` answers the same outside the middleware
===============  ===========================================================================

Every ``ran`` record says whether the hook ran on the main thread (``main_thread``): waitress
runs its I/O loop there. ``/ping`` answers ``pong`` without any hooks: the "server still
answers" check. ``/gc`` runs the
garbage collector in the server, to let the GC safety net run the hooks of a response that the
server never closed; such hooks say so in their records (``abandoned``: the ResourceWarning's
text). Outside the
middleware, :func:`application` records (``returned``, ``kind``) the type of the body the server
gets, to show that a file body is still the server's own file wrapper.
"""

from __future__ import annotations

import gc
import io
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from serverkit import RECORD_DIR_ENV, record
from werkzeug.utils import send_file

from cleanup_middleware import CleanupMiddleware, add_cleanup, enter_context
from cleanup_middleware.response import CleanupResponse

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

#: Environment variable naming the directory for the temporary files (optional).
TMP_DIR_ENV = "CLEANUP_TMP_DIR"
CHUNK = 64 * 1024
_ZEROS = bytes(CHUNK)

BEHAVIOURS = (
    "list",
    "generator",
    "file",
    "raise_before",
    "raise_first",
    "raise_mid",
    "close_raises",
    "hook_raises",
    "status_204",
    "held_file",
    "text",
)
#: How long the ``hold`` hook of ``held_file`` waits for its ``/release`` at most.
HOLD_SECONDS = 10.0
# The hold hooks' events, by token.
_releases: dict[str, threading.Event] = {}


# The GC safety net warns, then runs the hooks in the same thread: the warning's text is kept here
# and put into the ``ran`` records, so a test can tell hooks run by close() from hooks run by the
# garbage collector. ResourceWarning is ignored by default; show it (in the server log too).
_thread = threading.local()
_showwarning = warnings.showwarning
warnings.simplefilter("always", ResourceWarning)


def _note_warning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    if issubclass(category, ResourceWarning) and "/fault/" in str(message):
        _thread.abandoned = str(message)
    _showwarning(message, category, *args, **kwargs)


warnings.showwarning = _note_warning


def _abandoned() -> str | None:
    return getattr(_thread, "abandoned", None)


class AppFailure(RuntimeError):
    """Raised on purpose by the failing routes."""


def make_file(token: str, size: int) -> str:
    """A fresh sparse temporary file of ``size`` bytes, its first bytes naming the token."""
    fd, path = tempfile.mkstemp(prefix="fault-", dir=os.environ.get(TMP_DIR_ENV))
    try:
        os.write(fd, f"{token}\n".encode()[:size])
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    record("created", token=token, path=path)
    return path


class Witness:
    """Entered with ``enter_context``: records its exit as the ``ran`` of hook ``witness``."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __enter__(self) -> Witness:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failure = exc_type.__name__ if exc_type else None
        _ran(self.token, "witness", failure=failure)
        _thread.abandoned = None  # the witness runs last


def _ran(token: str, via: str, **fields: Any) -> None:
    main_thread = threading.current_thread() is threading.main_thread()
    record("ran", token=token, via=via, abandoned=_abandoned(), main_thread=main_thread, **fields)


def _note(token: str, via: str) -> None:
    _ran(token, via)


def _delete(token: str, path: str) -> None:
    _ran(token, "delete", existed=os.path.exists(path))
    os.unlink(path)


def _raise(token: str) -> None:
    _ran(token, "raiser")
    raise RuntimeError(f"a cleanup hook failed on purpose ({token})")


def _hold(token: str) -> None:
    record("held", token=token)
    released = _releases.setdefault(token, threading.Event()).wait(HOLD_SECONDS)
    _ran(token, "hold", released=released)


def _text_file(environ: WSGIEnvironment, text: str) -> Any:
    """A file of ``text`` (in the record directory, not left among the scratch files), opened in
    text mode."""
    path = os.path.join(os.environ[RECORD_DIR_ENV], f"text-{len(text)}.txt")
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)
    return open(path, encoding="utf-8")  # the server closes it


def _text_file_wrapper(environ: WSGIEnvironment) -> Any:
    """A text file, given to the server's file wrapper where it has one."""
    file = _text_file(environ, "line 1\nline 2\n")
    file_wrapper = environ.get("wsgi.file_wrapper")
    return file if file_wrapper is None else file_wrapper(file)


#: The bodies that yield ``str`` (route ``text``), by ``case``.
TEXT_BODIES: dict[str, Callable[[WSGIEnvironment], Any]] = {
    "empty_text_file": lambda environ: _text_file(environ, ""),
    "text_file": lambda environ: _text_file(environ, "line 1\nline 2\n"),
    "empty_stringio": lambda environ: io.StringIO(""),
    "stringio": lambda environ: io.StringIO("line 1\nline 2\n"),
    "text_file_wrapper": _text_file_wrapper,
    "str_list": lambda environ: ["line 1\n", "line 2\n"],
    "str_generator": lambda environ: (line for line in ("line 1\n", "line 2\n")),
}


def text_body(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
    """The ``str`` body that ``case`` names, as ``200 OK`` without a Content-Length."""
    case = parse_qs(environ.get("QUERY_STRING", ""))["case"][0]
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return TEXT_BODIES[case](environ)


def register(
    environ: WSGIEnvironment, token: str, via: str, fn: Callable[..., Any], *args: Any
) -> None:
    add_cleanup(environ, fn, *args)
    record("registered", token=token, via=via)


def _chunks(size: int) -> Iterator[bytes]:
    while size > 0:
        part = _ZEROS[: min(size, CHUNK)]
        size -= len(part)
        yield part


class RecordingList(list):  # type: ignore[type-arg]
    """A list body whose ``close()`` records that it ran."""

    token = ""

    def close(self) -> None:
        record("body_close", token=self.token)


class FailingClose:
    """An iterable body whose ``close()`` records that it ran, then raises."""

    def __init__(self, token: str, size: int) -> None:
        self.token, self.size = token, size

    def __iter__(self) -> Iterator[bytes]:
        return _chunks(self.size)

    def close(self) -> None:
        record("body_close", token=self.token)
        raise OSError(f"the body's close() failed on purpose ({self.token})")


def _generate(
    environ: WSGIEnvironment, token: str, size: int, fail_at: int | None = None
) -> Iterator[bytes]:
    register(environ, token, "during", _note, token, "during")
    sent = 0
    for part in _chunks(size):
        if fail_at is not None and sent >= fail_at:
            raise AppFailure(f"the body failed on purpose after {sent} bytes ({token})")
        sent += len(part)
        yield part
    if fail_at is not None:
        raise AppFailure(f"the body failed on purpose at its end ({token})")
    register(environ, token, "after", _note, token, "after")


def fault_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/ping":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [b"pong"]
    if path == "/release":
        token = parse_qs(environ.get("QUERY_STRING", ""))["token"][0]
        _releases.setdefault(token, threading.Event()).set()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return []
    if path == "/gc":
        found = str(gc.collect()).encode()
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(found)))]
        )
        return [found]
    behaviour = path.removeprefix("/fault/")
    if behaviour not in BEHAVIOURS:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such route\n"]

    query = parse_qs(environ.get("QUERY_STRING", ""))
    token = query["token"][0]
    size = int(query.get("size", ["65536"])[0])
    enter_context(environ, Witness(token))
    record("registered", token=token, via="witness")
    octets = [("Content-Type", "application/octet-stream")]

    if behaviour in ("file", "held_file"):
        file_path = make_file(token, size)
        response = send_file(
            file_path, environ, mimetype="application/octet-stream", response_class=CleanupResponse
        )
        # What a Werkzeug or Flask user writes; the mixin hands Response.close to the middleware.
        response.call_on_close(lambda: _delete(token, file_path))
        record("registered", token=token, via="delete")
        body = response(environ, start_response)  # registers response.close: delete
        if behaviour == "held_file":
            register(environ, token, "hold", _hold, token)
        return body

    # Every other route makes a small scratch file that a hook must delete.
    register(environ, token, "delete", _delete, token, make_file(token, 16))
    register(environ, token, "first", _note, token, "first")

    if behaviour == "text":
        return text_body(environ, start_response)  # type: ignore[no-any-return]
    if behaviour == "raise_before":
        raise AppFailure(f"the application failed on purpose ({token})")
    if behaviour == "hook_raises":
        register(environ, token, "raiser", _raise, token)
        register(environ, token, "last", _note, token, "last")
    if behaviour == "status_204":
        start_response("204 No Content", [])
        body = RecordingList()
        body.token = token
        return body
    if behaviour == "list" or behaviour == "hook_raises":
        start_response("200 OK", [*octets, ("Content-Length", str(size))])
        body = RecordingList(_chunks(size))
        body.token = token
        return body
    if behaviour == "close_raises":
        start_response("200 OK", [*octets, ("Content-Length", str(size))])
        return FailingClose(token, size)
    start_response("200 OK", [*octets, ("Content-Length", str(size))])
    if behaviour == "raise_first":
        return _generate(environ, token, size, fail_at=0)
    if behaviour == "raise_mid":
        return _generate(environ, token, size, fail_at=size // 2)
    return _generate(environ, token, size)


_wrapped = CleanupMiddleware(fault_app)


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The app in the middleware, plus a ``returned`` record of what the server gets back."""
    if environ.get("PATH_INFO") == "/bare/text":
        return text_body(environ, start_response)  # type: ignore[no-any-return]
    body = _wrapped(environ, start_response)
    token = parse_qs(environ.get("QUERY_STRING", "")).get("token")
    if token:
        record("returned", token=token[0], kind=type(body).__name__)
    return body
