"""The application that ``tests/test_asgi_adapters.py`` serves through ASGI servers and adapters.

One WSGI application wrapped in :class:`~cleanup_middleware.CleanupMiddleware`, the same behind
each WSGI-to-ASGI adapter (:data:`asgiref_app`, :data:`a2wsgi_app`, :data:`uvicorn_native_app`),
and with :class:`~cleanup_middleware.lost_client.UwsgiLostClient` inside
(:data:`uwsgi_checked_application`). Each ``/stream`` request carries ``token`` and ``chunks``
in its query string, enters an :class:`appkit.Witness` first (its ``exit`` record comes last and
tells the failure it was told of), makes a temporary file that the hook
:func:`appkit.delete_file` removes (``created``, ``deleted``), and registers a hook that records
``ran`` with how many chunks the body had yielded by then (``yielded``), whether the
garbage-collection net ran it because the server never called ``close()`` (``by_gc``), and when
(``at``, the epoch time).

``/gc`` runs the garbage collector in the server and records ``gc``; any other path answers at
once.
"""

from __future__ import annotations

import gc
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from a2wsgi import WSGIMiddleware
from appkit import Witness, delete_file, make_temp_file
from asgiref.wsgi import WsgiToAsgi
from serverkit import record
from uvicorn.middleware.wsgi import _WSGIMiddleware

from cleanup_middleware import CleanupMiddleware, add_cleanup, enter_context
from cleanup_middleware.lost_client import UwsgiLostClient

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

CHUNK = bytes(64 * 1024)


def _by_gc() -> bool:
    """Whether the running hook was called by the garbage-collection net, not by close()."""
    frame = sys._getframe(1)
    while frame is not None:
        # The net's own Python function, called by __del__ or by the C base's finalizer.
        code = frame.f_code
        if code.co_name == "_close_abandoned" and "cleanup_middleware" in code.co_filename:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _count(token: str, state: dict[str, int]) -> None:
    record(
        "ran", token=token, via="count", yielded=state["yielded"], by_gc=_by_gc(), at=time.time()
    )


def _stream(chunks: int, state: dict[str, int]) -> Iterator[bytes]:
    for _ in range(chunks):
        state["yielded"] += 1
        yield CHUNK


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/gc":
        record("gc", collected=gc.collect())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"collected"]
    if path != "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ready"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    token = query["token"][0]
    chunks = int(query.get("chunks", ["1"])[0])
    enter_context(environ, Witness(token))
    add_cleanup(environ, delete_file, token, make_temp_file(token, 0), "delete")
    state = {"yielded": 0}
    add_cleanup(environ, partial(_count, token, state))
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(chunks * len(CHUNK))),
        ],
    )
    return _stream(chunks, state)


application = CleanupMiddleware(app)
#: With the check that tells context managers of a client that reset the connection (uWSGI).
uwsgi_checked_application = CleanupMiddleware(UwsgiLostClient(app))


#: The application behind asgiref's adapter, which never calls close() on the body.
asgiref_app = WsgiToAsgi(application)
#: Behind a2wsgi's, which ``uvicorn --interface wsgi`` runs too when a2wsgi is installed.
a2wsgi_app = WSGIMiddleware(application)
# What `uvicorn --interface wsgi` runs when a2wsgi is not installed; deprecated, and it says so.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    #: Behind uvicorn's own WSGI middleware, which never calls close() either.
    uvicorn_native_app = _WSGIMiddleware(application)
