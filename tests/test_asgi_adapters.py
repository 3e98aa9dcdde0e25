"""Servers that break PEP 3333's close() or hide a lost client, measured from outside.

ASGI servers run WSGI applications through an adapter: asgiref's ``WsgiToAsgi``, a2wsgi's
``WSGIMiddleware`` (what ``uvicorn --interface wsgi`` runs when a2wsgi is installed), uvicorn's
own deprecated WSGI middleware (what it runs otherwise) or hypercorn's native WSGI mode.
gunicorn's tornado worker runs tornado's ``WSGIContainer``. Each is started as a subprocess on
127.0.0.1 serving ``tests/apps/adapter_app.py``; each case makes a few full downloads and one
that the client resets half way, then reads what the hooks recorded:

* whether the server called ``close()``, or never did, so that the garbage-collection net ran
  the hooks (when a request to ``/gc`` made the server collect);
* that every hook ran exactly once, whoever ran it, and no temporary file is left;
* how many chunks a generator body had yielded when its hooks ran (a server that keeps iterating
  after the client left yields all of them);
* what the ``enter_context`` witness was told about the lost client.

What each server did is in :data:`EXPECTED`, and ``docs/servers.md`` shows it as a table.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import socket
import struct
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from apps.appkit import TMP_DIR_ENV
from apps.fault_uwsgi import run_uwsgi, uwsgi_missing
from serverkit import (
    HOST,
    RECORD_DIR_ENV,
    Server,
    child_env,
    launch,
    listening_socket,
    new_log_path,
    read_records,
    wait_for_records,
)

CHUNK_BYTES = 64 * 1024  # adapter_app.CHUNK (not imported here: it imports every adapter)
FULL_CHUNKS = 16  # 1 MiB: read whole
# 32 MiB, far more than the socket buffers hold, so the client's reset is met mid-body.
HUGE_CHUNKS = 512
READ_BEFORE_RESET = 1024 * 1024
FULL_DOWNLOADS = 2
# Requests to /gc, 0.1 s apart, before giving up on hooks that nothing runs.
GC_ATTEMPTS = 150


@dataclass(frozen=True)
class Kind:
    """A server and adapter: how to start it, and the PyPI package it needs."""

    package: str  # the module that must import, named as pip installs it
    command: tuple[str, ...]  # {fd} is the listening socket, {app} the adapter_app attribute
    app: str


KINDS = {
    "hypercorn": Kind(
        "hypercorn", ("-m", "hypercorn", "--bind", "fd://{fd}", "{app}"), "application"
    ),
    "hypercorn+asgiref": Kind(
        "hypercorn", ("-m", "hypercorn", "--bind", "fd://{fd}", "{app}"), "asgiref_app"
    ),
    "hypercorn+a2wsgi": Kind(
        "hypercorn", ("-m", "hypercorn", "--bind", "fd://{fd}", "{app}"), "a2wsgi_app"
    ),
    "uvicorn+asgiref": Kind(
        "uvicorn", ("-m", "uvicorn", "--fd", "{fd}", "--interface", "asgi3", "{app}"), "asgiref_app"
    ),
    "uvicorn+a2wsgi": Kind(
        "uvicorn", ("-m", "uvicorn", "--fd", "{fd}", "--interface", "wsgi", "{app}"), "application"
    ),
    "uvicorn-native-wsgi": Kind(
        "uvicorn",
        ("-m", "uvicorn", "--fd", "{fd}", "--interface", "asgi3", "{app}"),
        "uvicorn_native_app",
    ),
    "gunicorn-tornado": Kind(
        "tornado",
        (
            "-m",
            "gunicorn",
            "--worker-class",
            "tornado",
            "--bind",
            "fd://{fd}",
            "--workers",
            "1",
            "--graceful-timeout",
            "3",
            "{app}",
        ),
        "application",
    ),
    "uwsgi": Kind("pyuwsgi", (), "application"),
}


@dataclass(frozen=True)
class Expected:
    """What a server does with a response, as measured here."""

    closes: bool  # calls close() on the body (else only the garbage-collection net runs hooks)
    lost_client_failure: str | None  # what enter_context is told when the client resets
    iterates_after_reset: bool  # a generator body is iterated to its end anyway
    buffers_body: bool = False  # the whole body is iterated (and closed) before the first byte


EXPECTED = {
    "hypercorn": Expected(closes=True, lost_client_failure=None, iterates_after_reset=True),
    "hypercorn+asgiref": Expected(
        closes=False, lost_client_failure=None, iterates_after_reset=True
    ),
    "hypercorn+a2wsgi": Expected(closes=True, lost_client_failure=None, iterates_after_reset=True),
    "uvicorn+asgiref": Expected(closes=False, lost_client_failure=None, iterates_after_reset=True),
    "uvicorn+a2wsgi": Expected(closes=True, lost_client_failure=None, iterates_after_reset=True),
    "uvicorn-native-wsgi": Expected(
        closes=False, lost_client_failure=None, iterates_after_reset=True
    ),
    "gunicorn-tornado": Expected(
        closes=True, lost_client_failure=None, iterates_after_reset=True, buffers_body=True
    ),
    "uwsgi": Expected(closes=True, lost_client_failure=None, iterates_after_reset=False),
}


@contextlib.contextmanager
def run_kind(name: str, env: dict[str, str], log_dir: Path) -> Iterator[Server]:
    """Start ``adapter_app`` under server kind ``name``; always stop and reap it."""
    kind = KINDS[name]
    app = f"adapter_app:{kind.app}"
    if name == "uwsgi":
        with run_uwsgi(app, env=env, log_dir=log_dir) as server:
            yield server
        return
    listener, port = listening_socket()
    fd = listener.fileno()
    server = launch(
        name,
        app,
        [sys.executable, *(part.format(fd=fd, app=app) for part in kind.command)],
        listener=listener,
        port=port,
        env=child_env(env),
        log_path=new_log_path(log_dir, name),
        pass_fds=(fd,),
        ready_path="/ready",
        startup_timeout=20.0,
    )
    try:
        yield server
    finally:
        server.stop()


def missing(name: str) -> str | None:
    """Why server kind ``name`` cannot run here, or None."""
    if name == "uwsgi" and uwsgi_missing():
        return uwsgi_missing()
    # The server's package, then what adapter_app imports.
    for package in (KINDS[name].package, "asgiref", "a2wsgi", "uvicorn"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed (pip install {package}, part of the 'test' extra)"
    return None


def get(server: Server, path: str) -> bytes:
    conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, server.describe())
        return body
    finally:
        conn.close()


# The record each hook of adapter_app leaves when it runs.
HOOK_EVENTS = {"exit": "witness", "deleted": "delete", "ran": "count"}


def hooks_of(records: list[dict[str, Any]], token: str) -> dict[str, list[dict[str, Any]]]:
    """What ``token``'s hooks recorded when they ran, by hook: witness, delete, count."""
    ran: dict[str, list[dict[str, Any]]] = {hook: [] for hook in HOOK_EVENTS.values()}
    for r in records:
        if r["event"] in HOOK_EVENTS and r.get("token") == token:
            ran[HOOK_EVENTS[r["event"]]].append(r)
    return ran


