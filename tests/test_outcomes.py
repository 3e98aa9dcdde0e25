"""``on_success`` and ``on_failure``: work that depends on how the request ended, in-process.

Each test calls the middleware as a server does (iterate the body, close it) and checks what
ran, in what order, against what the request's outcome was: the application or a view raised
(an error handler's answer counts), the body's ``close()`` raised, a hook or a context
manager's ``__exit__`` raised, the server was handling an error at close, or nothing did. The
end-to-end case, a task queue on a real broker behind gunicorn, is ``tests/test_task_queues.py``.
"""

from __future__ import annotations

import gc
import textwrap
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from apps.fault_inproc import collect_unraisable, make_environ, start_response
from test_defer import HandOver, deferring_app, serve
from test_hardening import Interleaving
from werkzeug.test import create_environ

import cleanup_middleware.flask
from cleanup_middleware import (
    ENVIRON_KEY,
    CleanupMiddleware,
    ConfigError,
    Hook,
    add_cleanup,
    defer,
    enter_context,
    on_failure,
    on_success,
)
from cleanup_middleware.cli import main
from cleanup_middleware.config import load_config


def outcome_pair(events: list[str], name: str) -> Callable[[dict[str, Any]], None]:
    """An app action registering ``name`` with on_success and on_failure."""

    def register(environ: dict[str, Any]) -> None:
        on_success(environ, events.append, f"{name}:success")
        on_failure(environ, events.append, f"{name}:failure")

    return register


@contextmanager
def transaction(events: list[str], commit_fails: bool = False) -> Iterator[None]:
    """Commits at exit if nothing failed, as a request's database transaction does."""
    try:
        yield
    except BaseException as exc:
        events.append(f"rollback:{type(exc).__name__}")
        raise
    if commit_fails:
        events.append("commit-failed")
        raise OSError("commit failed")
    events.append("commit")


def test_they_run_after_every_hook_and_exit_in_registration_order_before_hand_offs() -> None:
    events: list[str] = []
    executor = HandOver()

    def hook_registering_more(environ: dict[str, Any]) -> None:
        events.append("hook-registering")
        on_success(environ, events.append, "success-by-a-hook")
        on_success(environ, defer, environ, events.append, "deferred-on-success")

    app = deferring_app(
        outcome_pair(events, "first"),
        lambda environ: defer(environ, events.append, "deferred"),
        lambda environ: enter_context(environ, transaction(events)),
        lambda environ: add_cleanup(environ, hook_registering_more, environ),
        outcome_pair(events, "second"),
        lambda environ: add_cleanup(environ, events.append, "hook"),
    )
    serve(CleanupMiddleware(app, executor=executor))
    assert events == [
        "hook",
        "hook-registering",
        "commit",
        "first:success",
        "second:success",
        "success-by-a-hook",
    ]
    executor.run_all()
    # Handed over last, in the order deferred: the one deferred on success too.
    assert events[6:] == ["deferred", "deferred-on-success"]


def failing_hook(environ: dict[str, Any]) -> None:
    add_cleanup(environ, int, "not a number")


def raising_app(environ: dict[str, Any]) -> None:
    raise LookupError("the view failed")


class BodyWithFailingClose:
    def __iter__(self) -> Iterator[bytes]:
        yield b"ok"

    def close(self) -> None:
        raise OSError("close failed")


@pytest.mark.parametrize(
    ("actions", "outcome", "transaction_told"),
    [
        ([], "success", "commit"),
        ([raising_app], "failure", "rollback:LookupError"),
        ([failing_hook], "failure", "commit"),
        # The commit itself fails in __exit__: no receipt for an order that was not saved.
        (
            [lambda environ: enter_context(environ, transaction([], commit_fails=True))],
            "failure",
            "commit",
        ),
        (
            [lambda environ: environ[ENVIRON_KEY].record_failure(ValueError())],
            "failure",
            "rollback:ValueError",
        ),
    ],
    ids=["nothing raised", "the app raised", "a hook raised", "a commit raised", "recorded"],
)
def test_what_success_means(
    actions: list[Callable[[dict[str, Any]], None]], outcome: str, transaction_told: str
) -> None:
    events: list[str] = []
    app = deferring_app(
        lambda environ: enter_context(environ, transaction(events)),
        outcome_pair(events, "pair"),
        *actions,
    )
    with pytest.raises(LookupError) if raising_app in actions else nullcontext():
        serve(CleanupMiddleware(app))
    assert events == [transaction_told, f"pair:{outcome}"]


