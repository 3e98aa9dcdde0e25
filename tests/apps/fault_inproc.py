"""In-process stand-ins for a WSGI server, shared by the fault, neighbour, leak and property tests.

Nothing here starts a process or opens a socket: :func:`make_environ` builds a minimal environ,
:class:`FakeFileWrapper` plays a server's ``wsgi.file_wrapper`` class (the kind gunicorn and
waitress test with ``isinstance``), and :func:`serve` drives an application the way a server
does: call it, pull some chunks, call ``close()`` a given number of times.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class WeakEnviron(dict):  # type: ignore[type-arg]
    """An environ dict that can be referenced weakly, to prove nothing keeps it alive."""

    __slots__ = ("__weakref__",)


def make_environ(
    method: str = "GET",
    path: str = "/",
    *,
    file_wrapper: Any = None,
    cls: type[dict] = dict,  # type: ignore[type-arg]
    **extra: Any,
) -> dict[str, Any]:
    environ = cls(
        {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
    )
    if file_wrapper is not None:
        environ["wsgi.file_wrapper"] = file_wrapper
    environ.update(extra)
    return environ


class FakeFileWrapper:
    """A server's ``wsgi.file_wrapper`` class: iterable over a file, with a settable ``close``."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        while True:
            data = self.filelike.read(self.blksize)
            if not data:
                return
            yield data

    def close(self) -> None:
        self.filelike.close()


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return lambda data: None


def serve(
    app: Callable[..., Iterable[bytes]],
    environ: dict[str, Any],
    *,
    reads: int | None = None,
    closes: int = 1,
) -> list[bytes]:
    """Run ``app`` like a server: pull ``reads`` chunks (all if None), then close ``closes`` times.

    Errors from iteration are swallowed like a server that logs them and closes the body; errors
    from ``close()`` propagate.
    """
    body = app(environ, start_response)
    chunks: list[bytes] = []
    with contextlib.suppress(Exception):
        iterator = iter(body)
        while reads is None or len(chunks) < reads:
            try:
                chunks.append(next(iterator))
            except StopIteration:
                break
        del iterator
    close = getattr(body, "close", None)
    for _ in range(closes if close is not None else 0):
        close()  # type: ignore[misc]
    return chunks


@contextlib.contextmanager
def collect_unraisable() -> Iterator[list[Any]]:
    """Collect what ``sys.unraisablehook`` would report (errors raised inside ``__del__``)."""
    seen: list[Any] = []
    old = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = old


@contextlib.contextmanager
def quiet_cleanup_logger() -> Iterator[list[logging.LogRecord]]:
    """Collect the ``cleanup_middleware`` logger's records instead of formatting and printing them.

    For tests that make thousands of hooks fail on purpose.
    """
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("cleanup_middleware")
    handler = Collect()
    old_propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate
