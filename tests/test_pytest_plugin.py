"""The pytest plugin (``cleanup_middleware.pytest_plugin``), run as a user's suite runs it.

Each test writes a small test suite into a temporary directory and runs pytest on it in a
subprocess, with ``filterwarnings = ["error"]`` as Flask's own suite has it, and the plugin
loaded from the package's ``pytest11`` entry point (as installing the package loads it). The
outcome of each test of that suite is compared with what the plugin promises:

* the responses that werkzeug's test client returned are closed when the test returns, once
  each, and none reaches the garbage-collection net;
* ``cleanup_hooks`` lists the hooks run per response, by name;
* strict mode fails a test whose response was abandoned; ``cleanup_gc_net`` opts a test out;
* a project that uses no test client imports no framework because of it.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from adoption.suite import run_pytest

DOCS_TESTING = Path(__file__).resolve().parent.parent / "docs" / "testing.md"

PYPROJECT = """
[tool.pytest.ini_options]
filterwarnings = ["error"]
"""

FLASK_APP = """
import gc
import warnings

import pytest
from flask import Flask, redirect, request

import cleanup_middleware.flask
from cleanup_middleware import CleanupMiddleware, add_cleanup

events = []


def delete_report(name):
    events.append(name)


def make_app(**options):
    app = Flask(__name__)
    cleanup_middleware.flask.init_app(app, **options)

    @app.get("/")
    def index():
        add_cleanup(request.environ, delete_report, request.args.get("name", "report"))
        return "ok"

    @app.get("/redirect")
    def moved():
        add_cleanup(request.environ, delete_report, "redirect")
        return redirect("/?name=target")

    @app.get("/fails-to-close")
    def fails_to_close():
        response = app.response_class("ok")
        response.call_on_close(lambda: 1 / 0)
        return response

    return app


def plain_app(environ, start_response):
    add_cleanup(environ, delete_report, "plain")
    start_response("200 OK", [])
    return [b"ok"]
"""

LEFT_OPEN = """

def test_a_response_left_open_is_closed_when_the_test_returns():
    events.clear()
    make_app().test_client().get("/")
    assert events == []


def test_that_it_was_closed_once():
    assert events == ["report"]
"""

FLASK_TESTS = (
    FLASK_APP
    + LEFT_OPEN
    + """


def test_a_response_closed_by_the_test_is_closed_once():
    events.clear()
    with make_app().test_client().get("/") as response:
        assert response.text == "ok"
    response.close()  # a second close() by the test itself still reaches the response
    assert events == ["report"]


def test_redirects_are_closed_each_once(cleanup_hooks):
    events.clear()
    response = make_app().test_client().get("/redirect", follow_redirects=True)
    assert response.text == "ok" and events == ["redirect"]
    cleanup_hooks.close_responses()
    assert events == ["redirect", "target"]
    assert [r.request for r in cleanup_hooks.responses] == ["GET /redirect", "GET /"]
    assert cleanup_hooks.hooks == ["test_app.delete_report", "test_app.delete_report"]


def test_the_recorder_lists_each_response_with_its_hooks(cleanup_hooks):
    app = CleanupMiddleware(plain_app)
    body = app({"REQUEST_METHOD": "POST", "PATH_INFO": "/upload"}, lambda *a: None)
    body.close()
    [closed] = cleanup_hooks.responses
    assert (closed.request, closed.hooks, closed.failed, closed.abandoned) == (
        "POST /upload", ["test_app.delete_report"], [], False
    )


def test_an_error_closing_a_response_left_open_fails_the_test():
    # A failing hook is logged; with on_hook_error="raise", close() raises it.
    make_app(on_hook_error="raise").test_client().get("/fails-to-close")


