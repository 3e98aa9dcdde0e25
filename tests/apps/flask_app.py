"""A Flask app set up with ``cleanup_middleware.flask.init_app``, as a user would have it.

Every view takes a ``token`` query parameter and puts it in its records (see :mod:`appkit`).

* ``/file?token=T&size=N&via=call_on_close|add_cleanup``: ``send_file`` of a fresh temporary
  file (``direct_passthrough``, so the server can use ``sendfile()``), deleted after the
  response by a ``response.call_on_close`` callback or by ``add_cleanup``.
* ``/stream?token=T&size=N``: a generator body of ``size`` bytes, for clients that leave early.
* ``/raise?token=T``: registers hooks, then raises; Flask answers 500.
* ``/hello?token=T``: a small body with one hook; tests use it as a barrier and a health check.

Each of them also enters a :class:`appkit.Witness` with ``enter_context``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from appkit import Witness, delete_file, make_temp_file, note
from flask import Flask, Response, request, send_file

import cleanup_middleware.flask
from cleanup_middleware import add_cleanup, enter_context

app = Flask(__name__)
cleanup_middleware.flask.init_app(app)

CHUNK = 64 * 1024


def _token() -> str:
    return request.args.get("token", "")


@app.get("/file")
def file() -> Response:
    token = _token()
    path = make_temp_file(token, int(request.args.get("size", 1024 * 1024)))
    enter_context(request.environ, Witness(token))
    response = send_file(path, mimetype="application/octet-stream")
    via = request.args.get("via", "call_on_close")
    if via == "call_on_close":
        response.call_on_close(functools.partial(delete_file, token, path, via))
    elif via == "add_cleanup":
        add_cleanup(request.environ, delete_file, token, path, via)
    else:
        raise ValueError(f"via={via!r}")
    return response


@app.get("/stream")
def stream() -> Response:
    token = _token()
    size = int(request.args.get("size", 4 * 1024 * 1024))
    enter_context(request.environ, Witness(token))
    add_cleanup(request.environ, note, token, "add_cleanup")

    def generate() -> Iterator[bytes]:
        chunk = b"x" * CHUNK
        sent = 0
        while sent < size:
            part = chunk[: size - sent]
            sent += len(part)
            yield part

    response = Response(generate(), mimetype="application/octet-stream")
    response.call_on_close(functools.partial(note, token, "call_on_close"))
    return response


@app.get("/raise")
def fail() -> Response:
    token = _token()
    enter_context(request.environ, Witness(token))
    add_cleanup(request.environ, note, token, "add_cleanup")
    raise RuntimeError(f"the view failed on purpose ({token})")


@app.get("/hello")
def hello() -> str:
    token = _token()
    enter_context(request.environ, Witness(token))
    add_cleanup(request.environ, note, token, "add_cleanup")
    return "hello\n"
