"""Plain Werkzeug: send a fresh temporary file, and delete it once the response has been sent.

``send_file`` passes the file straight to the server (``direct_passthrough``), so Werkzeug's own
``Response`` drops its ``call_on_close`` callbacks. ``CleanupResponse`` registers them with the
middleware instead, and the server still sends the file with ``sendfile()``.

Run it with gunicorn::

    gunicorn --pythonpath examples werkzeug_download:application

and fetch http://127.0.0.1:8000/download.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from reports import make_report, report_size
from werkzeug.exceptions import NotFound
from werkzeug.utils import send_file
from werkzeug.wrappers import Request

from cleanup_middleware import CleanupMiddleware
from cleanup_middleware.response import CleanupResponse

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


def download(request: Request) -> CleanupResponse:
    path = make_report(report_size(request.args.get("size")))
    response = send_file(
        path,
        request.environ,
        as_attachment=True,
        download_name="report.txt",
        response_class=CleanupResponse,
    )
    response.call_on_close(lambda: os.unlink(path))  # runs after the server closed the file
    return response


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    request = Request(environ)
    response = download(request) if request.path == "/download" else NotFound()
    return response(environ, start_response)


# The one place to wrap: around the whole WSGI application.
application = CleanupMiddleware(app)
