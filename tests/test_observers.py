"""The observer seam of ``cleanup_middleware.cleanup``: what tests and telemetry see of cleanup.

An :class:`~cleanup_middleware.cleanup.Observer` runs each hook (to time it, or to record it)
and is told of each response that reached the garbage-collection net. Run in-process, on the C
and the pure-Python base (``make test`` reruns this file on the latter).
"""

from __future__ import annotations

import gc
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cleanup_middleware import CleanupMiddleware, add_cleanup, enter_context
from cleanup_middleware.cleanup import Observer, add_observer, remove_observer


def make_environ(path: str = "/thing") -> dict[str, Any]:
    return {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path}


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return lambda data: None


def first(events: list[str]) -> None:
    events.append("first ran")


def second(events: list[str]) -> None:
    events.append("second ran")


def failing(events: list[str]) -> None:
    raise LookupError("the hook failed")


class Recording(Observer):
    """Notes each hook it runs, by name, around the hook's own events."""

    def __init__(self, label: str, events: list[str]) -> None:
        self.label = label
        self.events = events

    def run_hook(
        self, hook: Callable[[], object], environ: dict[str, Any], run: Callable[[], object]
    ) -> None:
        self.events.append(f"{self.label} > {self.name(hook)} for {self.describe(environ)}")
        try:
            run()
        except LookupError:
            self.events.append(f"{self.label} saw it fail")
            raise
        self.events.append(f"{self.label} <")

    def abandoned(self, environ: dict[str, Any]) -> None:
        self.events.append(f"{self.label} abandoned {self.describe(environ)}")


@pytest.fixture
def observe() -> Iterator[Callable[[Observer], None]]:
    installed: list[Observer] = []

    def install(observer: Observer) -> None:
        add_observer(observer)
        installed.append(observer)

    yield install
    for observer in installed:
        remove_observer(observer)


def app_with(*hooks: Callable[[list[str]], None], events: list[str]) -> CleanupMiddleware:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        for hook in hooks:
            add_cleanup(environ, hook, events)
        start_response("200 OK", [])
        return [b"body"]

    return CleanupMiddleware(app)


def test_an_observer_runs_each_hook_in_order_and_knows_its_name(
    observe: Callable[[Observer], None],
) -> None:
    events: list[str] = []
    observe(Recording("watch", events))
    body = app_with(first, second, events=events)(make_environ("/report"), start_response)
    assert events == []
    body.close()
    name = f"{__name__}.{{}}"
    assert events == [
        f"watch > {name.format('second')} for GET /report",
        "second ran",
        "watch <",
        f"watch > {name.format('first')} for GET /report",
        "first ran",
        "watch <",
    ]


def test_observers_nest_the_first_installed_outermost(observe: Callable[[Observer], None]) -> None:
    events: list[str] = []
    observe(Recording("outer", events))
    observe(Recording("inner", events))
    app_with(first, events=events)(make_environ(), start_response).close()
    hook = f"{__name__}.first for GET /thing"
    assert events == [f"outer > {hook}", f"inner > {hook}", "first ran", "inner <", "outer <"]


def test_a_failing_hook_fails_through_the_observer_and_is_logged_as_without_one(
    observe: Callable[[Observer], None], caplog: pytest.LogCaptureFixture
) -> None:
    events: list[str] = []
    observe(Recording("watch", events))
    with caplog.at_level(logging.ERROR, logger="cleanup_middleware"):
        app_with(first, failing, events=events)(make_environ(), start_response).close()
    assert events == [
        f"watch > {__name__}.failing for GET /thing",
        "watch saw it fail",
        f"watch > {__name__}.first for GET /thing",
        "first ran",
        "watch <",
    ]
    [record] = caplog.records
    assert record.getMessage() == f"cleanup hook {__name__}.failing failed for GET /thing"


def test_context_managers_and_hooks_registered_by_hooks_are_observed_too(
    observe: Callable[[Observer], None],
) -> None:
    events: list[str] = []
    observe(Recording("watch", events))

    class Transaction:
        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc_info: object) -> None:
            events.append("exited")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        enter_context(environ, Transaction())
        add_cleanup(environ, lambda: add_cleanup(environ, second, events))
        start_response("200 OK", [])
        return []

    CleanupMiddleware(app)(make_environ(), start_response).close()
    here = f"{__name__}.test_context_managers_and_hooks_registered_by_hooks_are_observed_too"
    assert [e for e in events if not e.endswith("<")] == [
        f"watch > {here}.<locals>.app.<locals>.<lambda> for GET /thing",
        f"watch > {__name__}.second for GET /thing",
        "second ran",
        f"watch > {here}.<locals>.Transaction for GET /thing",
        "exited",
    ]


def test_an_abandoned_response_is_told_after_its_hooks_ran(
    observe: Callable[[Observer], None],
) -> None:
    events: list[str] = []
    observe(Recording("watch", events))
    body = app_with(first, events=events)(make_environ("/forgotten"), start_response)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del body
        gc.collect()
    assert events[1:] == ["first ran", "watch <", "watch abandoned GET /forgotten"]
    assert [w.category for w in caught] == [ResourceWarning]


def test_a_removed_observer_sees_nothing_and_removing_twice_is_harmless() -> None:
    events: list[str] = []
    observer = Recording("watch", events)
    add_observer(observer)
    remove_observer(observer)
    remove_observer(observer)
    app_with(first, events=events)(make_environ(), start_response).close()
    assert events == ["first ran"]


def test_add_observer_needs_an_observer() -> None:
    with pytest.raises(TypeError, match=r"add_observer\(\) needs a cleanup_middleware"):
        add_observer(print)  # type: ignore[arg-type]
