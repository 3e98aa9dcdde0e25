"""The pytest plugin: adopting the library keeps a project's tests green, and tests see cleanup.

A server closes every response; test clients do not. Werkzeug's (and so Flask's) test
``Client`` closes a response only when the test does (``with client.get(...)``), and Django's
closes a streaming response only once the test has read all of it. Each response left open then
reaches the garbage-collection net of :class:`~cleanup_middleware.cleanup.ResponseCleanup`,
which warns, and a suite run with ``filterwarnings = ["error"]`` turns that into a test error.
So, registered through the ``pytest11`` entry point and active once the package is installed:

* every response that werkzeug's test ``Client`` or Django's test ``Client`` returned during a
  test and that the test did not close is closed when the test function returns (then at the
  test's teardown, for those that fixtures made meanwhile): hooks run at a known point;
* the ``cleanup_hooks`` fixture records the hooks run for each response, by name;
* strict mode (the ini option ``cleanup_strict = true`` or the marker ``cleanup_strict``) fails
  a test whose response reached the garbage-collection net, which is a bug in production;
* the marker ``cleanup_gc_net`` is for a test of that net: its test clients' responses are
  left alone, and strict mode does not apply to it.

A project that imports neither Werkzeug nor Django and uses neither the fixture nor strict mode
gets nothing but a check of ``sys.modules`` per test; the module imports neither framework.
"""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from functools import partial, wraps
from typing import TYPE_CHECKING, Any

import pytest

from .cleanup import _add_observer, _Observer, _remove_observer, _Watcher
from .reporting import describe_request, hook_name

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment
    from pluggy import Result

__all__ = ["CleanupRecorder", "ClosedResponse"]

STRICT_INI = "cleanup_strict"
STRICT_MARKER = "cleanup_strict"
GC_NET_MARKER = "cleanup_gc_net"

# Where a response's record is kept while its hooks run: one record per response even when
# hooks of several responses run at once, in several threads.
_RECORD_KEY = "cleanup_middleware.pytest_record"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        STRICT_INI,
        type="bool",
        default=False,
        help="cleanup-middleware: fail a test whose response reached the garbage-collection "
        "net (was never closed)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{STRICT_MARKER}: cleanup-middleware fails the test if a response of it was never "
        "closed (as the ini option cleanup_strict does for every test)",
    )
    config.addinivalue_line(
        "markers",
        f"{GC_NET_MARKER}: the test leaves responses to cleanup-middleware's garbage-collection "
        "net on purpose: test clients' responses stay open and strict mode does not apply",
    )


@dataclass
class ClosedResponse:
    """What ran when one response closed: its request and its hooks, in the order they ran.

    :param request: the request's method and path, as the log gives them (``"GET /report"``).
    :param hooks: the name of each hook that ran (``module.qualname``, as the log names it).
    :param failed: the names of those that raised.
    :param abandoned: whether the response reached the garbage-collection net instead of being
        closed.

    Example::

        assert cleanup_hooks.responses == [ClosedResponse("GET /report", ["os.unlink"])]
    """

    request: str
    hooks: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    abandoned: bool = False


class CleanupRecorder:
    """The ``cleanup_hooks`` fixture: each response whose hooks ran during the test, in order.

    A response is listed once its first hook ran, or once it reached the garbage-collection net.

    Example::

        def test_the_report_is_deleted(client, cleanup_hooks):
            client.get("/report")
            cleanup_hooks.close_responses()
            assert cleanup_hooks.hooks == ["myapp.reports.delete_report"]
    """

    def __init__(self, run: _TestRun) -> None:
        self.responses: list[ClosedResponse] = []
        self._run = run

    @property
    def hooks(self) -> list[str]:
        """The names of every hook that ran, in order, across the responses."""
        return [name for response in self.responses for name in response.hooks]

    @property
    def abandoned(self) -> list[ClosedResponse]:
        """The responses that reached the garbage-collection net."""
        return [response for response in self.responses if response.abandoned]

    def close_responses(self) -> None:
        """Close now every test client response that the test has not closed, as a server would
        have: their hooks run now (the plugin does it anyway when the test function returns)."""
        self._run.close_responses()


