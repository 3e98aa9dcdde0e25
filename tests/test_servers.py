"""The middleware under real WSGI servers: hooks run exactly once, and ``sendfile()`` survives.

Each server in :data:`serverkit.SERVERS` is started once for this module and serves
``tests/apps/server_app.py`` (the Flask app of ``flask_app.py`` at ``/``, the plain WSGI app of
``plain_app.py`` at ``/plain``, and a ``ClosingIterator`` control at ``/control``). Hooks run in
the server process and leave records in a directory (:func:`serverkit.record`); the tests poll
that directory, with a bound, for the records of their own request, found by a unique token.

"Exactly once" is checked after a barrier: a next request whose own hooks must have run. On
the servers that handle one request at a time (gunicorn sync, wsgiref) that next request is
served only after the first one is finished, close() included, so a second run of a hook would
be in the records by then; on the threaded ones a second run would come from the same thread's
close() path, well before a new request is handled and closed.
"""

from __future__ import annotations

import http.client
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import serverkit
from serverkit import (
    CLIENT_GONE,
    RECORD_DIR_ENV,
    SENDFILE_SERVERS,
    SERVERS,
    disconnect_mid_body,
    http_get,
    run_server,
    wait_for_records,
    write_sendfile_probe_config,
)

APP = "server_app:application"
TMP_DIR_ENV = "CLEANUP_TMP_DIR"  # appkit.TMP_DIR_ENV: where the apps make their files

# Sparse files: far more than the socket buffers can absorb, so a client that leaves early is
# noticed by the server, yet nothing is written to disk.
HUGE = 256 * 1024 * 1024
FULL = 3 * 1024 * 1024 + 17  # downloaded whole: bigger than one read, not a round number


class Site(serverkit.Site):
    """A server of this module, with its URLs and the barrier request."""

    def url(self, path: str) -> str:
        return self.server.url + path

    def wait_closed(self, token: str) -> list[dict[str, Any]]:
        """Wait for the request's ``close()`` to finish, then barrier; return its records.

        Every route enters its ``Witness`` first, so its ``exit`` record is the last thing the
        hooks of that response do.
        """
        wait_for_records(self.records, lambda rs: _has(rs, token, "exit"))
        self.barrier()
        return self.of(token)

    def barrier(self) -> None:
        """A request that must be served, and its hooks run, before the test goes on."""
        token = new_token()
        response = http_get(self.url(f"/hello?token={token}"))
        assert response.status == 200, self.server.describe()
        wait_for_records(self.records, lambda rs: _has(rs, token, "exit"))


def _has(records: list[dict[str, Any]], token: str, event: str) -> bool:
    return any(r.get("token") == token and r["event"] == event for r in records)


def new_token() -> str:
    return uuid.uuid4().hex[:16]


