"""The guarantee at its edges: what a failing hook logs, the outcome a context manager is told,
the garbage-collection net, and registrations that race ``close()`` (issue 10).

In-process, with the server-style loop of test_semantics.py; each test is named after the rule.
"""

from __future__ import annotations

import copy
import gc
import io
import logging
import os
import pickle
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask, abort, jsonify
from test_semantics import Tracked, make_environ, serve, start_response

import cleanup_middleware.flask
from cleanup_middleware import (
    ENVIRON_KEY,
    CleanupMiddleware,
    Hook,
    add_cleanup,
    enter_context,
    reporting,
)

SECRETS = {"HTTP_AUTHORIZATION": "Bearer SECRET-TOKEN", "HTTP_COOKIE": "session=SECRET-COOKIE"}


def failing_hook(environ: dict[str, Any]) -> None:
    raise RuntimeError("hook failed")


def failing_hook_with_argument(argument: str) -> None:
    raise RuntimeError("hook failed")


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"hello"]


def hook_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "cleanup_middleware" and r.levelno >= 40]


# -- what a failing hook puts in the log ------------------------------------------------------


def test_a_failing_config_hook_is_logged_by_name_never_with_the_environ(
    caplog: pytest.LogCaptureFixture,
) -> None:
    middleware = CleanupMiddleware(hello, hooks=[Hook(call=failing_hook)])
    serve(middleware, make_environ(PATH_INFO="/account", **SECRETS))
    [error] = hook_errors(caplog)
    assert error.getMessage() == (
        "cleanup hook test_hardening.failing_hook failed for GET /account"
    )
    assert error.exc_info is not None and error.exc_info[0] is RuntimeError
    assert "SECRET" not in caplog.text  # the message and the traceback


