"""``cleanup_middleware.otel`` under gunicorn, behind OpenTelemetry's own WSGI middleware.

One gunicorn sync worker serves ``tests/apps/otel_app.py`` with the real SDK: a file download
through ``OpenTelemetryMiddleware`` outside ours, and the same through ours alone. The worker
writes each span as a record; its ``sendfile()`` probe (as in ``tests/test_frameworks.py``)
records whether gunicorn sent the file with ``sendfile()``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.instrumentation.wsgi", reason="the test extra")

from serverkit import (
    RECORD_DIR_ENV,
    Site,
    http_get,
    read_records,
    run_server,
    wait_for_records,
    write_sendfile_probe_config,
)

SIZE = 256 * 1024


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("otel")
    records, files = base / "records", base / "files"
    records.mkdir()
    files.mkdir()
    env = {RECORD_DIR_ENV: str(records), "TMPDIR": str(files)}
    with run_server(
        "gunicorn-sync",
        "otel_app:application",
        env=env,
        gunicorn_config=write_sendfile_probe_config(base),
        log_dir=base,
    ) as server:
        yield Site(server, records, files)
    assert not list(files.glob("otel-*")), "a file was left behind"


def download(site: Site, prefix: str) -> str:
    """Download through ``prefix``; its token, once its hook, deferred function and spans ran."""
    token = uuid.uuid4().hex[:16]
    response = http_get(f"{site.server.url}{prefix}/download?token={token}")
    assert response.status == 200, site.server.describe()
    assert response.body == b"x" * SIZE
    wait_for_records(
        site.records,
        lambda rs: (
            any(r["event"] == "hook" and r.get("token") == token for r in rs)
            and any(r["event"] == "deferred" and r.get("token") == token for r in rs)
            and any(r["event"] == "span" and r["name"] == "cleanup" for r in rs)
        ),
    )
    return token


def spans_of(records: list[dict[str, Any]], trace_id: int) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == "span" and r["trace_id"] == trace_id]


def test_behind_opentelemetry_wsgi_middleware_the_cleanup_span_is_the_request_spans_child(
    site: Site,
) -> None:
    token = download(site, "/otel")
    [deferred] = site.of(token, "deferred")
    request_spans = spans_of(read_records(site.records), deferred["trace_id"])
    [server] = [s for s in request_spans if s["kind"] == "SERVER"]
    [cleanup] = [s for s in request_spans if s["name"] == "cleanup"]

    assert cleanup["parent"] == server["span_id"]
    assert cleanup["attributes"] == {
        "http.request.method": "GET",
        "url.path": "/otel/download",
    }
    # The deferred function ran under the request's span, in the pool's thread.
    assert deferred["span_id"] == server["span_id"]
    # OpenTelemetry's middleware returns a generator around our body, so gunicorn no longer
    # sees its file wrapper and iterates the file instead: no sendfile() call at all.
    assert site.of(token, "sendfile") == []


def test_ours_alone_keeps_sendfile_and_records_the_hooks(site: Site) -> None:
    token = download(site, "/plain")
    assert [r["result"] for r in site.of(token, "sendfile")] == [True]
    [deferred] = site.of(token, "deferred")
    assert deferred["trace_id"] == 0  # no span while the request ran: none to carry
    response = http_get(f"{site.server.url}/metrics")
    points = json.loads(response.body)
    hooks = [
        p
        for p in points
        if p["name"] == "cleanup.hook.duration"
        and p["attributes"]["cleanup.hook.name"] == "otel_app.download.<locals>.delete"
    ]
    assert len(hooks) == 1 and hooks[0]["count"] >= 1
    assert "Traceback" not in site.server.log(), site.server.describe()