class _Recording(_Observer):
    """Feeds a :class:`CleanupRecorder`: installed for one test only."""

    __slots__ = ("recorder",)

    def __init__(self, recorder: CleanupRecorder) -> None:
        self.recorder = recorder

    def _record(self, environ: WSGIEnvironment) -> ClosedResponse:
        record: ClosedResponse | None = environ.get(_RECORD_KEY)
        if record is None:
            record = environ[_RECORD_KEY] = ClosedResponse(describe_request(environ))
            self.recorder.responses.append(record)
        return record

    def watch(self, environ: WSGIEnvironment) -> _Watcher:
        return _RecordingHooks(self._record(environ))

    def abandoned(self, environ: WSGIEnvironment) -> None:
        self._record(environ).abandoned = True


class _RecordingHooks(_Watcher):
    """Writes down each hook of one response as it runs."""

    __slots__ = ("record",)

    def __init__(self, record: ClosedResponse) -> None:
        self.record = record

    def hook(
        self, environ: WSGIEnvironment, hook: object, seconds: float, error: BaseException | None
    ) -> None:
        name = hook_name(hook)
        self.record.hooks.append(name)
        if error is not None:
            self.record.failed.append(name)


class _TestRun:
    """One test's test-client responses, patches and recorder."""

    def __init__(self, item: pytest.Item) -> None:
        self.strict = item.get_closest_marker(GC_NET_MARKER) is None and (
            item.get_closest_marker(STRICT_MARKER) is not None
            or bool(item.config.getini(STRICT_INI))
        )
        self.closes_responses = item.get_closest_marker(GC_NET_MARKER) is None
        # Werkzeug responses the test has not closed, by id; each one's close() takes it out.
        self.open_responses: dict[int, Any] = {}
        # Django's streaming responses: closed once read, or at the end.
        self.streaming: list[Any] = []
        self.patched: list[tuple[type, str, Any]] = []
        self.recorder: CleanupRecorder | None = None
        self._recording: _Recording | None = None
        # What closing the responses raised when the test function returned, for its report.
        self.close_error: BaseException | None = None
        if self.strict:
            self.record()

    def record(self) -> CleanupRecorder:
        """The test's recorder, installed on first use."""
        if self.recorder is None:
            self.recorder = CleanupRecorder(self)
            self._recording = _Recording(self.recorder)
            _add_observer(self._recording)
        return self.recorder

    def patch_clients(self) -> None:
        """Track the responses of the test clients imported by now (once each per test)."""
        if not self.closes_responses:
            return
        if "werkzeug" in sys.modules and not self._has_patched("werkzeug.test"):
            from werkzeug.test import Client

            self._patch(Client, "open", _tracking_werkzeug)
        django_client = sys.modules.get("django.test.client")
        if django_client is not None and not self._has_patched("django.test.client"):
            self._patch(django_client.Client, "request", _tracking_django)

    def _has_patched(self, module: str) -> bool:
        return any(cls.__module__ == module for cls, _, _ in self.patched)

    def _patch(self, cls: type, name: str, tracking: Callable[..., Any]) -> None:
        original = cls.__dict__[name]

        @wraps(original)
        def patched(*args: Any, **kwargs: Any) -> Any:
            return tracking(original, *args, **kwargs)

        setattr(cls, name, patched)
        self.patched.append((cls, name, original))

    def close_responses(self) -> None:
        """Close the responses the test left open, the first error raised after all closed."""
        errors = []
        while self.open_responses:
            _, response = self.open_responses.popitem()
            try:
                response.close()
            except BaseException as exc:
                errors.append(exc)
        while self.streaming:
            response = self.streaming.pop()
            if not response.closed:
                try:
                    _close_django(response)
                except BaseException as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]

    def finish_call(self) -> None:
        """When the test function returned: close what it left open; in strict mode, collect."""
        try:
            self.close_responses()
        except BaseException as exc:
            self.close_error = exc
        if self.strict:
            # So that a response abandoned in a reference cycle is found in its own test.
            gc.collect()

    def problems(self) -> list[str]:
        lines = []
        if self.close_error is not None:
            lines.append(
                "closing a test client's response that the test left open raised "
                f"{type(self.close_error).__name__}: {self.close_error}"
            )
        if self.strict and self.recorder is not None:
            lines += [
                f"the response to {response.request} was never closed: its cleanup hooks ran "
                "only when the garbage collector reclaimed it (cleanup-middleware strict mode; "
                f"close it, or mark a test of the garbage-collection net with "
                f"@pytest.mark.{GC_NET_MARKER})"
                for response in self.recorder.abandoned
            ]
        return lines

    def end(self) -> None:
        """At the test's teardown: close what fixtures left open, undo the patches."""
        try:
            self.close_responses()
        finally:
            while self.patched:
                cls, name, original = self.patched.pop()
                setattr(cls, name, original)
            if self._recording is not None:
                _remove_observer(self._recording)


