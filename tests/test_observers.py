"""What observers of cleanup are told (``cleanup._Observer``), and the slow-hook WARNING.

The seam is internal: OpenTelemetry (``tests/test_otel.py``), the slow-hook log of
``CleanupMiddleware(slow_hook_seconds=...)`` and test fixtures use it. Durations come from a fake
clock that the hooks themselves advance, so no test depends on how fast this machine is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock
from test_semantics import make_environ, serve, start_response

from cleanup_middleware import CleanupMiddleware, ConfigError, add_cleanup, cleanup, defer
from cleanup_middleware.reporting import hook_name


class Recorder(cleanup._Observer):
    """Everything it is told, as tuples."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def request(self, environ: dict[str, Any]) -> None:
        self.events.append(("request", environ["PATH_INFO"]))

    def watch(self, environ: dict[str, Any]) -> cleanup._Watcher:
        return Watching(self.events)

    def deferred(
        self, work: object, request: str, waited: float, seconds: float, error: Any
    ) -> None:
        self.events.append(("deferred", hook_name(work), request, waited, seconds, error))

    def abandoned(self, environ: dict[str, Any]) -> None:
        self.events.append(("abandoned", environ["PATH_INFO"]))


class Watching(cleanup._Watcher):
    def __init__(self, events: list[tuple[Any, ...]]) -> None:
        self.events = events

    def hook(self, environ: dict[str, Any], hook: object, seconds: float, error: Any) -> None:
        self.events.append(("hook", hook_name(hook), seconds, type(error).__name__))

    def end(self) -> None:
        self.events.append(("end",))


@pytest.fixture
def observer() -> Iterator[Recorder]:
    recorder = Recorder()
    cleanup._add_observer(recorder)
    try:
        yield recorder
    finally:
        cleanup._remove_observer(recorder)
    assert cleanup.ResponseCleanup._observers == ()


class Inline(Executor):
    """Runs what it is given at once: deferred work, deterministically."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def failing() -> None:
    raise ValueError("no")


def test_an_observer_sees_each_hook_in_order_with_its_time_and_error(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        add_cleanup(environ, clock.takes(0.25))
        add_cleanup(environ, failing)
        defer(environ, clock.takes(3))  # its hand-off is no hook; its run is told apart
        add_cleanup(environ, clock.takes(2))
        start_response("200 OK", [])
        return [b"x"]

    middleware = CleanupMiddleware(app, executor=Inline())  # made before the observer came
    recorder = Recorder()
    cleanup._add_observer(recorder)
    try:
        serve(middleware)
        serve(CleanupMiddleware(lambda environ, start_response: [b""]))  # no hooks: no watch
    finally:
        cleanup._remove_observer(recorder)
    serve(middleware)  # removed: told nothing more

    module = __name__
    assert recorder.events == [
        ("request", "/thing"),
        ("hook", "conftest.takes_2s", 2.0, "NoneType"),
        ("hook", f"{module}.failing", 0.0, "ValueError"),
        ("hook", "conftest.takes_0.25s", 0.25, "NoneType"),
        ("deferred", "conftest.takes_3s", "GET /thing", 0.0, 3.0, None),
        ("end",),
        ("request", "/thing"),
    ]
    assert cleanup.ResponseCleanup._observers == ()
    assert "cleanup hook test_observers.failing failed for GET /thing" in caplog.text


def test_an_observer_that_raises_is_logged_and_the_hooks_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(cleanup._Observer, cleanup._Watcher):
        def watch(self, environ: dict[str, Any]) -> cleanup._Watcher:
            return self

        def hook(self, environ: dict[str, Any], hook: object, seconds: float, error: Any) -> None:
            raise RuntimeError("observer bug")

    ran: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        add_cleanup(environ, ran.append, "first")
        add_cleanup(environ, ran.append, "second")
        start_response("200 OK", [])
        return [b"x"]

    broken = Broken()
    cleanup._add_observer(broken)
    try:
        serve(CleanupMiddleware(app, on_hook_error="raise"))
    finally:
        cleanup._remove_observer(broken)
    assert ran == ["second", "first"]
    assert caplog.text.count("<locals>.Broken failed in hook()") == 2


def test_the_garbage_collection_net_tells_observers(observer: Recorder) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        add_cleanup(environ, lambda: None)
        start_response("200 OK", [])
        return [b"x"]

    environ = make_environ(PATH_INFO="/left")
    body = CleanupMiddleware(app)(environ, start_response)
    del environ[cleanup.ENVIRON_KEY]  # no cycle: the body goes when its last reference does
    with pytest.warns(ResourceWarning):
        del body
    assert observer.events[-1] == ("abandoned", "/left")


def slow_app(clock: Clock, seconds: float) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        add_cleanup(environ, clock.takes(seconds))
        defer(environ, clock.takes(seconds))
        start_response("200 OK", [])
        return [b"x"]

    return app


def slow_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "slow_hook_seconds" in r.getMessage()]


def test_a_hook_or_deferred_function_slower_than_slow_hook_seconds_logs_one_warning(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    app = CleanupMiddleware(slow_app(clock, 0.75), slow_hook_seconds=0.5, executor=Inline())
    # The path is the client's: escaped and bounded as in every line of the library.
    serve(app, make_environ(PATH_INFO="/report\n\x1b[31mforged", REQUEST_METHOD="GET"))

    assert slow_lines(caplog) == [
        "cleanup hook conftest.takes_0.75s took 0.750 s for GET /report\\x0a\\x1b[31mforged, "
        "over slow_hook_seconds=0.5",
        "deferred function conftest.takes_0.75s took 0.750 s for GET "
        "/report\\x0a\\x1b[31mforged, over slow_hook_seconds=0.5",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records if "slow_hook" in r.msg)


def test_a_hook_within_slow_hook_seconds_or_without_it_logs_nothing(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    serve(CleanupMiddleware(slow_app(clock, 0.5), slow_hook_seconds=0.5, executor=Inline()))
    serve(CleanupMiddleware(slow_app(clock, 60), executor=Inline()))  # off by default
    assert slow_lines(caplog) == []


@pytest.mark.parametrize("value", [0, -1, True, "0.5", float("nan"), float("inf")])
def test_slow_hook_seconds_must_be_a_number_of_seconds(value: object) -> None:
    with pytest.raises(ValueError, match=r"CleanupMiddleware\(slow_hook_seconds=.*such as 0.5"):
        CleanupMiddleware(lambda e, s: [], slow_hook_seconds=value)  # type: ignore[arg-type]


def test_the_config_key_sets_it_and_the_argument_wins(
    clock: Clock, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    config = tmp_path / "cleanup.toml"
    config.write_text("slow-hook-seconds = 1\n")
    serve(CleanupMiddleware(slow_app(clock, 1.5), config=config, executor=Inline()))
    assert len(slow_lines(caplog)) == 2
    caplog.clear()
    middleware = CleanupMiddleware(slow_app(clock, 1.5), config=config, slow_hook_seconds=2)
    assert middleware.slow_hook_seconds == 2
    assert CleanupMiddleware(lambda e, s: [], config=config).slow_hook_seconds == 1


@pytest.mark.parametrize("value", ["0", "-0.5", '"fast"', "true", "inf"])
def test_the_config_key_must_be_a_number_of_seconds(tmp_path: Path, value: str) -> None:
    config = tmp_path / "cleanup.toml"
    config.write_text(f"slow-hook-seconds = {value}\n")
    with pytest.raises(ConfigError, match=r"slow-hook-seconds: must be a number of seconds"):
        CleanupMiddleware(lambda e, s: [], config=config)