def test_the_body_s_close_raising_is_a_failure() -> None:
    events: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        outcome_pair(events, "pair")(environ)
        start_response("200 OK", [])
        return BodyWithFailingClose()

    with pytest.raises(OSError, match="close failed"):
        serve(CleanupMiddleware(app))
    assert events == ["pair:failure"]


def test_an_error_the_server_handles_at_close_is_a_failure() -> None:
    # A client that went away: the server closes the body while handling the write's error.
    events: list[str] = []
    body = CleanupMiddleware(deferring_app(outcome_pair(events, "pair")))(
        create_environ("/"), start_response
    )
    try:
        raise ConnectionResetError
    except ConnectionResetError:
        body.close()
    assert events == ["pair:failure"]


def test_one_outcome_for_the_request_even_when_an_outcome_callback_raises() -> None:
    events: list[str] = []

    def register(environ: dict[str, Any]) -> None:
        on_success(environ, int, "not a number")  # raises at close: logged like a hook
        outcome_pair(events, "later")(environ)

    serve(CleanupMiddleware(deferring_app(register)))
    assert events == ["later:success"]


@pytest.mark.parametrize("recorded", [False, True])
def test_an_abandoned_response_counts_as_what_enter_context_is_told(recorded: bool) -> None:
    events: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        enter_context(environ, transaction(events))
        outcome_pair(events, "pair")(environ)
        if recorded:
            environ[ENVIRON_KEY].record_failure(ValueError())
        start_response("200 OK", [])
        return [b"ok"]

    body = CleanupMiddleware(app)(make_environ(), start_response)
    with warnings.catch_warnings(), collect_unraisable() as unraisable:
        warnings.simplefilter("ignore", ResourceWarning)
        # An exception this thread handles while the net runs is another request's business.
        try:
            raise ConnectionResetError
        except ConnectionResetError:
            del body
            gc.collect()
    assert unraisable == []
    if recorded:
        assert events == ["rollback:ValueError", "pair:failure"]
    else:
        assert events == ["commit", "pair:success"]


def test_a_request_without_outcome_callbacks_decides_nothing() -> None:
    environ = create_environ("/")
    serve(CleanupMiddleware(deferring_app(lambda e: add_cleanup(e, len, ""))), environ)
    with pytest.raises(AttributeError):
        environ[ENVIRON_KEY]._outcome  # noqa: B018


@pytest.mark.parametrize("register", [on_success, on_failure])
def test_errors_are_add_cleanup_s(register: Callable[..., None]) -> None:
    name = register.__name__
    with pytest.raises(RuntimeError, match=rf"^{name}\(\) needs an environ that passed through"):
        register(create_environ("/"), len, "")
    with pytest.raises(TypeError, match=rf"^{name}\(\) needs a callable"):
        register({ENVIRON_KEY: None}, "not callable")
    environ = create_environ("/")
    serve(CleanupMiddleware(deferring_app()), environ)
    with pytest.raises(RuntimeError, match=rf"^{name}\(\) was called after the response"):
        register(environ, len, "")


@pytest.mark.parametrize("at", ["close sees no hooks", "before append", "after append"])
def test_a_registration_racing_close_either_runs_or_raises(at: str) -> None:
    ran: list[str] = []
    environ = create_environ("/")
    body = CleanupMiddleware(deferring_app(lambda e: defer(e, len, "")), executor=HandOver())(
        environ, start_response
    )
    outcome: list[str] = []

    def register() -> None:
        try:
            on_success(environ, ran.append, "raced")
        except RuntimeError:
            outcome.append("refused")
        else:
            outcome.append("registered")

    hooks = Interleaving(at, register if at == "close sees no hooks" else body.close)
    hooks.extend(environ[ENVIRON_KEY]._hooks)
    environ[ENVIRON_KEY]._hooks = hooks
    if at == "close sees no hooks":
        body.close()
    else:
        register()
    assert outcome == (["refused"] if at == "before append" else ["registered"])
    assert ran == ([] if at == "before append" else ["raced"])