def events(records: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """``(event, via)`` pairs of what the app and its hooks did, in order.

    Leaves out the ``sendfile`` records of the gunicorn probe: those are the server's doing.
    """
    return [(r["event"], r.get("via")) for r in records if r["event"] != "sendfile"]


@pytest.fixture(scope="module", params=SERVERS)
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    name: str = request.param
    base = tmp_path_factory.mktemp(name)
    records, files = base / "records", base / "files"
    records.mkdir()
    files.mkdir()
    # The gunicorn servers always carry the sendfile probe: it only records, and this way the
    # sendfile tests need no servers of their own.
    config = write_sendfile_probe_config(base) if name in SENDFILE_SERVERS else None
    env = {RECORD_DIR_ENV: str(records), TMP_DIR_ENV: str(files)}
    with run_server(name, APP, env=env, gunicorn_config=config, log_dir=base) as server:
        yield Site(server, records, files)


# --------------------------------------------------------------------------------------------
# (a) A full download: the file is deleted afterwards, by exactly one run of the hook.


@pytest.mark.parametrize(
    "route", ["/file?via=call_on_close", "/file?via=add_cleanup", "/plain/file?via=add_cleanup"]
)
def test_file_deleted_after_download(site: Site, route: str) -> None:
    token = new_token()
    response = http_get(site.url(f"{route}&size={FULL}&token={token}"))

    assert response.status == 200
    assert len(response.body) == FULL
    assert response.body.startswith(f"{token}\n".encode())
    records = site.wait_closed(token)
    [created] = site.of(token, "created")
    via = route.partition("via=")[2]
    assert events(records) == [("created", None), ("enter", None), ("deleted", via), ("exit", None)]
    assert site.of(token, "deleted")[0]["existed"] is True
    assert not os.path.exists(created["path"])
    assert site.of(token, "exit")[0]["failure"] is None


# --------------------------------------------------------------------------------------------
# (b) + (d) The client goes away in the middle of the body: hooks still run exactly once, and
# the context manager is told that the response failed.


@pytest.mark.parametrize("route", ["/file", "/plain/file"])
def test_disconnect_mid_file(site: Site, route: str) -> None:
    token = new_token()
    seen = disconnect_mid_body(
        site.server.host, site.server.port, f"{route}?size={HUGE}&token={token}", 256 * 1024
    )

    assert seen.status == 200 and not seen.eof
    records = site.wait_closed(token)
    [created] = site.of(token, "created")
    [deleted] = site.of(token, "deleted")
    assert deleted["existed"] is True
    assert not os.path.exists(created["path"])
    assert [e for e, _ in events(records)] == ["created", "enter", "deleted", "exit"]
    [exit_] = site.of(token, "exit")
    assert exit_["failure"] in CLIENT_GONE, f"{site.name} did not report the lost client"


@pytest.mark.parametrize(
    ("route", "hooks"),
    [
        ("/stream", [("hook", "call_on_close"), ("hook", "add_cleanup")]),
        ("/plain/stream", [("hook", "add_cleanup")]),
    ],
)
def test_disconnect_mid_generator(
    site: Site, route: str, hooks: list[tuple[str, str | None]]
) -> None:
    token = new_token()
    seen = disconnect_mid_body(
        site.server.host, site.server.port, f"{route}?size={HUGE}&token={token}", 256 * 1024
    )

    assert seen.status == 200 and not seen.eof
    records = site.wait_closed(token)
    assert events(records) == [("enter", None), *hooks, ("exit", None)]
    [exit_] = site.of(token, "exit")
    assert exit_["failure"] in CLIENT_GONE, f"{site.name} did not report the lost client"


def test_generator_read_to_the_end_is_a_success(site: Site) -> None:
    # The counterpart of the disconnect tests: same routes, nothing goes wrong.
    for route in ("/stream", "/plain/stream"):
        token = new_token()
        response = http_get(site.url(f"{route}?size={FULL}&token={token}"))
        assert response.status == 200 and len(response.body) == FULL
        site.wait_closed(token)
        [exit_] = site.of(token, "exit")
        assert exit_["failure"] is None, route


# --------------------------------------------------------------------------------------------
# (c) + (d) The application fails: hooks run once, the context manager sees the error, and the
# server goes on serving.


@pytest.mark.parametrize("route", ["/raise", "/plain/raise", "/plain/raise-mid-body"])
def test_failing_app(site: Site, route: str) -> None:
    token = new_token()
    try:
        response = http_get(site.url(f"{route}?token={token}"))
    except (OSError, http.client.HTTPException):
        # A body that fails after its headers ends in a reset or a short read.
        pass
    else:
        if route != "/plain/raise-mid-body":
            assert response.status == 500

    records = site.wait_closed(token)  # the barrier is a next request that must succeed
    assert events(records) == [("enter", None), ("hook", "add_cleanup"), ("exit", None)]
    [exit_] = site.of(token, "exit")
    assert exit_["failure"] == "RuntimeError"
    assert site.server.alive(), site.server.describe()


# --------------------------------------------------------------------------------------------
# (e) gunicorn sends file bodies with sendfile() through the middleware, and not through a
# ClosingIterator.


def _sendfile_results(site: Site, token: str) -> list[Any]:
    return [r["result"] for r in site.of(token, "sendfile")]


@pytest.mark.parametrize("site", SENDFILE_SERVERS, indirect=True)
@pytest.mark.parametrize("route", ["/file?via=call_on_close", "/plain/file?via=add_cleanup"])
def test_file_goes_out_by_sendfile(site: Site, route: str) -> None:
    token = new_token()
    response = http_get(site.url(f"{route}&size={FULL}&token={token}"))

    assert response.status == 200 and len(response.body) == FULL
    site.wait_closed(token)
    assert _sendfile_results(site, token) == [True]
    [created] = site.of(token, "created")
    assert not os.path.exists(created["path"])


@pytest.mark.parametrize("site", SENDFILE_SERVERS, indirect=True)
def test_subclass_of_the_servers_file_wrapper_goes_out_by_sendfile(site: Site) -> None:
    # gunicorn tests isinstance(): an application's subclass of its wrapper is its own too.
    token = new_token()
    response = http_get(site.url(f"/plain/subclass-file?size={FULL}&token={token}"))

    assert response.status == 200 and len(response.body) == FULL
    site.wait_closed(token)
    assert _sendfile_results(site, token) == [True]
    [deleted] = site.of(token, "deleted")
    assert deleted["existed"] is True


@pytest.mark.parametrize("site", SENDFILE_SERVERS, indirect=True)
def test_closing_iterator_loses_sendfile(site: Site) -> None:
    # The control: shows that the probe can fail. The usual ClosingIterator middleware runs its
    # callback but hides the server's file wrapper, so gunicorn iterates the file in Python.
    token = new_token()
    response = http_get(site.url(f"/control/file?size={FULL}&token={token}"))

    assert response.status == 200 and len(response.body) == FULL
    wait_for_records(site.records, lambda rs: _has(rs, token, "deleted"))
    site.barrier()
    assert [r["via"] for r in site.of(token, "deleted")] == ["closing_iterator"]
    assert _sendfile_results(site, token) == []
