"""``response.call_on_close`` in every passthrough mode, with Flask and plain Werkzeug.

In-process, with a server-style loop and gunicorn's own file wrapper class in the environ;
test_servers.py does the same through real servers.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, send_file
from gunicorn.http.wsgi import FileWrapper
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

import cleanup_middleware.flask
from cleanup_middleware import CleanupMiddleware, enter_context
from cleanup_middleware.response import CleanupResponse, CleanupResponseMixin

FRAMEWORKS_DOC = Path(__file__).resolve().parent.parent / "docs" / "frameworks.md"


def environ_for(path: str = "/", method: str = "GET") -> dict[str, Any]:
    environ = EnvironBuilder(path=path, method=method).get_environ()
    environ["wsgi.file_wrapper"] = FileWrapper
    return environ


def serve(app: Any, environ: dict[str, Any]) -> tuple[Any, bytes]:
    """Call the app like gunicorn's sync worker: file wrapper check, iterate, close."""
    body = app(environ, lambda status, headers, exc_info=None: None)
    try:
        if isinstance(body, environ["wsgi.file_wrapper"]):
            data = body.filelike.read()  # where gunicorn would call sendfile()
        else:
            data = b"".join(body)
    finally:
        body.close()
    return body, data


@pytest.fixture
def flask_app(tmp_path: Path) -> tuple[Flask, list[str]]:
    app = Flask(__name__)
    cleanup_middleware.flask.init_app(app)
    closed: list[str] = []

    @app.get("/download")
    def download() -> Response:
        path = tmp_path / "report.txt"
        path.write_bytes(b"report body")
        response = send_file(path)
        response.call_on_close(lambda: closed.append("download"))
        response.call_on_close(path.unlink)
        return response

    @app.get("/buffered")
    def buffered() -> Response:
        response = send_file(tmp_path / "static.txt")
        response.direct_passthrough = False
        response.call_on_close(lambda: closed.append("buffered"))
        return response

    @app.get("/plain")
    def plain() -> Response:
        response = Response("hello")
        response.call_on_close(lambda: closed.append("plain"))
        return response

    (tmp_path / "static.txt").write_bytes(b"static")
    return app, closed


def test_flask_send_file_passthrough_keeps_file_wrapper_and_runs_call_on_close(
    flask_app: tuple[Flask, list[str]], tmp_path: Path
) -> None:
    app, closed = flask_app
    body, data = serve(app, environ_for("/download"))
    assert isinstance(body, FileWrapper), "gunicorn must still see its own file wrapper"
    assert data == b"report body"
    assert closed == ["download"]
    assert not (tmp_path / "report.txt").exists()


@pytest.mark.parametrize(("path", "name"), [("/buffered", "buffered"), ("/plain", "plain")])
def test_flask_call_on_close_without_passthrough_runs_exactly_once(
    flask_app: tuple[Flask, list[str]], path: str, name: str
) -> None:
    app, closed = flask_app
    _, data = serve(app, environ_for(path))
    assert data in (b"static", b"hello")
    assert closed == [name]


def test_flask_head_request_on_send_file_runs_call_on_close_once(
    flask_app: tuple[Flask, list[str]], tmp_path: Path
) -> None:
    app, closed = flask_app
    _, data = serve(app, environ_for("/download", method="HEAD"))
    assert data == b""
    assert closed == ["download"]
    assert not (tmp_path / "report.txt").exists()


def test_init_app_is_idempotent_and_keeps_the_apps_response_class() -> None:
    class MyResponse(Flask.response_class):
        default_mimetype = "text/csv"

    app = Flask(__name__)
    app.response_class = MyResponse
    cleanup_middleware.flask.init_app(app)
    wsgi_app, response_class = app.wsgi_app, app.response_class
    cleanup_middleware.flask.init_app(app)
    assert app.wsgi_app is wsgi_app and app.response_class is response_class
    assert issubclass(app.response_class, MyResponse)
    assert issubclass(app.response_class, CleanupResponseMixin)
    assert isinstance(app.wsgi_app, CleanupMiddleware)


def test_response_class_set_after_init_app_keeps_call_on_close_and_the_file_wrapper(
    tmp_path: Path,
) -> None:
    class LaterResponse(Flask.response_class):
        default_mimetype = "text/csv"

    app = Flask(__name__)
    cleanup_middleware.flask.init_app(app)
    app.response_class = LaterResponse  # an extension or a factory, after init_app
    closed: list[str] = []
    path = tmp_path / "late.csv"

    @app.get("/late")
    def late() -> Response:
        path.write_bytes(b"a,b")
        response = send_file(path)
        assert isinstance(response, LaterResponse), "the app's own class, the mixin added"
        response.call_on_close(lambda: closed.append("late"))
        response.call_on_close(path.unlink)
        return response

    for _ in range(2):
        body, data = serve(app, environ_for("/late"))
        assert isinstance(body, FileWrapper), "gunicorn must still see its own file wrapper"
        assert data == b"a,b"
    assert closed == ["late", "late"]
    assert not path.exists()


