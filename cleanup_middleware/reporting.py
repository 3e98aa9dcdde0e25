"""What the library says about hooks and requests: their names, escaped, and its reports.

Every message of the library names a hook by ``module.qualname`` and a request by its method
and path, and by nothing else: a repr may hold a hook's arguments (a config hook's is the
environ, headers and all), and the environ holds headers and cookies. What is taken from the
request is escaped and bounded, so that a client cannot forge or flood log lines. The mechanism
(:mod:`cleanup_middleware.cleanup`) and after-response work (:mod:`cleanup_middleware.deferred`)
both report through this module.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import warnings
from contextlib import suppress
from functools import partial
from types import CodeType, GeneratorType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = [
    "ABANDONED_LOG_INTERVAL",
    "StandIn",
    "closed_error",
    "describe_request",
    "hook_failed",
    "hook_name",
    "log_unpatchable",
    "logger",
    "method_and_path",
    "not_callable",
    "not_picklable",
    "not_wrapped",
    "printable",
    "report_abandoned",
]

logger = logging.getLogger("cleanup_middleware")


class StandIn:
    """A callable of the library's that stands for a user's object: named after that object.

    A context manager's exit and a deferred function's hand-off are registered as hooks; a
    message names what the user registered, given by :attr:`named_after`.
    """

    __slots__ = ()

    @property
    def named_after(self) -> object:
        raise NotImplementedError


# Printable characters pass; the rest (line breaks, other controls, separators) are escaped.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


def printable(value: object, limit: int) -> str:
    """``value``, taken from the request, made safe for one log line: escaped and bounded.

    WSGI strings are bytes decoded as latin-1; UTF-8 is shown as such when the bytes are UTF-8.
    No codec is named: under ``python -X dev`` naming one looks it up, and at interpreter
    shutdown the registry is gone (``LookupError``), while the garbage-collection net may still
    report.
    """
    if not isinstance(value, str):
        return f"<{type(value).__name__}>"
    # The latin-1 bytes (ValueError past U+00FF), decoded as UTF-8 (UnicodeDecodeError if not).
    with suppress(ValueError):
        value = bytes(map(ord, value)).decode()
    text = value.translate(_ESCAPES)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    if len(text) > limit:
        text = f"{text[:limit]}...({len(text) - limit} more)"
    return text


def _escape(character: str) -> str:
    """``character`` as a Python escape, as the ``unicode_escape`` codec writes it."""
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def describe_request(environ: WSGIEnvironment) -> str:
    """The request's method and path, for messages, escaped: never any other request data."""
    method, path = method_and_path(environ)
    return f"{method} {path}"


def method_and_path(environ: WSGIEnvironment) -> tuple[str, str]:
    """The request's method and path, each escaped and bounded as :func:`describe_request`'s."""
    script_name = environ.get("SCRIPT_NAME", "")
    path = environ.get("PATH_INFO", "")
    if isinstance(script_name, str) and isinstance(path, str):
        path = script_name + path
    return printable(environ.get("REQUEST_METHOD", "?"), 16), printable(path, 200)


def hook_name(hook: object) -> str:
    """What to call a hook in a message: ``module.qualname`` of the function, never a repr."""
    try:
        while isinstance(hook, StandIn | partial):
            hook = hook.named_after if isinstance(hook, StandIn) else hook.func
        if isinstance(hook, GeneratorType):
            # A @contextmanager's generator, named by its function (which __enter__ forgot).
            return printable(f"{_module_of(hook.gi_code)}.{hook.__qualname__}", 200)
        module = getattr(hook, "__module__", None)
        qualname = getattr(hook, "__qualname__", None)
        if not isinstance(qualname, str):
            module, qualname = type(hook).__module__, type(hook).__qualname__
    except Exception:
        module, qualname = type(hook).__module__, type(hook).__qualname__
    name = f"{module}.{qualname}" if isinstance(module, str) else qualname
    return printable(name, 200)


def _module_of(code: CodeType) -> str:
    """The name of the module whose file holds ``code``."""
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == code.co_filename:
            return name
    return code.co_filename


