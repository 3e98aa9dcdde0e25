"""What a user can see of ResponseCleanup, printed as JSON: run once on each base and compared.

tests/test_parity.py runs this in a fresh interpreter with the C base and with the pure-Python
one (``CLEANUP_MIDDLEWARE_PURE_PYTHON``). Each case's outcome is what it returned or the type
and text of what it raised; object addresses are left out, since they differ from run to run.
"""

from __future__ import annotations

import copy
import gc
import json
import pickle
import re
import sys
import warnings
import weakref
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from functools import partial
from typing import Any

from fault_inproc import collect_unraisable, make_environ, quiet_cleanup_logger, start_response

from cleanup_middleware import ENVIRON_KEY, CleanupMiddleware, add_cleanup, enter_context
from cleanup_middleware.cleanup import ResponseCleanup

outcomes: dict[str, object] = {}


def outcome(case: str, call: Callable[[], object]) -> None:
    """Record what ``call()`` returned, or what it raised, under ``case``."""
    try:
        result = call()
    except BaseException as exc:
        result = f"{type(exc).__name__}: {exc}"
    outcomes[case] = re.sub(r" at 0x[0-9a-f]+", "", str(result))


def request(app: Callable[..., Iterable[bytes]], close: bool = True) -> dict[str, Any]:
    """One request through the middleware, its body read, and closed unless ``close`` is false."""
    environ = make_environ("GET", "/parity")
    body = CleanupMiddleware(app)(environ, start_response)
    list(body)
    if close:
        body.close()  # type: ignore[attr-defined]
    return environ


def without_streams(environ: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in environ.items() if k not in ("wsgi.input", "wsgi.errors")}


ran: list[str] = []


def register_through_a_copy(environ: dict[str, Any]) -> None:
    add_cleanup(copy.deepcopy(without_streams(environ)), ran.append, "through a deep copy")


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Registers a hook, and tries what a user may do with the environ while the request runs."""
    cleanup = environ[ENVIRON_KEY]
    add_cleanup(environ, ran.append, "hook")
    outcome("repr", lambda: repr(cleanup))
    outcome("dir", lambda: sorted(name for name in dir(cleanup) if not name.startswith("__")))
    outcome("weakref", lambda: weakref.ref(cleanup))
    outcome("copy.copy(cleanup) is cleanup", lambda: copy.copy(cleanup) is cleanup)
    outcome("copy.deepcopy(cleanup) is cleanup", lambda: copy.deepcopy(cleanup) is cleanup)
    outcome("a hook registered through a deep copy", lambda: register_through_a_copy(environ))
    gc.collect()
    outcome("hooks run when the deep copy is collected", lambda: list(ran))
    for protocol in (0, pickle.HIGHEST_PROTOCOL):
        outcome(f"pickle, protocol {protocol}", partial(pickle.dumps, cleanup, protocol))
    outcome("add_cleanup(environ, 'not callable')", lambda: add_cleanup(environ, "fn"))
    outcome("enter_context(environ, object())", lambda: enter_context(environ, object()))
    start_response("200 OK", [])
    return [b"x"]


outcome("a request", lambda: (request(app), ran)[1])
closed = request(app)
outcome("add_cleanup after close", lambda: add_cleanup(closed, print))
outcome("enter_context after close", lambda: enter_context(closed, nullcontext()))
outcome("add_cleanup({}, print)", lambda: add_cleanup({}, print))
outcome("add_cleanup('environ', print)", lambda: add_cleanup("environ", print))
outcome("add_cleanup({})", lambda: add_cleanup({}))  # type: ignore[call-arg]
outcome("add_cleanup(environ={}, fn=print)", lambda: add_cleanup(environ={}, fn=print))  # type: ignore[call-arg]
outcome("iter(ResponseCleanup())", lambda: iter(ResponseCleanup()))
outcome("ResponseCleanup(1)", lambda: ResponseCleanup(1))  # type: ignore[call-arg]


def abandoned() -> list[str]:
    """The hooks the garbage-collection net ran for a response nobody closed."""
    ran.clear()
    request(app, close=False)
    gc.collect()
    return list(ran)


with quiet_cleanup_logger() as records, warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    hooks = abandoned()
outcomes["the GC net: hooks, log, warnings"] = [
    hooks,
    [f"{r.levelname} {r.getMessage()}" for r in records],
    [f"{w.category.__name__} {w.filename.rpartition('/')[2]}: {w.message}" for w in caught],
]
# Under python -W error the warning is an error: raised once the hooks ran, and reported. (The
# object the report names is what finalised the response: the response itself on the C base,
# the pure base's __del__ method on the other; so it is left out.)
with collect_unraisable() as unraisable, warnings.catch_warnings():
    warnings.simplefilter("error")
    hooks = abandoned()
outcomes["the GC net under -W error: hooks, what is reported"] = [
    hooks,
    [f"{type(u.exc_value).__name__}: {u.exc_value}" for u in unraisable],
]

json.dump(outcomes, sys.stdout, indent=1)
