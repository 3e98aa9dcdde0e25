"""A plain WSGI app (no framework) wrapped in ``CleanupMiddleware``.

Routes (``token`` goes into every record, see :mod:`appkit`):

* ``/file?token=T&size=N``: a fresh temporary file returned through the server's
  ``wsgi.file_wrapper``, deleted by ``add_cleanup``; ``/subclass-file``: the same through an
  application's subclass of the server's wrapper class.
* ``/stream?token=T&size=N``: a generator body.
* ``/raise?token=T``: registers hooks, then raises before returning (the server answers 500).
* ``/raise-mid-body?token=T``: a generator that raises after its first chunk.
* ``/hello?token=T``: a list body with one hook.

All of them enter a :class:`appkit.Witness` with ``enter_context``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import parse_qs
from wsgiref.util import FileWrapper

from appkit import Witness, delete_file, make_temp_file, note

from cleanup_middleware import CleanupMiddleware, add_cleanup, enter_context

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

CHUNK = 64 * 1024
OCTETS = "application/octet-stream"


def _generate(size: int, fail_after_first: bool = False) -> Iterator[bytes]:
    chunk = b"y" * CHUNK
    sent = 0
    while sent < size:
        part = chunk[: size - sent]
        sent += len(part)
        yield part
        if fail_after_first:
            raise RuntimeError("the body failed on purpose")


@functools.cache
def _subclass(wrapper_class: type) -> type:
    """An application's own subclass of the server's file wrapper class."""
    return type("AppFileWrapper", (wrapper_class,), {})


def raw_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    token = query.get("token", [""])[0]
    size = int(query.get("size", [str(1024 * 1024)])[0])
    path = environ.get("PATH_INFO", "")

    if path in ("/file", "/subclass-file"):
        file_path = make_temp_file(token, size)
        enter_context(environ, Witness(token))
        add_cleanup(environ, delete_file, token, file_path, "add_cleanup")
        start_response("200 OK", [("Content-Type", OCTETS), ("Content-Length", str(size))])
        wrapper = environ.get("wsgi.file_wrapper", FileWrapper)
        if path == "/subclass-file":
            wrapper = _subclass(wrapper)
        return wrapper(open(file_path, "rb"), CHUNK)
    if path in ("/stream", "/raise-mid-body"):
        enter_context(environ, Witness(token))
        add_cleanup(environ, note, token, "add_cleanup")
        start_response("200 OK", [("Content-Type", OCTETS)])
        return _generate(size, fail_after_first=path == "/raise-mid-body")
    if path == "/raise":
        enter_context(environ, Witness(token))
        add_cleanup(environ, note, token, "add_cleanup")
        raise RuntimeError(f"the app failed on purpose ({token})")
    if path == "/hello":
        enter_context(environ, Witness(token))
        add_cleanup(environ, note, token, "add_cleanup")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello\n"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


app = CleanupMiddleware(raw_app)