def hook_failed(
    environ: WSGIEnvironment, hook: object, exc: BaseException, earlier: BaseException | None
) -> BaseException:
    """Log a hook's failure; return the error close() would raise after the others ran."""
    logger.error(
        "cleanup hook %s failed for %s", hook_name(hook), describe_request(environ), exc_info=exc
    )
    if earlier is None:
        return exc
    # Like ExitStack: the last error carries the earlier ones as __context__ ...
    if exc.__context__ is None:
        exc.__context__ = earlier
    # ... except that a KeyboardInterrupt or SystemExit outranks ordinary errors.
    return exc if isinstance(earlier, Exception) else earlier


#: At most one log line about abandoned responses per this many seconds, per process.
ABANDONED_LOG_INTERVAL = 60.0
_abandoned_lock = threading.RLock()  # re-entrant: a collection may start inside it
_abandoned_unreported = 0
_abandoned_logged_at: float | None = None


def report_abandoned(environ: WSGIEnvironment) -> None:
    """Say that a response was never closed: a rate-limited WARNING and a ResourceWarning."""
    global _abandoned_unreported, _abandoned_logged_at
    description = describe_request(environ)
    with _abandoned_lock:
        _abandoned_unreported += 1
        now = time.monotonic()
        due = _abandoned_logged_at is None or now - _abandoned_logged_at >= ABANDONED_LOG_INTERVAL
        if due:
            count, _abandoned_unreported, _abandoned_logged_at = _abandoned_unreported, 0, now
    if due:
        logger.warning(
            "the response to %s was never closed; its cleanup hooks ran only when it was "
            "garbage-collected (%d such response(s) since the last report; at most one report "
            "every %g s). The server or a middleware outside CleanupMiddleware must call close() "
            "on the response body (PEP 3333)",
            description,
            count,
            ABANDONED_LOG_INTERVAL,
        )
    warnings.warn(
        f"the response to {description} was never closed; its cleanup hooks ran only when it "
        "was garbage-collected. The server or a middleware outside CleanupMiddleware must call "
        "close() on the response body (PEP 3333)",
        ResourceWarning,
        stacklevel=2,
    )


# File wrapper classes whose instances refused a new ``close``; each is logged once.
_unpatchable_types: set[type] = set()


def log_unpatchable(body_type: type) -> None:
    """Say, once per class, that a file body refused a new ``close`` and is wrapped instead.

    At WARNING: the server loses ``sendfile()`` for it, which the operator must see, and
    default logging (gunicorn's, waitress's, a bare script's) drops anything lower.
    """
    if body_type not in _unpatchable_types:
        _unpatchable_types.add(body_type)
        logger.warning(
            "cannot set close() on %s.%s; wrapping it instead, so the server will iterate "
            "this file body rather than use sendfile()",
            body_type.__module__,
            body_type.__qualname__,
        )


def not_wrapped(environ: object, call: str) -> Exception:
    """The error of ``call()`` given something that is no environ of the middleware's."""
    if not isinstance(environ, dict):
        return TypeError(
            f"{call}() takes the WSGI environ dict as its first argument, "
            f"got a {type(environ).__name__} object"
        )
    return RuntimeError(
        f"{call}() needs an environ that passed through CleanupMiddleware, and this one did not; "
        "wrap the WSGI application: app = CleanupMiddleware(app) (for Flask: "
        "cleanup_middleware.flask.init_app(app))"
    )


def not_callable(call: str, purpose: str, fn: object) -> TypeError:
    """The error of ``call()`` given a hook that cannot be called."""
    # The type, not a repr: the object may hold request data.
    return TypeError(
        f"{call}() needs a callable {purpose}, got a {type(fn).__name__} object; pass the "
        "function itself, not its result"
    )


def not_picklable(cleanup: object, key: str) -> TypeError:
    """The error of pickling a request's cleanup, ``environ[key]``."""
    return TypeError(
        f"cannot pickle a {type(cleanup).__name__} (environ[{key!r}]): it runs the cleanup "
        "hooks of one request, in this process; pickle the environ without that key "
        "(copy.copy() and copy.deepcopy() keep the request's own)"
    )


def closed_error(call: str) -> RuntimeError:
    """The error of ``call()`` once the response was closed."""
    return RuntimeError(
        f"{call}() was called after the response was closed, so the hook would never run; "
        "register it while the request is handled or its body is being sent"
    )
