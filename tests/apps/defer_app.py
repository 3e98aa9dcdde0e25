"""A WSGI app for the gunicorn tests of ``defer()``: deferred work that waits for the test.

``/defer?token=T`` defers :func:`wait_for_go`, which records ``deferred-start``, waits (bounded)
until the test creates the file ``go-T`` in ``$CLEANUP_RECORD_DIR``, and records
``deferred-done``; so the test decides when the work finishes, after it stopped the server.
``/defer-late?token=T`` is a request still running when the server is told to stop: it records
``request-started``, waits for ``go-respond-T``, then defers ``wait_for_go`` for ``T-1`` and
``T-2``. Every response body is the worker's pid. ``application`` uses one thread, so that a second
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


def wait_for_file(path: str) -> bool:
    """Wait until ``path`` exists (true), or :data:`WAIT_LIMIT` passed (false)."""
    deadline = time.monotonic() + WAIT_LIMIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wait_for_go(token: str) -> None:
    """The deferred function: record the start, wait for ``go-TOKEN``, record the end."""
    record("deferred-start", token=token)
    record("deferred-done" if wait_for_file(go_path(token)) else "deferred-gave-up", token=token)


def _app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if environ.get("PATH_INFO") == "/defer":
        token = query["token"][0]
        defer(environ, wait_for_go, token)
        record("accepted", token=token)
    elif environ.get("PATH_INFO") == "/defer-late":
        token = query["token"][0]
        record("request-started", token=token)
        wait_for_file(go_path(f"respond-{token}"))
        for part in ("1", "2"):
            defer(environ, wait_for_go, f"{token}-{part}")
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
