"""File bodies: keep the server's ``sendfile()`` whatever its ``wsgi.file_wrapper`` is.

A server sends a file with ``sendfile()`` only when the application returns the server's own
``wsgi.file_wrapper`` object, and it calls that object's ``close()`` when the response is done.
Where the wrapper is a Python class (gunicorn, waitress, wsgiref) the middleware points the
object's ``close`` at the request's cleanup and hands it back. Elsewhere the wrapper refuses a new
attribute: mod_wsgi's and bjoern's are C types (bjoern tests the exact type), meinheld's and
uWSGI's are functions (uWSGI returns the file itself and tests identity). What those wrappers
share is that their ``close()`` closes the file they were given. So for those servers, and only
for them, :class:`FileWrapperSubstitute` stands in for ``environ["wsgi.file_wrapper"]`` while the
application runs: it hands the server's wrapper a :class:`ClosingFile`, a proxy of the file whose
``fileno()``, ``read()``, ``seek()`` and ``tell()`` are the file's own and whose ``close()`` runs
the cleanup. The server still finds a file descriptor to ``sendfile()`` from.

A file-like body that the server would iterate (an open file returned whole, where the server
has no file wrapper or does not recognise it) is iterated in bounded blocks, not by lines: a
binary file can be one long line. A text file is iterated as the server would without the
middleware: blocks of it would end on ``b""``, which it never reads.

waitress sends a file body from its one I/O thread, an asyncore loop, and closes it there when
the file is sent or the client has gone: while a hook ran there, no other connection was served.
:class:`OffLoopClose` closes the body there at once and hands the hooks to waitress's task
threads, where the hooks of its other responses run.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from types import MethodType
from typing import Any

from .cleanup import ResponseCleanup
from .reporting import log_unpatchable

__all__ = [
    "FILE_WRAPPER_KEY",
    "WAITRESS_CHANNEL_KEY",
    "ClosingFile",
    "FileWrapperSubstitute",
    "OffLoopClose",
    "RestoringClose",
    "close_off_loop",
    "needs_substitute",
    "serve_app_file",
]

FILE_WRAPPER_KEY = "wsgi.file_wrapper"
#: How much of a wrapped file body is read at a time: few reads, little memory held.
BLOCK_SIZE = 64 * 1024
#: waitress's environ key for a method of the request's connection, whose server holds the task
#: dispatcher that runs requests on waitress's task threads.
WAITRESS_CHANNEL_KEY = "waitress.client_disconnected"

# The file wrappers seen to return the file they were given (uWSGI's function), which need no
# substitute: by id(), each held weakly and forgotten when it dies. A server or an outer
# middleware may put a new callable in each request's environ (a bound method of its connection,
# a partial): none is kept alive, and the table does not grow with requests.
_returns_the_file: dict[int, weakref.ref[Any]] = {}


def needs_substitute(file_wrapper: object) -> bool:
    """Whether the objects ``file_wrapper`` makes refuse a new ``close`` attribute.

    A Python class whose instances have a ``__dict__`` takes one (no cost); a C type, a class
    with ``__slots__`` or a function gets the substitute, until a function is seen to return the
    file it was given (then it is remembered for as long as it lives).
    """
    seen = _returns_the_file.get(id(file_wrapper))
    if seen is not None and seen() is file_wrapper:
        return False
    return not (isinstance(file_wrapper, type) and file_wrapper.__dictoffset__ != 0)


def _returns_the_file_given(file_wrapper: object) -> None:
    """Remember that ``file_wrapper`` returns the file itself, for as long as it lives."""
    key, table = id(file_wrapper), _returns_the_file
    # A wrapper without weak references is judged again next time. The callback holds the
    # table, not the global: a wrapper may die at interpreter shutdown, after the globals.
    with contextlib.suppress(TypeError):
        table[key] = weakref.ref(file_wrapper, lambda _: table.pop(key, None))


def _no_close() -> None:
    """The ``close()`` of a file-like object that has none."""


class ClosingFile:
    """The file an application gives ``wsgi.file_wrapper``, with a ``close()`` of ours.

    Until the response adopts it, :meth:`close` is the file's own; then it is the cleanup's,
    which closes the file first. Every other attribute is the file's: ``read`` is fetched once
    (servers without ``sendfile()`` call it per block), the rest on use (``fileno`` and ``tell``
    once per response).
    """

    __slots__ = ("close", "file", "read")

    def __init__(self, file: Any) -> None:
        self.file = file
        self.read = file.read
        self.close: Callable[[], object] = getattr(file, "close", _no_close)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def __iter__(self) -> Iterator[bytes]:
        # meinheld iterates the file itself when it cannot send it.
        return iter(self.file)


class FileWrapperSubstitute:
    """Stands in for the server's ``wsgi.file_wrapper`` during one request.

    Calls the server's wrapper with the file in a :class:`ClosingFile` and remembers what it
    made, so that the middleware knows the body the application returns for the server's own.

    :param file_wrapper: the server's ``environ["wsgi.file_wrapper"]``.
    """

    __slots__ = ("file_wrapper", "made", "proxy")

    def __init__(self, file_wrapper: Callable[..., Iterable[bytes]]) -> None:
        self.file_wrapper = file_wrapper
        self.made: object = None
        self.proxy: ClosingFile | None = None

    def __call__(self, filelike: Any, *args: Any, **kwargs: Any) -> Iterable[bytes]:
        try:
            proxy = ClosingFile(filelike)
        except Exception:
            # No read(), or an attribute that raises: the server gets the file as it is and
            # the response is wrapped; its hooks run all the same.
            return self.file_wrapper(filelike, *args, **kwargs)
        made = self.file_wrapper(proxy, *args, **kwargs)
        if made is proxy:
            # A wrapper that returns the file itself (uWSGI) recognises it by identity: the
            # file's own close can be pointed at the cleanup, as for a Python class, so later
            # requests need no substitute.
            _returns_the_file_given(self.file_wrapper)
        self.made, self.proxy = made, proxy
        return made

    def adopt(self, cleanup: ResponseCleanup) -> Iterable[bytes]:
        """The body to hand the server: what the server's wrapper made, closing into ``cleanup``."""
        proxy = self.proxy
        assert proxy is not None  # set together with made, which the caller matched
        cleanup._close_body = proxy.close
        proxy.close = cleanup.close
        return self.made  # type: ignore[return-value]