@pytest.mark.cleanup_strict
def test_strict_fails_a_test_that_abandons_a_response():
    body = CleanupMiddleware(plain_app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/lost"}, print)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del body
        gc.collect()


@pytest.mark.cleanup_strict
def test_strict_passes_when_the_plugin_closes_the_client_responses():
    make_app().test_client().get("/")


@pytest.mark.cleanup_strict
@pytest.mark.cleanup_gc_net
def test_a_test_of_the_gc_net_keeps_its_response_open(cleanup_hooks):
    events.clear()
    response = make_app().test_client().get("/")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del response
        gc.collect()
    assert events == ["report"]
    assert [w.category for w in caught] == [ResourceWarning]
    assert [r.request for r in cleanup_hooks.abandoned] == ["GET /"]
"""
)


def run_suite(
    tmp_path: Path, tests: str | dict[str, str], *args: str, pyproject: str = PYPROJECT
) -> tuple[dict[str, str], str]:
    """Run ``tests`` (test_app.py, or modules by name) under pytest in ``tmp_path``.

    Returns each test's outcome, by the test's name in its module, and pytest's output.
    """
    modules = tests if isinstance(tests, dict) else {"test_app.py": tests}
    (tmp_path / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    for name, code in modules.items():
        (tmp_path / name).write_text(textwrap.dedent(code), encoding="utf-8")
    outcomes, output = run_pytest(tmp_path, list(args), [])
    return {name.partition("::")[2]: outcome for name, outcome in outcomes.items()}, output


def test_flask_test_client_responses_fixtures_and_strict_mode(tmp_path: Path) -> None:
    outcomes, output = run_suite(tmp_path, FLASK_TESTS)
    failed = {
        "test_an_error_closing_a_response_left_open_fails_the_test",
        "test_strict_fails_a_test_that_abandons_a_response",
    }
    assert outcomes == {
        name: "failed" if name in failed else "passed"
        for name in outcomes
        if name.startswith("test_")
    }, output
    assert len(outcomes) == 9
    assert "closing a test client's response that the test left open raised Zero" in output
    assert "the response to GET /lost was never closed" in output
    assert "@pytest.mark.cleanup_gc_net" in output


def test_without_the_plugin_a_response_left_open_stays_open(tmp_path: Path) -> None:
    # The control: a response left open is closed only by the garbage-collection net, whenever
    # the collector runs, and its warning then becomes an error in whichever test that is. The
    # collector is off in this suite, so that this happens in no test: where it would depends
    # on how much each test allocates.
    outcomes, output = run_suite(
        tmp_path,
        {"conftest.py": "import gc\n\ngc.disable()\n", "test_app.py": FLASK_APP + LEFT_OPEN},
        "-p",
        "no:cleanup_middleware",
    )
    assert outcomes == {
        "test_a_response_left_open_is_closed_when_the_test_returns": "passed",
        "test_that_it_was_closed_once": "failed",
    }, output


def test_the_strict_ini_option_applies_to_every_test(tmp_path: Path) -> None:
    tests = (
        FLASK_APP
        + """

def test_abandons():
    body = CleanupMiddleware(plain_app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/lost"}, print)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del body
        gc.collect()


def test_closes():
    make_app().test_client().get("/")
"""
    )
    outcomes, output = run_suite(tmp_path, tests, "-o", "cleanup_strict=true")
    assert outcomes == {"test_abandons": "failed", "test_closes": "passed"}, output


def test_a_project_without_a_test_client_imports_no_framework(tmp_path: Path) -> None:
    tests = """
    import sys

    def test_nothing_imported(request):
        assert request.config.pluginmanager.hasplugin("cleanup_middleware")
        frameworks = {"werkzeug", "flask", "django"}
        assert [m for m in sys.modules if m.partition(".")[0] in frameworks] == []
    """
    outcomes, output = run_suite(tmp_path, tests)
    assert outcomes == {"test_nothing_imported": "passed"}, output


def test_the_examples_of_docs_testing_pass(tmp_path: Path) -> None:
    # Every block of docs/testing.md that defines tests, but Django's (its project's settings
    # are tests/adoption/django_project's, whose hook_tests.py runs the same cases).
    page = DOCS_TESTING.read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", page, re.DOTALL) if "def test_" in b]
    modules = {f"test_doc{i}.py": b for i, b in enumerate(blocks) if "django" not in b}
    assert len(modules) == 3
    # WebOb imports cgi, deprecated before Python 3.13.
    pyproject = PYPROJECT.replace(
        '["error"]', '["error", "ignore:.cgi. is deprecated:DeprecationWarning"]'
    )
    outcomes, output = run_suite(tmp_path, modules, pyproject=pyproject)
    assert len(outcomes) == 4 and set(outcomes.values()) == {"passed"}, output