def reset_mid_body(server: Server, token: str, records: Path) -> bool:
    """Download a huge body, reset the connection after 1 MiB of it; see whether it was buffered.

    Returns whether the request's hooks had run by the time its headers arrived: only a server
    that iterates and closes the whole body before it sends anything does that.
    """
    sock = socket.create_connection((HOST, server.port), timeout=30)
    try:
        path = f"/stream?token={token}&chunks={HUGE_CHUNKS}"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"closed before the headers: {data!r}; {server.describe()}"
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 "), data[:100]
        ran_before_headers = bool(hooks_of(read_records(records), token)["witness"])
        received = len(data.partition(b"\r\n\r\n")[2])
        while received < READ_BEFORE_RESET:
            chunk = sock.recv(65536)
            assert chunk, f"the body ended after {received} bytes; {server.describe()}"
            received += len(chunk)
        return ran_before_headers
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


@dataclass
class Observation:
    """What one server kind did, seen from outside."""

    full: list[str]  # the tokens of the downloads read whole
    lost: str  # the token of the download the client reset
    hooks: dict[str, dict[str, list[dict[str, Any]]]]  # token -> hooks_of()
    files_left: list[str]
    ran_before_headers: bool
    server: str  # Server.describe(), for failure messages


def observe(name: str, directory: Path) -> Observation:
    """Run the scenario of this module on server kind ``name``."""
    records = directory / "records"
    scratch = directory / "scratch"
    records.mkdir()
    scratch.mkdir()
    full = [uuid.uuid4().hex for _ in range(FULL_DOWNLOADS)]
    lost = uuid.uuid4().hex
    env = {RECORD_DIR_ENV: str(records), TMP_DIR_ENV: str(scratch)}
    with run_kind(name, env, directory) as server:
        for token in full:
            assert len(get(server, f"/stream?token={token}&chunks={FULL_CHUNKS}")) == (
                FULL_CHUNKS * CHUNK_BYTES
            )
        ran_before_headers = reset_mid_body(server, lost, records)
        # Bodies that the server never closes are reclaimed by the collector, which /gc runs;
        # the lost body may still be iterated in the server meanwhile.
        for _ in range(GC_ATTEMPTS):
            get(server, "/gc")
            final = read_records(records)
            if all(hooks_of(final, token)["witness"] for token in [*full, lost]):
                break
            time.sleep(0.1)
        return Observation(
            full=full,
            lost=lost,
            hooks={token: hooks_of(final, token) for token in [*full, lost]},
            files_left=sorted(p.name for p in scratch.iterdir()),
            ran_before_headers=ran_before_headers,
            server=server.describe(),
        )


