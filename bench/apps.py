"""The applications the gunicorn benchmarks serve: ``gunicorn bench.apps:<name>``.

Settings come from the environment: ``BENCH_FILE`` is the big file to send and
``BENCH_MARKERS`` the directory of marker files. A download names its marker files in the
query string and the cleanup it exercises removes them, so the bench sees afterwards which
cleanups ran:

* ``coc``: removed by the view's ``response.call_on_close`` callback;
* ``hook``: removed by the middleware's own cleanup (the ``ClosingIterator`` callback or
  ``add_cleanup``);
* ``sf``: removed when gunicorn sent the body with ``sendfile()`` (see
  :mod:`bench.gunicorn_conf`).

Download variants (benchmark 1), one Flask app each, all served by one worker
(``bench.apps:downloads``) at ``/<variant>``, with the same view:

* ``shipped``: Flask ``send_file`` as shipped, with a ``call_on_close`` callback;
* ``shipped-again``: the same at another path, the A/A control;
* ``workaround``: the published workaround, ``direct_passthrough = False``;
* ``closing-iterator``: the shipped app behind a plain werkzeug ``ClosingIterator`` middleware;
* ``ours-hook``: the shipped app behind ``CleanupMiddleware``, the view also calls
  ``add_cleanup``;
* ``ours-flask``: the shipped app set up with ``cleanup_middleware.flask.init_app``.

``ours_raw`` (benchmark 3) is a raw WSGI app behind ``CleanupMiddleware`` that streams the file
as a ``wsgi.file_wrapper`` (``/file``) or as a generator (``/gen``). ``hello`` (benchmark 4)
serves Flask's hello world without (``/without``) and with (``/with``) ``init_app`` from the same
worker. ``after_response`` (benchmark 5) does :data:`WORK_SECONDS` of work after each response,
with ``add_cleanup`` (``/cleanup``), with ``defer`` (``/defer``; ``/defer-small-queue`` with a
queue of :data:`SMALL_QUEUE`), or none (``/nothing``); ``/done`` answers how many deferred
functions have finished.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from functools import partial
from typing import IO, TYPE_CHECKING
from urllib.parse import parse_qs

from flask import Flask, request, send_file
from werkzeug.wsgi import ClosingIterator

import cleanup_middleware.flask
from cleanup_middleware import CleanupMiddleware, add_cleanup, defer
from cleanup_middleware.deferred import DeferredPool

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask import Response

FILE = os.environ.get("BENCH_FILE", "")
MARKERS = os.environ.get("BENCH_MARKERS", "")
CHUNK = 64 * 1024


def remove_marker(name: str) -> None:
    """Remove the marker file ``name`` from ``BENCH_MARKERS``: the sign that a cleanup ran."""
    os.unlink(os.path.join(MARKERS, os.path.basename(name)))


def download_app(name: str, mode: str) -> Flask:
    """A Flask app whose ``/<name>`` sends ``BENCH_FILE``; ``mode`` picks the variant's view."""
    app = Flask(name)

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    @app.get(f"/{name}")
    def file() -> Response:
        response = send_file(FILE, mimetype="application/octet-stream")
        if mode == "workaround":
            response.direct_passthrough = False
        elif mode == "hook":
            add_cleanup(request.environ, remove_marker, request.args["hook"])
        response.call_on_close(partial(remove_marker, request.args["coc"]))
        return response

    return app


def closing_iterator_middleware(app: WSGIApplication) -> WSGIApplication:
    """A plain werkzeug ``ClosingIterator`` middleware whose callback removes the hook marker."""

    def middleware(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        hook = parse_qs(environ.get("QUERY_STRING", "")).get("hook")
        body = app(environ, start_response)
        return ClosingIterator(body, partial(remove_marker, hook[0]) if hook else None)

    return middleware


DOWNLOADS: dict[str, WSGIApplication] = {
    "/shipped": download_app("shipped", "shipped"),
    "/shipped-again": download_app("shipped-again", "shipped"),
    "/workaround": download_app("workaround", "workaround"),
    "/closing-iterator": closing_iterator_middleware(download_app("closing-iterator", "shipped")),
    "/ours-hook": CleanupMiddleware(download_app("ours-hook", "hook")),
    "/ours-flask": cleanup_middleware.flask.init_app(download_app("ours-flask", "shipped")),
}


def downloads(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Every download variant in one worker, by path: ``/shipped``, ``/ours-hook``, ..."""
    app = DOWNLOADS.get(environ.get("PATH_INFO", ""), DOWNLOADS["/shipped"])
    return app(environ, start_response)


def read_chunks(f: IO[bytes], size: int) -> Iterator[bytes]:
    """A generator body: ``size`` bytes of ``f`` in 64 KiB chunks; closes ``f`` when closed."""
    with f:
        left = size
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def raw_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """``/file`` and ``/gen`` stream the first ``size`` bytes (default: all) of ``BENCH_FILE``."""
    path = environ.get("PATH_INFO", "")
    if path not in ("/file", "/gen"):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [b"pong"]
    args = parse_qs(environ.get("QUERY_STRING", ""))
    if "hook" in args:
        add_cleanup(environ, remove_marker, args["hook"][0])
    size = int(args["size"][0]) if "size" in args else os.path.getsize(FILE)
    f = open(FILE, "rb")  # noqa: SIM115 - the body closes it
    start_response(
        "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
    )
    if path == "/file":
        return environ["wsgi.file_wrapper"](f, CHUNK)
    return read_chunks(f, size)


ours_raw = CleanupMiddleware(raw_app)


def hello_app(name: str) -> Flask:
    """Flask's hello world, at ``/<name>``."""
    app = Flask(name)

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    @app.get(f"/{name}")
    def hello() -> str:
        return "Hello, World!"

    return app


HELLO = {
    "/without": hello_app("without"),
    "/with": cleanup_middleware.flask.init_app(hello_app("with")),
    # The A/A control: another plain hello world, measured as /with is.
    "/control": hello_app("control"),
}


def hello(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The hello worlds in one worker: ``/without`` and ``/control`` plain, ``/with`` after
    ``init_app``."""
    return HELLO.get(environ.get("PATH_INFO", ""), HELLO["/without"])(environ, start_response)


#: The after-response work of benchmark 5: waiting, as an upload or a remote call does.
WORK_SECONDS = 0.2
#: The queue of ``/defer-small-queue``, which a burst overflows.
SMALL_QUEUE = 8
_finished = 0
_finished_lock = threading.Lock()


def after_response_work() -> None:
    """The slow work: :data:`WORK_SECONDS` of waiting, then counted for ``/done``."""
    global _finished
    time.sleep(WORK_SECONDS)
    with _finished_lock:
        _finished += 1


def _after_response(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/cleanup":
        add_cleanup(environ, after_response_work)
    elif path in ("/defer", "/defer-small-queue"):
        defer(environ, after_response_work)
    body = str(_finished).encode() if path == "/done" else b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


_default_queue = CleanupMiddleware(_after_response)
_small_queue = CleanupMiddleware(_after_response, executor=DeferredPool(max_queued=SMALL_QUEUE))


def after_response(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Benchmark 5's paths in one worker; ``/defer-small-queue`` has a pool of its own."""
    small = environ.get("PATH_INFO") == "/defer-small-queue"
    return (_small_queue if small else _default_queue)(environ, start_response)
