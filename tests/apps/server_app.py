"""Everything the real-server tests request, behind one server so each server starts once.

* ``/...``: :mod:`flask_app` (Flask with ``init_app``);
* ``/plain/...``: :mod:`plain_app` (a plain WSGI app in its own ``CleanupMiddleware``);
* ``/control/file?token=T&size=N``: the control for the ``sendfile()`` test. A Flask app
  *without* our middleware, wrapped the usual way in a werkzeug ``ClosingIterator`` middleware
  whose callback deletes the file. The callback runs, but the wrapper hides the server's file
  wrapper, so the body is iterated in Python and ``sendfile()`` is never called.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import flask_app
import plain_app
from appkit import delete_file, make_temp_file
from flask import Flask, Response, request, send_file
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wsgi import ClosingIterator

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

control = Flask("control")


@control.get("/file")
def control_file() -> Response:
    token = request.args.get("token", "")
    path = make_temp_file(token, int(request.args.get("size", 1024 * 1024)))
    # Stash the path for the middleware's callback (call_on_close would be dropped here).
    request.environ["control.path"] = path
    return send_file(path, mimetype="application/octet-stream")


def closing_iterator_middleware(app: WSGIApplication) -> WSGIApplication:
    """The common way to run code after a response: wrap the body in a ``ClosingIterator``."""

    def middleware(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        body = app(environ, start_response)

        def cleanup() -> None:
            token = parse_qs(environ.get("QUERY_STRING", "")).get("token", [""])[0]
            if "control.path" in environ:
                delete_file(token, environ["control.path"], "closing_iterator")

        return ClosingIterator(body, [cleanup])

    return middleware


application = DispatcherMiddleware(
    flask_app.app,
    {
        "/plain": plain_app.app,
        "/control": closing_iterator_middleware(control.wsgi_app),
    },
)