@pytest.fixture(scope="module")
def observations(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Observation | BaseException]:
    """Every server kind that can run here, observed at once (each is mostly waiting)."""
    kinds = [name for name in KINDS if missing(name) is None]
    with ThreadPoolExecutor(max_workers=len(kinds) or 1) as pool:
        futures = {
            name: pool.submit(observe, name, tmp_path_factory.mktemp(name)) for name in kinds
        }
    return {name: future.exception() or future.result() for name, future in futures.items()}


def observation(name: str, observations: dict[str, Observation | BaseException]) -> Observation:
    reason = missing(name)
    if reason:
        pytest.skip(reason)
    seen = observations[name]
    if isinstance(seen, BaseException):
        raise seen
    return seen


@pytest.mark.parametrize("name", list(KINDS))
def test_every_hook_runs_once_and_no_file_is_left(
    name: str, observations: dict[str, Observation | BaseException]
) -> None:
    seen = observation(name, observations)
    for token, ran in seen.hooks.items():
        counts = {hook: len(records) for hook, records in ran.items()}
        assert counts == {"witness": 1, "delete": 1, "count": 1}, (token, ran, seen.server)
        assert ran["delete"][0]["existed"], (token, ran)
    assert seen.files_left == [], seen.server


@pytest.mark.parametrize("name", list(KINDS))
def test_who_runs_the_hooks_the_server_or_the_garbage_collector(
    name: str, observations: dict[str, Observation | BaseException]
) -> None:
    seen = observation(name, observations)
    # The count hook tells; the others ran in the same close(), whoever called it.
    by_gc = {ran["count"][0]["by_gc"] for ran in seen.hooks.values()}
    assert by_gc == {not EXPECTED[name].closes}, (seen.hooks, seen.server)


# Only where the server closes the body: an abandoned request has no close() to learn anything
# at, and the collector's thread may be handling another request's error then (issue 10, item 5).
@pytest.mark.parametrize("name", [name for name in KINDS if EXPECTED[name].closes])
def test_what_enter_context_is_told_at_close(
    name: str, observations: dict[str, Observation | BaseException]
) -> None:
    seen = observation(name, observations)
    told = {token: seen.hooks[token]["witness"][0]["failure"] for token in [*seen.full, seen.lost]}
    expected = dict.fromkeys(seen.full, None) | {seen.lost: EXPECTED[name].lost_client_failure}
    assert told == expected, seen.server


@pytest.mark.parametrize("name", list(KINDS))
def test_a_generator_body_after_the_client_left(
    name: str, observations: dict[str, Observation | BaseException]
) -> None:
    seen = observation(name, observations)
    yielded = seen.hooks[seen.lost]["count"][0]["yielded"]
    assert (yielded == HUGE_CHUNKS) == EXPECTED[name].iterates_after_reset, (yielded, seen.server)
    if EXPECTED[name].buffers_body:
        # Elsewhere whether the client saw the headers before the hooks ran is a race (a loaded
        # machine delays the client): only a buffering server decides it.
        assert seen.ran_before_headers, seen.server


def half_close_then_read(server: Server, token: str) -> int:
    """Send the request, close our sending side (FIN), then read the whole response."""
    with socket.create_connection((HOST, server.port), timeout=30) as sock:
        path = f"/stream?token={token}&chunks={FULL_CHUNKS}"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        sock.shutdown(socket.SHUT_WR)
        received = 0
        while chunk := sock.recv(65536):
            received += len(chunk)
        return received


def test_uwsgi_lost_client_check_tells_enter_context(tmp_path: Path) -> None:
    """UwsgiLostClient turns the reset that uWSGI logs and clears into the request's failure."""
    reason = uwsgi_missing() or missing("uwsgi")
    if reason:
        pytest.skip(reason)
    records = tmp_path / "records"
    records.mkdir()
    env = {RECORD_DIR_ENV: str(records), TMP_DIR_ENV: str(tmp_path)}
    full, half_closed, lost = (uuid.uuid4().hex for _ in range(3))
    with run_uwsgi("adapter_app:uwsgi_checked_application", env=env, log_dir=tmp_path) as server:
        assert len(get(server, f"/stream?token={full}&chunks={FULL_CHUNKS}")) == (
            FULL_CHUNKS * CHUNK_BYTES
        )
        assert half_close_then_read(server, half_closed) > FULL_CHUNKS * CHUNK_BYTES
        reset_mid_body(server, lost, records)
        final = wait_for_records(
            records, lambda rs: all(hooks_of(rs, t)["witness"] for t in (full, half_closed, lost))
        )
    tokens = (full, half_closed, lost)
    told = {token: hooks_of(final, token)["witness"][0]["failure"] for token in tokens}
    assert told == {full: None, half_closed: None, lost: "ConnectionResetError"}
