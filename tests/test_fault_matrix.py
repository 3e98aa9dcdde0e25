"""The fault matrix: every application behaviour x every client behaviour x every real server.

"Every hook runs exactly once, nothing leaks" has to hold whatever goes wrong. Each case sends one
request to ``tests/apps/fault_app.py`` under a real server and checks, from outside the server:

* the hooks the app registered (it records each registration) ran exactly once each, last
  registered first, after the body's own ``close()``; the ``enter_context`` witness, entered
  first, ran last;
* the request's temporary file is gone, deleted by its hook while it still existed;
* the server still answers the next request (``/ping``);
* what the client saw, where that is certain (a full read of a good response is complete);
* a ``send_file`` body went back to the server as its own ``wsgi.file_wrapper`` object (so
  ``sendfile()`` stays possible) wherever the server has one;
* what the witness was told when the client reset the connection in the middle of a large body:
  the server's error (one of :data:`serverkit.CLIENT_GONE`), or nothing on the servers that
  close the body without one (:data:`SILENT_ON_LOST_CLIENT`, as ``docs/servers.md`` says);
* on waitress, no hook ran on its I/O thread (the main thread, which runs its asyncore loop).

Beside the matrix, on every server that serves requests side by side: a file response whose
hook waits holds up no other request (:func:`test_a_slow_file_hook_holds_up_no_other_request`).

One server per kind for the whole module (a module-scoped fixture, so pytest runs all cases of a
server before starting the next); every application behaviour is a route of one app. uWSGI runs
where the ``pyuwsgi`` wheel is installed and is skipped with the reason otherwise.

One more case stops the server: deferred work still running when a gunicorn worker (of every
worker class) is told to stop must be said at WARNING, by name and count, in the server's own
output before the arbiter's kill (``test_defer.check_pending_work_is_said_before_the_kill``).

With ``FAULT_MATRIX_SUMMARY=path.md`` in the environment the module writes a summary table of
what it saw there (``docs/reliability.md`` shows one).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyserver
import pytest
import serverkit
from apps.fault_client import CLIENTS, Outcome, request
from serverkit import CLIENT_GONE, RECORD_DIR_ENV, wait_for_records
from test_defer import check_pending_work_is_said_before_the_kill

APP = "fault_app:application"
TMP_DIR_ENV = "CLEANUP_TMP_DIR"  # fault_app.TMP_DIR_ENV
HOLD_SECONDS = 10.0  # fault_app.HOLD_SECONDS: the longest its hook "hold" waits
# Not meinheld: built against today's greenlet (its own pin does not build), meinheld 1.0.2
# segfaults now and then on a client that goes away, with or without the middleware.
# Nor mod_wsgi's embedded mode: daemon mode is mod_wsgi's default.
SERVER_KINDS = tuple(s for s in anyserver.ALL_SERVERS if s not in ("meinheld", "mod_wsgi-embedded"))
# The servers without a wsgi.file_wrapper: a send_file body is werkzeug's own wrapper there.
NO_FILE_WRAPPER = ("werkzeug", "cheroot")

# The servers that call close() with no exception when the client went away: uWSGI clears it
# first, bjoern and mod_wsgi never raise one (docs/servers.md, "A lost client").
SILENT_ON_LOST_CLIENT = ("uwsgi", "bjoern", "mod_wsgi")
# The servers (as the tests run them) whose one thread serves every request, hooks included:
# there a hook that waits holds up the next request, by design.
ONE_THREAD = ("gunicorn-sync", "wsgiref", "bjoern")
# The behaviours whose body goes out unchanged and whole for as long as the client stays, so a
# client that leaves meets the server writing it, and nothing else fails.
STREAMED = ("list", "generator", "send_file", "range")

FULL = 200 * 1024 + 17  # read whole: several chunks, not a round number
# Far more than the socket buffers hold, so a client that leaves is noticed mid-body. Files are
# sparse, generators and lists repeat one chunk: this costs neither disk nor memory.
HUGE = 256 * 1024 * 1024
# A Range body is a werkzeug _RangeWrapper, which iterates the file; under uWSGI that file is
# read line by line, and a sparse file is one long line, so keep it smaller.
RANGE_FILE = 16 * 1024 * 1024
FUTURE = "Fri, 01 Jan 2100 00:00:00 GMT"


@dataclass(frozen=True)
class Behaviour:
    """An application behaviour: a route of fault_app, and what the request adds to it."""

    route: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    # The body's own close() leaves a record (list bodies and FailingClose).
    body_close_recorded: bool = False


BEHAVIOURS = {
    "list": Behaviour("list", body_close_recorded=True),
    "generator": Behaviour("generator"),
    "send_file": Behaviour("file"),
    "raise_before": Behaviour("raise_before"),
    "raise_first_chunk": Behaviour("raise_first"),
    "raise_mid_stream": Behaviour("raise_mid"),
    "body_close_raises": Behaviour("close_raises", body_close_recorded=True),
    "hook_raises": Behaviour("hook_raises", body_close_recorded=True),
    "HEAD": Behaviour("file", method="HEAD"),
    "status_204": Behaviour("status_204", body_close_recorded=True),
    "status_304": Behaviour("file", headers={"If-Modified-Since": FUTURE}),
    "range": Behaviour("file", headers={"Range": "bytes=1000-4999"}),
}

# What each case saw, for the summary table: (server, behaviour, client) -> cell text.
RESULTS: dict[tuple[str, str, str], str] = {}
# The type of the send_file body each server got back from the middleware.
FILE_BODIES: dict[str, str] = {}
# What the client saw of each str body, bare and through the middleware alike: (server, case).
TEXT_RESULTS: dict[tuple[str, str], str] = {}


class Site(serverkit.Site):
    """A server of the matrix, which can wait for a request's hooks to finish."""

    def wait_done(self, token: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        """The request's records once its witness (entered first, so run last) has run.

        If that takes a while, the server may have dropped the response without closing it:
        from then on the garbage collector is run in the server four times a second, so that the
        GC safety net can run the hooks (and the records say it did).
        """
        start = time.monotonic()
        next_gc = start + 0.5
        while True:
            records = self.of(token)
            if any(r["event"] == "ran" and r["via"] == "witness" for r in records):
                return records
            now = time.monotonic()
            if now > start + timeout or not self.server.alive():
                raise AssertionError(
                    f"the hooks of request {token} did not finish within {timeout} s; "
                    f"its records: {records}\n{self.server.describe()}"
                )
            if now >= next_gc:
                request(self.server.port, "/gc")
                next_gc = now + 0.25
            time.sleep(0.005)


@pytest.fixture(scope="module", params=SERVER_KINDS)
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    name: str = request.param
    if missing := anyserver.missing(name):
        pytest.skip(missing)
    with anyserver.server_dir(name, tmp_path_factory) as base:
        records, files = base / "records", base / "files"
        records.mkdir()
        files.mkdir()
        env = {RECORD_DIR_ENV: str(records), TMP_DIR_ENV: str(files)}
        with anyserver.run(name, APP, env=env, log_dir=base) as server:
            yield Site(server, records, files)
            leftovers = sorted(os.listdir(files))
    assert leftovers == [], f"temporary files left behind under {name}: {leftovers}"


@pytest.fixture(scope="module", autouse=True)
def _summary() -> Iterator[None]:
    yield
    target = os.environ.get("FAULT_MATRIX_SUMMARY")
    if target and (RESULTS or TEXT_RESULTS):
        Path(target).write_text(summary_table(RESULTS, FILE_BODIES, TEXT_RESULTS))


def summary_table(
    results: dict[tuple[str, str, str], str],
    file_bodies: dict[str, str],
    text_results: dict[tuple[str, str], str],
) -> str:
    """A Markdown table: a row per application behaviour, a column per server.

    A cell holds the HTTP status each client saw (reads all / leaves before the body / leaves
    mid-body; ``-`` for none), ``gc`` where the hooks were run by the GC safety net because the
    server never called ``close()``, and ``FAIL`` for a failed case. Then a row per ``str``
    body: the status, body bytes and whether the response was cut short, the same with and
    without the middleware. The last row names the type of the ``send_file`` body the server
    was handed.
    """
    servers = [s for s in SERVER_KINDS if any(k[0] == s for k in (*results, *text_results))]
    lines = [
        "| app behaviour | " + " | ".join(servers) + " |",
        "| --- | " + " | ".join("---" for _ in servers) + " |",
    ]
    for behaviour in BEHAVIOURS:
        cells = []
        for server in servers:
            seen = [results.get((server, behaviour, client), "-") for client in CLIENTS]
            cells.append(" / ".join(seen))
        lines.append(f"| {behaviour} | " + " | ".join(cells) + " |")
    for case in TEXT_CASES:
        cells = [text_results.get((server, case), "-") for server in servers]
        lines.append(f"| str body: {case} | " + " | ".join(cells) + " |")
    kinds = [f"`{file_bodies.get(server, '?')}`" for server in servers]
    lines.append("| *send_file body handed to the server* | " + " | ".join(kinds) + " |")
    return "\n".join(lines) + "\n"


def _send(site: Site, behaviour: Behaviour, client: str, token: str) -> Outcome:
    headers = dict(behaviour.headers)
    size = FULL
    if client != "reads_all":
        size = HUGE
        if "Range" in headers:
            size, headers["Range"] = RANGE_FILE, "bytes=1000-"
    return request(
        site.server.port,
        f"/fault/{behaviour.route}?token={token}&size={size}",
        method=behaviour.method,
        headers=headers,
        leave=client,
    )


def _check_full_read(name: str, outcome: Outcome, token: str, server: str) -> None:
    """What a client that reads everything must have seen, where that does not vary."""
    if name in ("list", "generator", "body_close_raises", "hook_raises", "send_file"):
        assert (outcome.status, outcome.complete) == (200, True)
        assert len(outcome.body) == FULL
        if name == "send_file":
            assert outcome.body.startswith(token.encode())
    elif name == "HEAD":
        assert (outcome.status, outcome.body) == (200, b"")
    elif name == "status_204":
        assert (outcome.status, outcome.body) == (204, b"")
    elif name == "status_304":
        assert (outcome.status, outcome.body) == (304, b"")
    elif name == "range":
        assert outcome.status == 206 and outcome.body == bytes(4000)
    elif name == "raise_before":
        # uWSGI drops the connection without an answer; the others answer 500.
        assert outcome.status == (None if server == "uwsgi" else 500)
    else:  # the body fails after the headers were (or may have been) committed
        assert not (outcome.status == 200 and outcome.complete), outcome


def _check_records(records: list[dict[str, Any]], behaviour: Behaviour, name: str) -> None:
    registered = [r["via"] for r in records if r["event"] == "registered"]
    ran = [r["via"] for r in records if r["event"] == "ran"]
    assert registered and registered[0] == "witness", records
    assert len(set(registered)) == len(registered), records
    # Each hook exactly once, last registered first.
    assert ran == registered[::-1], records
    events = [r["event"] for r in records]
    body_closes = [i for i, e in enumerate(events) if e == "body_close"]
    if behaviour.body_close_recorded:
        assert len(body_closes) == 1, records
        assert body_closes[0] < events.index("ran"), "the body must be closed before any hook"
    else:
        assert body_closes == [], records
    # The temporary file: deleted by its hook, while it was still there.
    [deleted] = [r for r in records if r["event"] == "ran" and r["via"] == "delete"]
    assert deleted["existed"] is True
    for created in (r for r in records if r["event"] == "created"):
        assert not os.path.exists(created["path"]), f"{created['path']} was left behind"
    if name == "raise_before":
        # The middleware closes the response itself, inside the application's exception.
        [witness] = [r for r in records if r["event"] == "ran" and r["via"] == "witness"]
        assert witness["failure"] == "AppFailure"


def _check_io_thread(records: list[dict[str, Any]], server: str) -> None:
    """waitress runs its I/O loop on the main thread, and closes file bodies there: no hook may
    run there, or no other connection is served meanwhile."""
    if server == "waitress":
        on_io_thread = [r["via"] for r in records if r["event"] == "ran" and r["main_thread"]]
        assert on_io_thread == [], f"hooks ran on waitress's I/O thread: {records}"


def _check_lost_client(records: list[dict[str, Any]], server: str) -> None:
    """The witness of a streamed body whose client left was told so, where the server tells."""
    [witness] = [r for r in records if r["event"] == "ran" and r["via"] == "witness"]
    if server in SILENT_ON_LOST_CLIENT:
        assert witness["failure"] is None, f"{server} now tells a lost client: {witness}"
    else:
        assert witness["failure"] in CLIENT_GONE, f"{server} did not tell a lost client: {witness}"


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("name", list(BEHAVIOURS))
def test_fault_matrix(site: Site, name: str, client: str) -> None:
    behaviour = BEHAVIOURS[name]
    token = uuid.uuid4().hex[:16]
    RESULTS[(site.name, name, client)] = "FAIL"

    outcome = _send(site, behaviour, client, token)

    site.wait_done(token)
    ping = request(site.server.port, "/ping")
    assert (ping.status, ping.body) == (200, b"pong"), site.server.describe()
    # Read again after the next request was served: a second run of any hook would be here.
    records = site.of(token)
    _check_records(records, behaviour, name)
    _check_io_thread(records, site.name)
    abandoned = {r.get("abandoned") for r in records if r["event"] == "ran"}
    if abandoned != {None}:
        # The server never called close(); the GC safety net ran the hooks, with a warning
        # that names the request. Known for werkzeug's development server only (see
        # docs/reliability.md): it reads the socket before close() and a reset skips close().
        [warning] = abandoned
        assert f"{behaviour.method} /fault/{behaviour.route}" in warning
        assert site.name == "werkzeug", f"{site.name} never closed the response: {warning}"
    if client == "reads_all":
        _check_full_read(name, outcome, token, site.name)
    elif name in STREAMED:
        _check_lost_client(records, site.name)
    if name == "send_file":
        [returned] = [r["kind"] for r in records if r["event"] == "returned"]
        FILE_BODIES[site.name] = returned
        if site.name not in NO_FILE_WRAPPER:
            assert returned != "ResponseCleanup", "the server's file wrapper was hidden"
    assert site.server.alive(), site.server.describe()
    RESULTS[(site.name, name, client)] = str(outcome.status or "-") + (
        " gc" if abandoned != {None} else ""
    )


def test_a_slow_file_hook_holds_up_no_other_request(site: Site) -> None:
    # waitress closed file bodies on its one I/O thread and ran their hooks there: a 1.5 s hook
    # held every other connection for 1.5 s. The client resets the connection in the middle of
    # a large file, so the server closes the body after the application returned (on waitress,
    # in its I/O thread); the hook then waits until released, and /ping must be answered
    # meanwhile. Without the fix, waitress answers /ping only after the hook stopped waiting.
    if site.name in ONE_THREAD:
        pytest.skip(f"{site.name} serves one request at a time here, hooks included")
    token = uuid.uuid4().hex[:16]
    port = site.server.port
    request(port, f"/fault/held_file?token={token}&size={HUGE}", leave="leaves_mid_body")
    wait_for_records(site.records, lambda _: bool(site.of(token, "held")), timeout=15)
    # Longer than the hook can wait: a server that holds /ping behind it answers, late.
    ping = request(port, "/ping", timeout=3 * HOLD_SECONDS)
    assert (ping.status, ping.body) == (200, b"pong"), site.server.describe()
    assert site.of(token, "ran") == [], "the hook stopped waiting before /ping was answered"
    request(port, f"/release?token={token}")
    records = site.wait_done(token)
    _check_records(records, Behaviour("held_file"), "held_file")
    _check_io_thread(records, site.name)
    [hold] = [r for r in records if r["event"] == "ran" and r["via"] == "hold"]
    assert hold["released"] is True
    _check_lost_client(records, site.name)


# fault_app.TEXT_BODIES: bodies that yield str.
TEXT_CASES = (
    "empty_text_file",
    "text_file",
    "empty_stringio",
    "stringio",
    "text_file_wrapper",
    "str_list",
    "str_generator",
)


@pytest.mark.parametrize("case", TEXT_CASES)
def test_a_text_body_never_loops_and_gets_what_the_bare_application_gets(
    site: Site, case: str
) -> None:
    # An open file returned whole was read in blocks until one was b"", which a text file never
    # reads: waitress and cheroot served an empty text file by spinning for ever, and its hooks
    # never ran. Whatever a server makes of a str body, it must make the same of it through the
    # middleware, and the hooks must run.
    port = site.server.port
    bare = request(port, f"/bare/text?case={case}")
    token = uuid.uuid4().hex[:16]
    ours = request(port, f"/fault/text?case={case}&token={token}")
    seen = (ours.status, ours.body, ours.complete)
    assert seen == (bare.status, bare.body, bare.complete), site.server.describe()
    records = site.wait_done(token)
    _check_records(records, Behaviour("text"), "text")
    ping = request(port, "/ping")
    assert (ping.status, ping.body) == (200, b"pong"), site.server.describe()
    TEXT_RESULTS[(site.name, case)] = f"{ours.status or '-'}, {len(ours.body)} B" + (
        "" if ours.complete else ", cut"
    )


GUNICORN_KINDS = [name for name in SERVER_KINDS if name.startswith("gunicorn-")]


@pytest.mark.parametrize("name", GUNICORN_KINDS)
def test_shutdown_with_pending_deferred_work(name: str, tmp_path: Path) -> None:
    """Deferred work still running at a stop is said at WARNING, by name and count, before the
    arbiter's kill, under every gunicorn worker class, with no line in gunicorn's config."""
    if missing := anyserver.missing(name):
        pytest.skip(missing)
    check_pending_work_is_said_before_the_kill(name, tmp_path)