def test_flask_error_page_tells_context_managers_the_request_failed() -> None:
    app = Flask(__name__)
    cleanup_middleware.flask.init_app(app)
    exits: list[Any] = []

    class Transaction:
        def __enter__(self) -> None:
            return None

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
            exits.append(exc_type)

    @app.get("/fails")
    def fails() -> str:
        from flask import request

        enter_context(request.environ, Transaction())
        raise ValueError("view failed")

    @app.get("/works")
    def works() -> str:
        from flask import request

        enter_context(request.environ, Transaction())
        return "ok"

    serve(app, environ_for("/fails"))
    serve(app, environ_for("/works"))
    assert exits == [ValueError, None]


@pytest.mark.parametrize(
    ("response_class", "expected"),
    [
        pytest.param(CleanupResponse, ["closed"], id="CleanupResponse-runs-call_on_close"),
        # The problem this library solves, shown with Werkzeug's own Response class.
        pytest.param(Response, [], id="werkzeug-Response-drops-call_on_close"),
    ],
)
def test_werkzeug_passthrough_response_call_on_close(
    response_class: type[Response], expected: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"werkzeug")
    closed: list[str] = []

    @Request.application  # type: ignore[arg-type]
    def app(request: Request) -> Response:
        response = response_class(
            request.environ["wsgi.file_wrapper"](open(path, "rb")), direct_passthrough=True
        )
        response.call_on_close(lambda: closed.append("closed"))
        return response

    body, data = serve(CleanupMiddleware(app), environ_for())
    assert isinstance(body, FileWrapper) and data == b"werkzeug"
    assert closed == expected


def test_cleanup_response_without_middleware_raises_instead_of_dropping() -> None:
    def generate() -> Iterator[bytes]:
        yield b"x"

    response = CleanupResponse(generate(), direct_passthrough=True)
    with pytest.raises(RuntimeError, match="CleanupMiddleware"):
        response(environ_for(), lambda status, headers, exc_info=None: None)


def test_the_documented_way_to_test_a_flask_app_closes_the_response(tmp_path: Path) -> None:
    """The example of docs/frameworks.md, "Testing code that uses it", run as written there."""
    section = FRAMEWORKS_DOC.read_text(encoding="utf-8").split("### Testing code that uses it")[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no python block in the testing section of docs/frameworks.md"
    namespace: dict[str, Any] = {"__name__": "frameworks_doc_example"}
    exec(compile(match.group(1), str(FRAMEWORKS_DOC), "exec"), namespace)
    namespace["test_the_report_is_deleted_once_sent"](tmp_path)


def test_flask_body_chunks_pass_through_no_werkzeug_or_middleware_code() -> None:
    app = Flask(__name__)
    cleanup_middleware.flask.init_app(app)
    closed: list[str] = []

    @app.get("/chunks")
    def chunks() -> Response:
        response = Response([b"chunk"] * 100)
        response.call_on_close(lambda: closed.append("chunks"))
        return response

    body = app(environ_for("/chunks"), lambda status, headers, exc_info=None: None)
    called: list[str] = []

    def record(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            called.append(f"{frame.f_globals.get('__name__')}.{frame.f_code.co_name}")

    sys.setprofile(record)
    try:
        data = b"".join(body)
    finally:
        sys.setprofile(None)
    body.close()  # type: ignore[attr-defined]
    assert data == b"chunk" * 100
    # Werkzeug's encoding generator, resumed once per chunk; no ClosingIterator.__next__.
    assert set(called) <= {"werkzeug.wrappers.response._iter_encoded"}
    assert closed == ["chunks"]


def test_a_failing_call_on_close_callback_is_logged_and_the_hooks_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Flask(__name__)
    cleanup_middleware.flask.init_app(app)
    closed: list[str] = []

    def fails() -> None:
        raise OSError("callback failed")

    @app.get("/plain")
    def plain() -> Response:
        from flask import request

        cleanup_middleware.add_cleanup(request.environ, closed.append, "hook")
        response = Response("hello")
        response.call_on_close(fails)
        return response

    with caplog.at_level(logging.ERROR, logger="cleanup_middleware"):
        _, data = serve(app, environ_for("/plain"))
    assert data == b"hello"
    assert closed == ["hook"]
    [record] = caplog.records
    assert record.getMessage() == (
        "cleanup hook werkzeug.wrappers.response.Response.close failed for GET /plain"
    )


def test_a_middleware_set_before_init_app_still_runs(tmp_path: Path) -> None:
    app = Flask(__name__)
    seen: list[str] = []

    def outer(wsgi_app: Any) -> Any:
        def middleware(environ: dict[str, Any], start_response: Any) -> Any:
            seen.append(environ["PATH_INFO"])
            return wsgi_app(environ, start_response)

        return middleware

    app.wsgi_app = outer(app.wsgi_app)  # type: ignore[method-assign]
    cleanup_middleware.flask.init_app(app)
    app.get("/")(lambda: "ok")
    _, data = serve(app, environ_for("/"))
    assert data == b"ok" and seen == ["/"]


def test_wsgi_app_kept_after_its_app_was_freed_says_so() -> None:
    app = Flask(__name__)
    cleanup_middleware.flask.init_app(app)
    wsgi_app = app.wsgi_app
    del app
    with pytest.raises(RuntimeError, match=r"app\.wsgi_app was called after its Flask app was"):
        wsgi_app(environ_for("/"), lambda status, headers, exc_info=None: None)