def test_flask_an_error_handler_s_answer_is_a_failure() -> None:
    from flask import Flask, abort

    events: list[str] = []
    app = Flask(__name__)
    cleanup_middleware.flask.init_app(app)

    @app.errorhandler(LookupError)
    def answer(exc: LookupError) -> tuple[str, int]:
        return "sorry", 500

    @app.get("/<what>")
    def view(what: str) -> str:
        cleanup_middleware.flask.on_success(events.append, f"{what}:success")
        cleanup_middleware.flask.on_failure(events.append, f"{what}:failure")
        if what == "fail":
            raise LookupError(what)
        if what == "missing":
            abort(404)
        return "ok"

    for what in ("ok", "fail", "missing"):
        serve(app.wsgi_app, create_environ(f"/{what}"))
    assert events == ["ok:success", "fail:failure", "missing:failure"]


def test_pyramid_request_methods() -> None:
    from pyramid.config import Configurator

    events: list[str] = []

    def view(request: Any) -> Any:
        request.on_success(events.append, "success")
        request.on_failure(events.append, "failure")
        request.response.text = "ok"
        return request.response

    with Configurator() as config:
        config.include("cleanup_middleware.pyramid")
        config.add_route("home", "/")
        config.add_view(view, route_name="home")
        app = CleanupMiddleware(config.make_wsgi_app())
    serve(app, create_environ("/"))
    assert events == ["success"]


# Called by the config hooks below (the config names them).
config_events: list[str] = []


def record_config(environ: dict[str, Any]) -> None:
    config_events.append(environ["PATH_INFO"])


def test_config_when_with_and_without_defer(tmp_path: Path, capsys: Any) -> None:
    config = tmp_path / "cleanup.toml"
    config.write_text(
        textwrap.dedent(
            """
            executor = "test_defer:CONFIG_EXECUTOR"

            [[hooks]]
            call = "test_outcomes:record_config"
            when = "success"

            [[hooks]]
            call = "test_outcomes:record_config"
            when = "failure"
            defer = true
            """
        )
    )
    from test_defer import CONFIG_EXECUTOR

    CONFIG_EXECUTOR.given.clear()
    config_events.clear()
    app = CleanupMiddleware(deferring_app(), config=config)
    serve(app, create_environ("/fine"))
    assert config_events == ["/fine"] and CONFIG_EXECUTOR.given == []
    with pytest.raises(LookupError):
        serve(CleanupMiddleware(deferring_app(raising_app), config=config), create_environ("/bad"))
    assert config_events == ["/fine"]
    CONFIG_EXECUTOR.run_all()
    assert config_events == ["/fine", "/bad"]

    assert main(["check", str(config)]) == 0
    out = capsys.readouterr().out
    assert "call on success  " in out and "deferred call on failure  " in out
    assert "Hooks on success or on failure run after every other hook" in out

    ran: list[object] = []
    serve(CleanupMiddleware(deferring_app(), hooks=[Hook(call=ran.append, when="failure")]))
    assert ran == []


ALLOWED = 'must be "always", "success" or "failure"'


@pytest.mark.parametrize(
    ("hook", "text", "problem"),
    [
        ({"call": "os:fspath", "when": "sometimes"}, 'when = "sometimes"', ALLOWED),
        ({"call": "os:fspath", "when": True}, "when = true", ALLOWED),
        (
            {"context": "contextlib:nullcontext", "when": "success"},
            'when = "success"',
            "applies to call hooks",
        ),
    ],
)
def test_config_when_mistakes(
    tmp_path: Path, hook: dict[str, Any], text: str, problem: str
) -> None:
    config = tmp_path / "cleanup.toml"
    [(kind, target)] = [(k, v) for k, v in hook.items() if k != "when"]
    config.write_text(f'[[hooks]]\n{kind} = "{target}"\n{text}\n')
    with pytest.raises(ConfigError, match=problem) as caught:
        load_config(config)
    assert caught.value.key == "hooks[0].when"
    with pytest.raises(ConfigError, match=problem) as caught:
        CleanupMiddleware(deferring_app(), hooks=[Hook(**hook)])
    assert caught.value.key == "hooks[0].when"