def test_a_failing_hook_is_logged_without_the_reprs_of_its_arguments(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        add_cleanup(environ, failing_hook_with_argument, "password=SECRET-ARGUMENT")
        enter_context(environ, exits_with_error(environ["HTTP_COOKIE"]))
        return hello(environ, start_response)

    serve(CleanupMiddleware(app), make_environ(**SECRETS))
    messages = [r.getMessage() for r in hook_errors(caplog)]
    assert messages == [
        "cleanup hook test_hardening.exits_with_error failed for GET /thing",
        "cleanup hook test_hardening.failing_hook_with_argument failed for GET /thing",
    ]
    assert "SECRET" not in caplog.text


@contextmanager
def exits_with_error(secret: str) -> Iterator[None]:
    yield
    raise RuntimeError("exit failed")


@pytest.mark.parametrize(
    "path",
    [
        "/account\n2099-01-01 00:00:00 CRITICAL auth: login accepted",
        "/account\r\x1b[2J\x00\x85\u2028",
    ],
)
def test_control_characters_from_the_request_are_escaped_in_the_log(
    caplog: pytest.LogCaptureFixture, path: str
) -> None:
    # PEP 3333: PATH_INFO holds the request's bytes decoded as latin-1.
    environ = make_environ(PATH_INFO=path.encode().decode("latin-1"), REQUEST_METHOD="GET\n")
    serve(CleanupMiddleware(hello, hooks=[Hook(call=failing_hook)]), environ)
    [error] = hook_errors(caplog)
    message = error.getMessage()
    assert message.isprintable(), message
    expected = "cleanup hook test_hardening.failing_hook failed for GET\\x0a /account"
    assert message.startswith(expected)


def test_a_long_path_is_bounded_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    environ = make_environ(PATH_INFO="/" + "a" * 100_000)
    serve(CleanupMiddleware(hello, hooks=[Hook(call=failing_hook)]), environ)
    [error] = hook_errors(caplog)
    assert len(error.getMessage()) < 400 and "(99801 more)" in error.getMessage()


def test_a_utf8_path_is_shown_as_the_client_wrote_it(caplog: pytest.LogCaptureFixture) -> None:
    environ = make_environ(PATH_INFO="/café".encode().decode("latin-1"))
    serve(CleanupMiddleware(hello, hooks=[Hook(call=failing_hook)]), environ)
    [error] = hook_errors(caplog)
    assert error.getMessage().endswith("for GET /café")


# -- the outcome a context manager is told ----------------------------------------------------


def flask_api(cm: Tracked) -> Flask:
    app = Flask(__name__)
    cleanup_middleware.flask.init_app(app)

    @app.errorhandler(Exception)
    def json_error(error: Exception) -> Any:
        code = getattr(error, "code", 500)
        return jsonify(error=type(error).__name__), code if isinstance(code, int) else 500

    @app.before_request
    def transaction() -> None:
        from flask import request

        enter_context(request.environ, cm)

    @app.get("/raises")
    def raises() -> str:
        raise LookupError("the view failed")

    @app.get("/aborts")
    def aborts() -> str:
        abort(404)

    @app.get("/returns-404")
    def returns_404() -> Any:
        return jsonify(error="not here"), 404

    return app


@pytest.mark.parametrize(
    ("path", "told"),
    [("/raises", "LookupError"), ("/aborts", "NotFound"), ("/returns-404", None)],
)
def test_an_exception_that_escaped_the_view_is_the_failure_even_when_a_handler_answered(
    path: str, told: str | None
) -> None:
    cm = Tracked()
    client = flask_api(cm).test_client()
    with client.get(path) as response:
        assert response.status_code in (404, 500)
    assert [None if e is None else e.__name__ for e in cm.exits] == [told]


def copying_environ(app: Any) -> Any:
    """A middleware between ours and the app that hands the app a copy of the environ."""

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        return app(dict(environ, copied=True), start_response)

    return middleware


def test_the_outcome_survives_a_middleware_that_copies_the_environ() -> None:
    cm = Tracked()
    flask_app = flask_api(cm)
    wrapped = CleanupMiddleware(copying_environ(flask_app.wsgi_app))
    environ = make_environ(PATH_INFO="/raises", **{"wsgi.url_scheme": "http"})
    environ.update(SERVER_NAME="localhost", SERVER_PORT="80", SERVER_PROTOCOL="HTTP/1.1")
    environ["wsgi.input"] = io.BytesIO()
    serve(wrapped, environ)
    assert cm.exits == [LookupError]


def test_a_body_close_error_reaches_the_context_manager_through_an_environ_copy() -> None:
    cm = Tracked()

    class FailingClose(list[bytes]):
        def close(self) -> None:
            raise OSError("flush failed")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        enter_context(environ, cm)
        start_response("200 OK", [])
        return FailingClose([b"x"])

    with pytest.raises(OSError, match="flush failed"):
        serve(CleanupMiddleware(copying_environ(app)))
    assert cm.exits == [OSError]


def without_streams(environ: dict[str, Any]) -> dict[str, Any]:
    """The environ's keys that copy.deepcopy() and pickle can take (not wsgi.input/errors)."""
    return {k: v for k, v in environ.items() if k not in ("wsgi.input", "wsgi.errors")}


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy])
def test_a_copy_of_the_environ_keeps_the_requests_cleanup_and_never_runs_a_hook(
    copier: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    # A deep copy made a live second cleanup on the pure base, whose GC net ran the request's
    # hooks before the real close; on the C base it raised TypeError (issue 18, item 7).
    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, ran.append, "registered on the request")
        copied = copier(without_streams(environ))
        assert copied[ENVIRON_KEY] is environ[ENVIRON_KEY]
        assert copier(environ[ENVIRON_KEY]) is environ[ENVIRON_KEY]
        add_cleanup(copied, ran.append, "registered through the copy")
        del copied
        gc.collect()
        assert ran == []
        return hello(environ, start_response)

    serve(CleanupMiddleware(app))
    assert ran == ["registered through the copy", "registered on the request"]


def test_pickling_the_environ_is_refused_with_a_type_error_naming_the_key() -> None:
    refused: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            with pytest.raises(TypeError) as raised:
                pickle.dumps(without_streams(environ), protocol)
            refused.append(str(raised.value))
        return hello(environ, start_response)

    serve(CleanupMiddleware(app))
    assert set(refused) == {
        "cannot pickle a ResponseCleanup (environ['cleanup_middleware.cleanup']): it runs the "
        "cleanup hooks of one request, in this process; pickle the environ without that key "
        "(copy.copy() and copy.deepcopy() keep the request's own)"
    }


def abandon(app: Any, **environ: Any) -> None:
    """Start a response and drop it unclosed, as a server that never calls close() does."""
    body = app(make_environ(**environ), start_response)
    list(body)


