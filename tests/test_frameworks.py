"""Every framework recipe of ``docs/frameworks.md``, served by gunicorn as a user would serve it.

Each example app under ``examples/`` (Flask, Werkzeug, Django, Pyramid, Falcon, Bottle) answers
``GET /download?size=N`` with a fresh temporary file, sent by the framework's own file response
and deleted by a hook once the server has closed the response. One gunicorn sync worker per
framework serves it from a real subprocess on 127.0.0.1, and every test checks from outside:

* the body, byte for byte (``examples/reports.py`` says what a report holds);
* the hook ran exactly once, while the file still existed, and the file is gone;
* gunicorn sent the file with ``sendfile()`` (its probe, as in ``tests/test_servers.py``);
* a client that resets the connection mid-body, and a ``HEAD`` request, change none of that;
* no file was left open for the garbage collector to close (no ``ResourceWarning``).

The example apps are not changed for the test. What happens to their files is observed with an
audit hook (``sys.addaudithook``) that the gunicorn config installs in the worker: it records
every file created with ``O_CREAT`` and every ``os.remove``/``os.unlink`` of a report in the
worker's temporary directory (``$TMPDIR``), the files the examples make with ``tempfile``.

The sync worker serves one request at a time, close() included, so once a next request has been
answered the previous one is finished: a second run of a hook would be in the records by then.
"""

from __future__ import annotations

import http.client
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from wsgiref.util import FileWrapper, setup_testing_defaults

import pytest
from serverkit import (
    RECORD_DIR_ENV,
    Server,
    disconnect_mid_body,
    http_get,
    read_records,
    run_server,
    wait_for_records,
    write_sendfile_probe_config,
)

from cleanup_middleware import CleanupMiddleware, add_cleanup

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# examples/reports.py: what every report holds.
LINE = b"cleanup-middleware: this file is deleted after the response\n"

#: The WSGI application of each framework's example, as gunicorn names it.
APPS = {
    "flask": "flask_download:app",
    "werkzeug": "werkzeug_download:application",
    "django": "django_download.wsgi:application",
    "pyramid": "pyramid_download:application",
    "falcon": "falcon_download:application",
    "bottle": "bottle_download:application",
}

FULL = 3 * 1024 * 1024 + 17  # bigger than one read, not a round number
# Far more than the loopback socket buffers hold, so the reset reaches the server mid-body.
HUGE = 64 * 1024 * 1024

# Appended to the sendfile probe: the worker records what happens to the examples' reports.
AUDIT_CONFIG = """

_record_sendfile = post_worker_init


def post_worker_init(worker):
    _record_sendfile(worker)
    import os
    import sys

    from serverkit import record

    reports = os.path.join(os.environ["TMPDIR"], "report-")

    def audit(event, args):
        if event == "open" and isinstance(args[0], str) and args[0].startswith(reports):
            if isinstance(args[2], int) and args[2] & os.O_CREAT:
                record("created", path=args[0])
        elif event == "os.remove" and isinstance(args[0], str) and args[0].startswith(reports):
            record("deleted", path=args[0], existed=os.path.exists(args[0]))

    sys.addaudithook(audit)
"""


class Site:
    """A framework's example under gunicorn, with the records of its worker."""

    def __init__(self, framework: str, server: Server, records: Path) -> None:
        self.framework = framework
        self.server = server
        self.records = records

    def url(self, path: str) -> str:
        return self.server.url + path

    def created(self) -> list[str]:
        return [r["path"] for r in read_records(self.records) if r["event"] == "created"]

    def deletions(self, path: str) -> list[dict[str, Any]]:
        return [
            r for r in read_records(self.records) if r["event"] == "deleted" and r["path"] == path
        ]

    def sendfile_results(self, token: str) -> list[Any]:
        return [
            r["result"]
            for r in read_records(self.records)
            if r["event"] == "sendfile" and r["token"] == token
        ]

    def new_report(self, before: list[str]) -> str:
        """The one report the last request made: created since ``before``."""
        made = [path for path in self.created() if path not in before]
        assert len(made) == 1, f"expected one new report, found {made}\n{self.server.describe()}"
        return made[0]

    def finish(self, path: str) -> dict[str, Any]:
        """Wait for ``path`` to be deleted, then serve one more download; return the deletion.

        Asserts that the hook ran exactly once, on a file that was still there, that the file
        is gone, and that no file was left open for the garbage collector to close.
        """
        wait_for_records(self.records, lambda _: bool(self.deletions(path)))
        before = self.created()
        barrier = http_get(self.url(f"/download?size=1&token={new_token()}"))
        assert barrier.status == 200, self.server.describe()
        wait_for_records(self.records, lambda _: bool(self.deletions(self.new_report(before))))
        [deletion] = self.deletions(path)
        assert deletion["existed"] is True
        assert not os.path.exists(path)
        unclosed = [line for line in self.server.log().splitlines() if "unclosed file" in line]
        assert not unclosed, f"a file was left for the garbage collector:\n{self.server.log()}"
        assert "Traceback" not in self.server.log(), self.server.describe()
        return deletion


