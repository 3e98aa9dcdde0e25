"""A WSGI app for the gunicorn tests of ``defer()``: deferred work that waits for the test.

``/defer?token=T`` defers :func:`wait_for_go`, which records ``deferred-start``, waits (bounded)
until the test creates the file ``go-T`` in ``$CLEANUP_RECORD_DIR``, and records
``deferred-done``; so the test decides when the work finishes, after it stopped the server.
Every response body is the worker's pid. ``application`` uses one thread, so that a second
deferred function waits in the queue; ``default_pool_app`` uses the default pool;
``preloaded()`` is for ``--preload``: its pool has a thread in the master before the fork.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from serverkit import RECORD_DIR_ENV, record

from cleanup_middleware import CleanupMiddleware, defer
from cleanup_middleware.deferred import DeferredPool

# Long enough for any test, short enough that an abandoned thread never outlives a test run.
WAIT_LIMIT = 20.0


def go_path(token: str) -> str:
    """The file whose creation lets the deferred function of request ``token`` finish."""
    return os.path.join(os.environ[RECORD_DIR_ENV], f"go-{token}")


def wait_for_go(token: str) -> None:
    """The deferred function: record the start, wait for ``go-TOKEN``, record the end."""
    record("deferred-start", token=token)
    deadline = time.monotonic() + WAIT_LIMIT
    while not os.path.exists(go_path(token)):
        if time.monotonic() > deadline:
            record("deferred-gave-up", token=token)
            return
        time.sleep(0.01)
    record("deferred-done", token=token)


def _app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if environ.get("PATH_INFO") == "/defer":
        token = query["token"][0]
        defer(environ, wait_for_go, token)
        record("accepted", token=token)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


application = CleanupMiddleware(_app, executor=DeferredPool(max_workers=1))
default_pool_app = CleanupMiddleware(_app)


def preloaded() -> CleanupMiddleware:
    """An app factory for gunicorn ``--preload``: the pool's thread starts in the master."""
    pool = DeferredPool(max_workers=1)
    pool.submit(os.getpid).result(WAIT_LIMIT)
    return CleanupMiddleware(_app, executor=pool)
