"""An app whose every response logs one WARNING and one ERROR on the ``cleanup_middleware`` logger.

``tests/test_production.py`` serves it to check that the logging setups of
``docs/production.md`` make the library's lines visible in the server's output. At import it
runs the Python file named by ``$PRODUCTION_LOGGING`` (if set): the setup that an application
run by waitress makes for itself.

Each response registers two hooks: :func:`fail`, which raises (an ERROR), and :func:`pause`,
which runs first and sleeps longer than ``slow_hook_seconds`` (a WARNING). Since ``fail``
runs last, its ERROR line in the output means that the WARNING, if shown, is there already.
"""

from __future__ import annotations

import os
import runpy
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from cleanup_middleware import CleanupMiddleware, add_cleanup

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

if os.environ.get("PRODUCTION_LOGGING"):
    runpy.run_path(os.environ["PRODUCTION_LOGGING"])

#: The hook's sleep is at least this (time.sleep never returns early), the limit far under it.
PAUSE = 0.01


def pause() -> None:
    time.sleep(PAUSE)


def fail() -> None:
    raise RuntimeError("a hook failed on purpose")


def raw_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    add_cleanup(environ, fail)
    add_cleanup(environ, pause)  # last registered, first run
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


app = CleanupMiddleware(raw_app, slow_hook_seconds=PAUSE / 10)
