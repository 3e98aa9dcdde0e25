"""Shared pytest configuration: options and the report header, for every test module."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cleanup_middleware import cleanup

# Other projects' tests and settings (a Django project's conftest.py sets Django up): run by
# tests/test_django.py and tests/adoption/suite.py in pytest runs of their own, never here.
collect_ignore = ["adoption"]


def pytest_report_header() -> str:
    # Which ResponseCleanup base the run tests (make test runs the core tests on both).
    if cleanup.SPEEDUPS:
        return "cleanup_middleware: the C base of cleanup_middleware._speedups"
    return f"cleanup_middleware: the pure-Python base ({cleanup.PURE_PYTHON_ENV_VAR} or no build)"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the long load test (5,000 requests against gunicorn gthread); see `make soak`",
    )


class Clock:
    """A fake ``perf_counter``: hooks advance it to take as long as a test needs."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def takes(self, seconds: float) -> Callable[[], None]:
        def hook() -> None:
            self.now += seconds

        hook.__qualname__ = f"takes_{seconds:g}s"
        return hook


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(cleanup, "perf_counter", fake)
    return fake