def test_an_abandoned_request_is_not_told_the_collecting_threads_exception() -> None:
    cm = Tracked()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        enter_context(environ, cm)
        return hello(environ, start_response)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.disable()
        try:
            abandon(CleanupMiddleware(app))
            try:
                raise PermissionError("another request's error")
            except PermissionError:
                gc.collect()  # the collector runs while this thread handles an unrelated error
        finally:
            gc.enable()
    assert cm.exits == [None]


# -- the garbage-collection net -----------------------------------------------------------------


@pytest.fixture
def fresh_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reporting, "_abandoned_logged_at", None)
    monkeypatch.setattr(reporting, "_abandoned_unreported", 0)


def test_the_gc_net_keeps_an_exception_that_is_propagating_while_it_runs(
    fresh_rate_limit: None,
) -> None:
    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, ran.append, "hook")
        return hello(environ, start_response)

    middleware = CleanupMiddleware(app)

    def unclosed_body() -> Any:
        environ = make_environ()
        body = middleware(environ, start_response)
        # Without the environ's reference to it, the response is freed by reference counting,
        # not left to a collection (which never starts while an exception is propagating).
        del environ[ENVIRON_KEY]
        return body

    def bodies() -> Iterator[Any]:
        yield unclosed_body()
        raise KeyError("the app's error")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        # list() drops the body it collected, and so runs the net, with the KeyError set: the
        # net must neither lose it nor fail for it.
        with pytest.raises(KeyError, match="the app's error"):
            list(bodies())
    assert ran == ["hook"]


def test_the_gc_net_runs_the_hooks_before_a_warning_filter_can_raise(
    fresh_rate_limit: None,
) -> None:
    ran: list[str] = []
    unraisable: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, ran.append, "hook")
        return hello(environ, start_response)

    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # python -W error, pytest filterwarnings = error
            abandon(CleanupMiddleware(app))
            gc.collect()
    finally:
        sys.unraisablehook = previous_hook
    assert ran == ["hook"]
    [report] = unraisable
    assert isinstance(report.exc_value, ResourceWarning)
    assert "hooks ran" in str(report.exc_value)


def test_the_gc_net_logs_a_rate_limited_warning_with_method_and_path(
    caplog: pytest.LogCaptureFixture, fresh_rate_limit: None
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        for number in range(3):
            abandon(CleanupMiddleware(hello), REQUEST_METHOD="PUT", PATH_INFO=f"/lost\n{number}")
            gc.collect()
        # The interval has passed.
        reporting._abandoned_logged_at = -reporting.ABANDONED_LOG_INTERVAL
        abandon(CleanupMiddleware(hello), PATH_INFO="/later")
        gc.collect()
    warnings_logged = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(";")[0] for r in warnings_logged] == [
        "the response to PUT /lost\\x0a0 was never closed",
        "the response to GET /later was never closed",
    ]
    assert "(1 such response(s) since the last report" in warnings_logged[0].getMessage()
    assert "(3 such response(s) since the last report" in warnings_logged[1].getMessage()


def test_the_resource_warning_escapes_the_path(fresh_rate_limit: None) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        abandon(CleanupMiddleware(hello), PATH_INFO="/a\nCRITICAL forged")
        gc.collect()
    [warning] = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert str(warning.message).startswith("the response to GET /a\\x0aCRITICAL forged was")


# A response still open when the interpreter exits: the collector reclaims it during shutdown.
OPEN_AT_EXIT = """
import logging
from cleanup_middleware import CleanupMiddleware, add_cleanup

logging.basicConfig(format="%(levelname)s %(name)s %(message)s")

def app(environ, start_response):
    add_cleanup(environ, print, "hook ran")
    start_response("200 OK", [])
    return [b"x"]

# A UTF-8 path to decode, and a method with a character to escape.
environ = {"REQUEST_METHOD": "GET\u2028", "PATH_INFO": "/caf\xc3\xa9\\n"}
body = CleanupMiddleware(app)(environ, lambda status, headers: None)
"""


def test_the_gc_net_reports_a_response_left_open_at_exit_and_never_raises() -> None:
    # python -X dev looks up every codec named to str.encode() and bytes.decode(), and at
    # shutdown the codec registry is gone: a report that names one fails with LookupError
    # (issue 18, item 10). The subprocess inherits the base of this run.
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-c", OPEN_AT_EXIT],
        capture_output=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hook ran\n"
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr
    described = "GET\\u2028 /caf\u00e9\\x0a"
    logged, warned = (line for line in result.stderr.splitlines() if " was never closed" in line)
    assert logged.startswith(f"WARNING cleanup_middleware the response to {described} was never")
    assert f"ResourceWarning: the response to {described} was never closed" in warned


