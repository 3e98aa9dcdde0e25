"""gunicorn settings for the download benchmarks: note which responses went out by sendfile().

Used as ``gunicorn --config python:bench.gunicorn_conf``. In each worker, gunicorn's
``Response.sendfile`` is wrapped: when it did send the body with ``sendfile()`` it removes the
marker file named by the request's ``sf`` query argument (see :mod:`bench.apps`). That is one
function call per response and nothing per byte, the same for every variant.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs


def post_worker_init(worker: Any) -> None:
    """gunicorn server hook: wrap ``Response.sendfile`` in the new worker."""
    from gunicorn.http import wsgi

    from bench.apps import remove_marker

    original = wsgi.Response.sendfile

    def sendfile(self: Any, respiter: Any) -> bool:
        sent: bool = original(self, respiter)
        marker = parse_qs(self.req.query).get("sf")
        if sent and marker:
            remove_marker(marker[0])
        return sent

    wsgi.Response.sendfile = sendfile
