"""The application and the config hooks that the CLI and PasteDeploy tests run in a server.

Each hook records what it saw with :func:`serverkit.record`, keyed by the request's ``token``
query parameter. A config file names them as ``apps.config_hooks:closed`` and
``apps.config_hooks:transaction``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from serverkit import record

from cleanup_middleware import add_cleanup

HOOKS = __name__


def token_of(environ: dict[str, Any]) -> str | None:
    return parse_qs(environ.get("QUERY_STRING", "")).get("token", [None])[0]


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Registers a hook of its own; fails for paths that end in ``/fail``."""
    add_cleanup(environ, record, "own", token=token_of(environ))
    if environ["PATH_INFO"].endswith("/fail"):
        raise RuntimeError("app failed")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def closed(environ: dict[str, Any]) -> None:
    record("closed", token=token_of(environ), detail=environ["REQUEST_METHOD"])


@contextlib.contextmanager
def transaction(environ: dict[str, Any]) -> Iterator[None]:
    token = token_of(environ)
    record("enter", token=token)
    try:
        yield
    except BaseException as exc:
        record("exit", token=token, detail=type(exc).__name__)
        raise
    record("exit", token=token, detail=None)


def events(records: list[dict[str, Any]], token: str) -> list[tuple[str, Any]]:
    """What the hooks recorded for the request ``token``, in order: ``(event, detail)``."""
    return [(r["event"], r.get("detail")) for r in records if r.get("token") == token]


def app_factory(global_conf: dict[str, Any], **local_conf: str) -> Any:
    """The PasteDeploy app factory: ``use = call:apps.config_hooks:app_factory``."""
    return app