def new_token() -> str:
    return uuid.uuid4().hex[:16]


def report_bytes(size: int) -> bytes:
    return (LINE * (size // len(LINE) + 1))[:size]


@pytest.fixture(scope="module", params=sorted(APPS))
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    framework: str = request.param
    pytest.importorskip(
        framework, reason=f"{framework} is in the test extra: pip install -e '.[test]'"
    )
    base = tmp_path_factory.mktemp(framework)
    records, files = base / "records", base / "files"
    records.mkdir()
    files.mkdir()
    config = write_sendfile_probe_config(base)
    config.write_text(config.read_text() + AUDIT_CONFIG)
    env = {
        RECORD_DIR_ENV: str(records),
        "TMPDIR": str(files),
        # A file left for the garbage collector to close shows up in the server log, as an
        # "unclosed file" ResourceWarning.
        "PYTHONWARNINGS": "always::ResourceWarning",
    }
    with run_server(
        "gunicorn-sync",
        APPS[framework],
        env=env,
        pythonpath=[EXAMPLES],
        gunicorn_config=config,
        log_dir=base,
    ) as server:
        yield Site(framework, server, records)
    assert not list(files.glob("report-*")), "a report was left behind"


def test_download(site: Site) -> None:
    token = new_token()
    before = site.created()
    response = http_get(site.url(f"/download?size={FULL}&token={token}"))

    assert response.status == 200, site.server.describe()
    assert response.body == report_bytes(FULL)
    assert "report.txt" in response.headers.get("content-disposition", "")
    site.finish(site.new_report(before))
    assert site.sendfile_results(token) == [True]


def test_client_resets_mid_body(site: Site) -> None:
    token = new_token()
    before = site.created()
    seen = disconnect_mid_body(
        site.server.host, site.server.port, f"/download?size={HUGE}&token={token}", 256 * 1024
    )

    assert seen.status == 200 and not seen.eof
    site.finish(site.new_report(before))
    # The file was going out by sendfile() when the client left: the probe saw the call, which
    # raised or returned, depending on where the reset met it.
    assert len(site.sendfile_results(token)) == 1
    assert site.server.alive(), site.server.describe()


def test_head(site: Site) -> None:
    before = site.created()
    status = http_head(site.url(f"/download?size={FULL}&token={new_token()}"))

    assert status == 200
    site.finish(site.new_report(before))


def http_head(url: str) -> int:
    """HEAD ``url`` (on 127.0.0.1); the status."""
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1" and parts.port is not None, url
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("HEAD", f"{parts.path}?{parts.query}")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_import_loads_no_framework() -> None:
    # The integrations import their framework only when they are imported themselves.
    code = (
        "import sys, cleanup_middleware, cleanup_middleware.response;"
        "print(sorted({'flask', 'django', 'pyramid', 'falcon', 'bottle'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# How our hooks relate to each framework's own, as docs/frameworks.md says: in-process, with
# wsgiref's file wrapper standing in for the server's, and a list of what happened in order.


def serve(app: Any, path: str, events: list[str], method: str = "GET", read: bool = True) -> Any:
    """Call ``app`` as a server would: take the body, send it (unless not ``read``), close it."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "wsgi.file_wrapper": FileWrapper,
    }
    setup_testing_defaults(environ)
    body = app(environ, lambda status, headers, exc_info=None: None)
    events.append(f"server has the body ({type(body).__name__})")
    if read:
        for _ in body:
            pass
        events.append("server sent the body")
    if hasattr(body, "close"):  # as PEP 3333 asks of a server
        body.close()
    events.append("server closed the body")
    return body


@pytest.fixture
def report(tmp_path: Path) -> str:
    path = tmp_path / "report.txt"
    path.write_bytes(report_bytes(1000))
    return str(path)


def test_flask_teardown_runs_before_the_body_is_sent(report: str) -> None:
    flask = pytest.importorskip("flask")
    import cleanup_middleware.flask

    events: list[str] = []
    app = flask.Flask(__name__)
    cleanup_middleware.flask.init_app(app)
    app.teardown_request(lambda exc: events.append("teardown_request"))

    @app.get("/file")
    def file() -> Any:
        add_cleanup(flask.request.environ, events.append, "our hook")
        return flask.send_file(report)

    @app.get("/stream")
    def stream() -> Any:
        add_cleanup(flask.request.environ, events.append, "our hook")
        return flask.Response(flask.stream_with_context(iter([b"a", b"b"])))

    serve(app, "/file", events)
    assert events == [
        "teardown_request",
        "server has the body (FileWrapper)",
        "server sent the body",
        "our hook",
        "server closed the body",
    ]
    # With stream_with_context, when teardown_request runs depends on the Flask version: 3.1
    # runs it at the view's return and again when the generator is exhausted (not when the body
    # is closed before its first chunk), 2.3 only when the generator ends. Our hook runs once,
    # after the body, either way.
    has, sent, hook, closed = (
        "server has the body (ResponseCleanup)",
        "server sent the body",
        "our hook",
        "server closed the body",
    )
    for read, flask_3_1, flask_2_3 in [
        (
            True,
            ["teardown_request", has, "teardown_request", sent, hook, closed],
            [has, "teardown_request", sent, hook, closed],
        ),
        (
            False,
            ["teardown_request", has, hook, closed],
            [has, "teardown_request", hook, closed],
        ),
    ]:
        events.clear()
        serve(app, "/stream", events, read=read)
        assert events in (flask_3_1, flask_2_3), (
            f"Flask {importlib.metadata.version('flask')}: update docs/frameworks.md"
        )


def test_django_request_finished_runs_before_our_hooks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("django")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "django_download.settings")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the example's report goes
    from django.core.signals import request_finished
    from django_download.wsgi import application  # the example, unchanged

    events: list[str] = []

    def finished(**kwargs: Any) -> None:
        [path] = tmp_path.glob("report-*")
        events.append(f"request_finished (the file is {'there' if path.exists() else 'gone'})")

    request_finished.connect(finished)
    try:
        serve(application, "/download", events)
    finally:
        request_finished.disconnect(finished)
    assert events == [
        "server has the body (FileWrapper)",
        "server sent the body",
        "request_finished (the file is there)",
        "server closed the body",
    ]
    assert list(tmp_path.glob("report-*")) == []


def test_pyramid_finished_callbacks_run_before_the_body_is_sent(report: str) -> None:
    pytest.importorskip("pyramid")
    from pyramid.config import Configurator
    from pyramid.response import FileResponse

    events: list[str] = []

    def with_request(request: Any) -> Any:
        request.add_finished_callback(lambda request: events.append("finished callback"))
        request.add_cleanup(events.append, "our hook")
        return FileResponse(report, request=request)

    with Configurator() as config:
        config.include("cleanup_middleware.pyramid")
        config.add_route("with", "/with")
        config.add_view(with_request, route_name="with")
        config.add_route("without", "/without")
        config.add_view(lambda request: FileResponse(report), route_name="without")
        app = CleanupMiddleware(config.make_wsgi_app())

    serve(app, "/with", events)
    assert events == [
        "finished callback",
        "server has the body (FileWrapper)",
        "server sent the body",
        "our hook",
        "server closed the body",
    ]
    events.clear()
    # Without request=, FileResponse iterates the file itself: no file wrapper for the server.
    serve(app, "/without", events)
    assert events[0] == "server has the body (ResponseCleanup)"


def test_pyramid_request_methods() -> None:
    pytest.importorskip("pyramid")
    from pyramid.config import Configurator
    from pyramid.response import Response

    events: list[str] = []

    @contextmanager
    def held() -> Iterator[str]:
        events.append("entered")
        try:
            yield "resource"
        except BaseException as exc:
            events.append(f"exited with {type(exc).__name__}")
            raise
        events.append("exited")

    def view(request: Any) -> Any:
        request.add_cleanup(events.append, "our hook")
        events.append(f"view got {request.enter_context(held())}")
        if request.path == "/fail":
            raise ValueError("the view failed")
        return Response(b"ok")

    with Configurator() as config:
        config.include("cleanup_middleware.pyramid")
        config.add_route("ok", "/ok")
        config.add_route("fail", "/fail")
        config.add_view(view, route_name="ok")
        config.add_view(view, route_name="fail")
        bare = config.make_wsgi_app()

    serve(CleanupMiddleware(bare), "/ok", events)
    assert events[:2] == ["entered", "view got resource"]
    assert events[-3:] == ["exited", "our hook", "server closed the body"]
    events.clear()
    with pytest.raises(ValueError, match="the view failed"):
        serve(CleanupMiddleware(bare), "/fail", events)
    assert events == ["entered", "view got resource", "exited with ValueError", "our hook"]
    # Not wrapped: the request methods say so rather than drop the hook.
    with pytest.raises(RuntimeError, match=r"wrap the WSGI application"):
        serve(bare, "/ok", events)


def test_pyramid_subrequest_hooks_belong_to_the_top_level_response() -> None:
    pytest.importorskip("pyramid")
    from pyramid.config import Configurator
    from pyramid.request import Request
    from pyramid.response import Response

    events: list[str] = []

    @contextmanager
    def held(label: str) -> Iterator[None]:
        yield
        events.append(f"{label} exited")

    def top(request: Any) -> Any:
        request.add_cleanup(events.append, "top hook")
        sub = request.invoke_subrequest(Request.blank("/sub"))
        events.append(f"top got {sub.text}")
        return Response(b"top")

    def sub(request: Any) -> Any:
        request.add_cleanup(events.append, "sub hook")
        request.enter_context(held("sub context"))
        # A subrequest of a subrequest, through the tweens this time.
        nested = request.invoke_subrequest(Request.blank("/nested"), use_tweens=True)
        return Response(f"sub, {nested.text}")

    def nested(request: Any) -> Any:
        request.add_cleanup(events.append, "nested hook")
        return Response("nested")

    with Configurator() as config:
        config.include("cleanup_middleware.pyramid")
        for name, view in (("top", top), ("sub", sub), ("nested", nested)):
            config.add_route(name, f"/{name}")
            config.add_view(view, route_name=name)
        bare = config.make_wsgi_app()

    serve(CleanupMiddleware(bare), "/top", events)
    # Every hook waits for the top-level response, and runs last-registered-first.
    assert events == [
        "top got sub, nested",
        "server has the body (ResponseCleanup)",
        "server sent the body",
        "nested hook",
        "sub context exited",
        "sub hook",
        "top hook",
        "server closed the body",
    ]
    # Not wrapped: the subrequest's hook is refused, as the top-level request's is.
    with pytest.raises(RuntimeError, match=r"wrap the WSGI application"):
        serve(bare, "/sub", events)


def test_falcon_drops_an_unclosed_stream_on_head(report: str) -> None:
    falcon = pytest.importorskip("falcon")
    opened = []

    class Download:
        def on_get(self, req: Any, resp: Any) -> None:
            resp.stream = open(report, "rb")
            opened.append(resp.stream)

        on_head = on_get

    app = falcon.App()
    app.add_route("/", Download())
    events: list[str] = []
    try:
        serve(app, "/", events, method="HEAD")
        assert events[0] == "server has the body (list)"
        assert not opened[0].closed, "Falcon now closes resp.stream on HEAD: update the docs"
        serve(app, "/", events, method="GET")
        assert opened[1].closed
    finally:
        for f in opened:
            f.close()


def test_bottle_after_request_runs_before_the_body_is_sent(report: str) -> None:
    bottle = pytest.importorskip("bottle")
    events: list[str] = []
    app = bottle.Bottle()
    app.add_hook("after_request", lambda: events.append("after_request"))

    @app.get("/")
    def download() -> Any:
        add_cleanup(bottle.request.environ, events.append, "our hook")
        directory, name = os.path.split(report)
        return bottle.static_file(name, root=directory)

    serve(CleanupMiddleware(app), "/", events)
    assert events == [
        "after_request",
        "server has the body (FileWrapper)",
        "server sent the body",
        "our hook",
        "server closed the body",
    ]