class OffLoopClose:
    """The ``close()`` of a file body that waitress may close on its I/O thread.

    Called on the thread that ran the application (a task thread, when waitress sent the whole
    file at once), it is the response's :meth:`~ResponseCleanup.close`. Called on another (the
    I/O thread), it closes the body there at once and hands the rest of that ``close()`` to
    waitress's task dispatcher, which runs it on a task thread, or, when waitress stops with it
    still queued, in the thread that stops waitress. So the hooks run once each, in the same
    order, told the same outcome: the exception the I/O thread was handling (a client that reset
    the connection) is recorded as the request's failure, unless the body's own ``close()``
    raised, which is recorded first, as ``close()`` does, and raised there, to waitress.

    :param cleanup: the response's cleanup.
    :param dispatcher: waitress's task dispatcher (``add_task(task)``, which calls ``service()``
        on a task thread, and ``cancel()`` on tasks still queued when waitress stops).

    Example::

        body.close = OffLoopClose(cleanup, dispatcher)  # on the thread running the application
    """

    __slots__ = ("cleanup", "dispatcher", "thread")

    def __init__(self, cleanup: ResponseCleanup, dispatcher: Any) -> None:
        self.cleanup = cleanup
        self.dispatcher = dispatcher
        self.thread = threading.get_ident()

    def __call__(self) -> None:
        if threading.get_ident() == self.thread:
            self.cleanup.close()
            return
        cleanup = self.cleanup
        dispatcher, self.dispatcher = self.dispatcher, None
        if dispatcher is None or cleanup._environ is None:
            return  # handed off, or closed, already
        # What this thread is handling: told to context managers unless the body's own close()
        # fails, as in close(), which the task thread finds without a body to close.
        failure = sys.exc_info()[1]
        close_body, cleanup._close_body = cleanup._close_body, None
        try:
            if close_body is not None:
                close_body()
        except BaseException as exc:
            cleanup.record_failure(exc)
            raise
        finally:
            if failure is not None:
                cleanup.record_failure(failure)  # kept only if nothing was recorded before
            dispatcher.add_task(self)

    def service(self) -> None:
        """Run the hooks; their failures are logged by :meth:`ResponseCleanup.close`."""
        with contextlib.suppress(Exception):
            self.cleanup.close()

    cancel = service


