"""The app of ``tests/test_server_sendfile.py``: the same ``send_file`` with and without us.

* ``/bare/file?token=T&size=N``: werkzeug's ``send_file`` of a fresh sparse file, as shipped,
  outside any middleware (the test removes those files, named ``bare-*``);
* ``/ours/file?token=T&size=N``: the same inside ``CleanupMiddleware``, the file deleted by an
  ``add_cleanup`` hook that records ``deleted`` (with ``existed``);
* ``/hello?token=T``: a list body with a hook that records ``hook``: the barrier request.

Records go through :func:`serverkit.record` to ``$CLEANUP_RECORD_DIR``; files are made in
``$CLEANUP_TMP_DIR``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from appkit import delete_file, make_temp_file, note
from werkzeug.utils import send_file

from cleanup_middleware import CleanupMiddleware, add_cleanup

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

OCTETS = "application/octet-stream"
#: The name prefix of the files of the bare route.
BARE_PREFIX = "bare-"


def _query(environ: WSGIEnvironment) -> tuple[str, int]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    return query.get("token", [""])[0], int(query.get("size", ["65536"])[0])


def bare(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    token, size = _query(environ)
    # Left for the test to remove: nothing outside the middleware would delete it.
    path = make_temp_file(token, size, prefix=BARE_PREFIX)
    return send_file(path, environ, mimetype=OCTETS)(environ, start_response)


def ours_raw(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path_info = environ.get("PATH_INFO", "")
    token, size = _query(environ)
    if path_info == "/ours/file":
        path = make_temp_file(token, size)
        add_cleanup(environ, delete_file, token, path, "add_cleanup")
        return send_file(path, environ, mimetype=OCTETS)(environ, start_response)
    add_cleanup(environ, note, token, "add_cleanup")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
    return [b"hello\n"]


ours = CleanupMiddleware(ours_raw)


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    if environ.get("PATH_INFO", "").startswith("/bare/"):
        return bare(environ, start_response)
    return ours(environ, start_response)