# The test running now, for the patched test clients; None between tests.
_current: _TestRun | None = None


def _tracking_werkzeug(open_: Callable[..., Any], client: Any, *args: Any, **kwargs: Any) -> Any:
    """``werkzeug.test.Client.open``, keeping the response until the test closes it."""
    response = open_(client, *args, **kwargs)
    run = _current
    if run is not None:
        run.open_responses[id(response)] = response
        # An attribute of the response, so that ``with`` and close() by the test go through it;
        # by weak reference, so that the response makes no reference cycle.
        response.close = partial(_close_werkzeug, run.open_responses, weakref.ref(response))
    return response


def _close_werkzeug(open_responses: dict[int, Any], ref: weakref.ref[Any]) -> None:
    response = ref()
    if response is not None:
        open_responses.pop(id(response), None)
        type(response).close(response)


def _tracking_django(request: Callable[..., Any], client: Any, **kwargs: Any) -> Any:
    """``django.test.Client.request``, keeping a streaming response until it is closed."""
    response = request(client, **kwargs)
    run = _current
    if run is not None and getattr(response, "streaming", False) and not response.closed:
        run.streaming.append(response)
    return response


def _close_django(response: Any) -> None:
    # As Django's test client closes a streaming response read to the end: without closing the
    # database connections of a test that runs in a transaction.
    from django.test.client import closing_iterator_wrapper  # type: ignore[import-untyped]

    for _ in closing_iterator_wrapper((), response.close):
        pass


_RUN_KEY = pytest.StashKey[_TestRun]()


@pytest.fixture(autouse=True)
def _cleanup_middleware_test_run(request: pytest.FixtureRequest) -> Iterator[None]:
    global _current
    run = _TestRun(request.node)
    request.node.stash[_RUN_KEY] = run
    previous, _current = _current, run
    run.patch_clients()
    try:
        yield
    finally:
        _current = previous
        run.end()


@pytest.fixture
def cleanup_hooks(request: pytest.FixtureRequest) -> CleanupRecorder:
    """The hooks run for each response during the test: see :class:`CleanupRecorder`."""
    run: _TestRun = request.node.stash[_RUN_KEY]
    return run.record()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    run = item.stash.get(_RUN_KEY, None)
    if run is not None:
        # The test clients that fixtures imported since the test's first fixture was set up.
        run.patch_clients()
    yield
    if run is not None:
        run.finish_call()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Result[pytest.TestReport], None]:
    outcome = yield
    run = item.stash.get(_RUN_KEY, None)
    if call.when != "call" or run is None:
        return
    problems = run.problems()
    if problems:
        report: pytest.TestReport = outcome.get_result()
        text = "\n".join(problems)
        if report.passed:
            report.outcome = "failed"
            report.longrepr = text
        else:
            report.sections.append(("cleanup-middleware", text))