def close_off_loop(cleanup: ResponseCleanup, body: object, environ: dict[str, Any]) -> None:
    """On waitress, point the adopted file ``body``'s ``close`` at an :class:`OffLoopClose`."""
    try:
        dispatcher = environ[WAITRESS_CHANNEL_KEY].__self__.server.task_dispatcher
    except AttributeError:
        return  # not the waitress this was written for: hooks run where the body is closed
    body.close = OffLoopClose(cleanup, dispatcher)  # type: ignore[attr-defined]


class RestoringClose:
    """The body's own ``close()``, called by the response's ``close()`` before the hooks.

    It first gives the body back its ``close`` as the application made it (deleting ours, or
    putting the original back where it was the object's own attribute), so that an object the
    application returns again, say a cached in-memory asset, is adopted afresh each time.

    :param body: the application's file-like body, whose ``close`` now points at the cleanup.
    :param own_close: its ``close`` before that.
    """

    __slots__ = ("body", "own_attribute", "own_close")

    def __init__(self, body: object, own_close: Callable[[], object]) -> None:
        self.body = body
        self.own_close = own_close
        # Whether close was the object's own attribute (gunicorn's wrapper sets one), not its
        # class's method.
        self.own_attribute = "close" in getattr(body, "__dict__", ())

    def __call__(self) -> object:
        body, own_close = self.body, self.own_close
        self.body = None
        with contextlib.suppress(Exception):
            if self.own_attribute:
                body.close = own_close  # type: ignore[attr-defined]
            else:
                del body.close  # type: ignore[attr-defined]
        return own_close()


def serve_app_file(
    cleanup: ResponseCleanup, body: Any, close_body: Callable[[], object], by_identity: bool
) -> Iterable[bytes]:
    """What to hand the server for a file-like body the application returned whole.

    With ``by_identity`` (a server whose file wrapper returns the file itself, as uWSGI's does,
    and which sends it when it gets that very object back): the same object, its ``close``
    pointed at the cleanup and given back at close. Elsewhere, and when the object refuses the
    attribute or another response is still sending it (its ``close`` is that response's), the
    cleanup itself, iterating the file in blocks. Each response gets the body's own ``close()``
    once and only its own hooks.
    """
    if type(close_body) is MethodType and isinstance(close_body.__self__, ResponseCleanup):
        # In flight for another response: its own close() is what that response holds.
        held = close_body.__self__._close_body
        own = held.own_close if isinstance(held, RestoringClose) else None
        return _wrap(cleanup, body, own)
    if not by_identity:
        return _wrap(cleanup, body, close_body)
    restoring_close = RestoringClose(body, close_body)
    try:
        body.close = cleanup.close
    except (AttributeError, TypeError):
        log_unpatchable(type(body))
        return _wrap(cleanup, body, close_body)
    cleanup._close_body = restoring_close
    return body  # type: ignore[no-any-return]


def _wrap(
    cleanup: ResponseCleanup, body: Any, close_body: Callable[[], object] | None
) -> ResponseCleanup:
    """Serve ``body`` through ``cleanup``, closed with ``close_body`` (none if ``None``)."""
    try:
        binary = isinstance(body.read(0), bytes)
    except Exception:  # a closed file, say: the server meets the error as it would without us
        binary = False
    if binary:
        # Iterating a file yields lines, and a binary file can be one long line: read blocks,
        # by C code (nothing of ours runs per block).
        cleanup._body = iter(partial(body.read, BLOCK_SIZE), b"")
    else:
        # A text file (open() without "b", io.StringIO) reads "" at its end, never b"": its
        # blocks would never end. The server iterates it as it would without the middleware.
        cleanup._body = body
    cleanup._close_body = close_body
    return cleanup
