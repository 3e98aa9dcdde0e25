"""The load test's application: many requests, each with one hook that records its request id.

Routes (``rid`` is the client's request id, ``size`` the body size):

* ``/load/file?rid=R&size=N``: werkzeug ``send_file`` of a fresh sparse temporary file
  (the server's ``wsgi.file_wrapper``, so ``sendfile()``), deleted by ``add_cleanup``;
* ``/load/stream?rid=R&size=N``: a generator body, its scratch file deleted the same way;
* ``/load/slow?rid=R``: its hook waits (at most 20 s) until the file ``$LOAD_RELEASE`` exists;
* ``/ping``: no hooks.

The hook appends a ``ran`` record (:func:`serverkit.record`) with the ``rid`` it was registered
for, and ``current``: the request id the serving thread is busy with when the hook runs (set at
the start of each request). Both must always be equal: no hook runs for another request. It
also says whether the file was still there (``existed``) and whether the response failed
(``failure``, from a context manager entered with ``enter_context``).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from serverkit import record
from werkzeug.utils import send_file

from cleanup_middleware import CleanupMiddleware, add_cleanup, enter_context
from cleanup_middleware.response import CleanupResponse

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

TMP_DIR_ENV = "CLEANUP_TMP_DIR"
RELEASE_ENV = "LOAD_RELEASE"
CHUNK = 64 * 1024
_ZEROS = bytes(CHUNK)
_current = threading.local()


def _make_file(rid: str, size: int) -> str:
    fd, path = tempfile.mkstemp(prefix="load-", dir=os.environ.get(TMP_DIR_ENV))
    try:
        os.write(fd, f"{rid}\n".encode()[:size])
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return path


class _Outcome:
    failure: str | None = None


@contextmanager
def _watch(outcome: _Outcome) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        outcome.failure = type(exc).__name__
        raise


def _hook(rid: str, path: str, outcome: _Outcome) -> None:
    existed = os.path.exists(path)
    if existed:
        os.unlink(path)
    record(
        "ran",
        rid=rid,
        current=getattr(_current, "rid", None),
        existed=existed,
        failure=outcome.failure,
    )


def _slow_hook(rid: str) -> None:
    release = os.environ[RELEASE_ENV]
    deadline = time.monotonic() + 20
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    record("ran", rid=rid, current=getattr(_current, "rid", None), slow=True)


def _chunks(rid: str, size: int) -> Iterator[bytes]:
    first = f"{rid}\n".encode()
    yield first
    size -= len(first)
    while size > 0:
        part = _ZEROS[: min(size, CHUNK)]
        size -= len(part)
        yield part


def load_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/ping":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [b"pong"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    rid = query["rid"][0]
    _current.rid = rid
    if path == "/load/slow":
        add_cleanup(environ, _slow_hook, rid)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [rid.encode()]
    size = int(query.get("size", ["65536"])[0])
    outcome = _Outcome()
    file_path = _make_file(rid, size)
    add_cleanup(environ, _hook, rid, file_path, outcome)
    enter_context(environ, _watch(outcome))
    if path == "/load/file":
        response = send_file(
            file_path, environ, mimetype="application/octet-stream", response_class=CleanupResponse
        )
        return response(environ, start_response)
    start_response(
        "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
    )
    return _chunks(rid, size)


application = CleanupMiddleware(load_app)