# -- registrations that race close() ----------------------------------------------------------


class Interleaving(list[Any]):
    """A hook list that runs ``step`` at one chosen point of close() or of a registration.

    Run in one thread, it puts the other party's whole operation exactly where a thread switch
    would, so each interleaving is tested every time rather than by chance.
    """

    def __init__(self, at: str, step: Callable[[], None]) -> None:
        super().__init__()
        self.at, self.step = at, step

    def _once(self, at: str) -> None:
        if self.at == at:
            self.at = "done"
            self.step()

    def __len__(self) -> int:
        size = super().__len__()
        if size == 0:
            self._once("close sees no hooks")
        return size

    def append(self, hook: Any) -> None:
        self._once("before append")
        super().append(hook)
        self._once("after append")

    def insert(self, index: Any, hook: Any) -> None:
        # defer() and the outcome callbacks insert where append() appends.
        self._once("before append")
        super().insert(index, hook)
        self._once("after append")


def open_response(ran: list[str]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        add_cleanup(environ, ran.append, "first")
        return hello(environ, start_response)

    environ = make_environ()
    body = CleanupMiddleware(app)(environ, start_response)
    return environ, body


@pytest.mark.parametrize("at", ["close sees no hooks", "before append", "after append"])
def test_a_registration_racing_close_either_runs_or_raises(at: str) -> None:
    ran: list[str] = []
    environ, body = open_response(ran)
    outcome: list[str] = []
    cleanup = environ[ENVIRON_KEY]
    if at == "close sees no hooks":
        # close() took every hook and found the list empty; the registration lands right then.
        def step() -> None:
            add_cleanup(environ, ran.append, "raced")
            outcome.append("registered")

    else:
        # The registration has fetched the list; close() runs in full before or after its append.
        step = body.close
    hooks = Interleaving(at, step)
    hooks.extend(cleanup._hooks)
    cleanup._hooks = hooks
    if at == "close sees no hooks":
        body.close()
    else:
        try:
            add_cleanup(environ, ran.append, "raced")
            outcome.append("registered")
        except RuntimeError as exc:
            assert "after the response was closed" in str(exc)
            outcome.append("refused")
    assert outcome == (["refused"] if at == "before append" else ["registered"])
    assert ("raced" in ran) == (outcome == ["registered"]), (ran, outcome)
    assert ran.count("raced") <= 1 and ran.count("first") == 1
    with pytest.raises(RuntimeError, match="after the response was closed"):
        add_cleanup(environ, ran.append, "too late")
    assert "too late" not in ran


def test_enter_context_racing_close_exits_the_context_it_entered() -> None:
    ran: list[str] = []
    environ, body = open_response(ran)
    cm = Tracked()
    hooks = Interleaving("before append", body.close)
    hooks.extend(environ[ENVIRON_KEY]._hooks)
    environ[ENVIRON_KEY]._hooks = hooks
    with pytest.raises(RuntimeError, match="after the response was closed"):
        enter_context(environ, cm)
    assert cm.exits == [RuntimeError]


def race_registrations_against_close(threads_count: int) -> None:
    """Threads register on one response until refused, while this thread closes it."""
    ran: list[tuple[int, int]] = []
    registered: list[tuple[int, int]] = []
    environ, body = open_response([])
    start = threading.Barrier(threads_count + 1, timeout=10)

    def register(thread_id: int) -> None:
        start.wait()
        for n in range(10_000):  # bounded; stops at the first refusal
            try:
                add_cleanup(environ, ran.append, (thread_id, n))
            except RuntimeError:
                return
            registered.append((thread_id, n))

    threads = [threading.Thread(target=register, args=(t,)) for t in range(threads_count)]
    for thread in threads:
        thread.start()
    start.wait()
    body.close()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(ran) == sorted(registered)


def test_threads_registering_while_close_runs_either_run_or_raise() -> None:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows
    try:
        for _ in range(150):
            race_registrations_against_close(threads_count=4)
    finally:
        sys.setswitchinterval(interval)
