"""Every server keeps its own way of sending a file through the middleware, in flat memory.

Each server runs ``tests/apps/sendfile_app.py`` under ``strace -f -e trace=sendfile`` from its
start, and the test downloads the same 64 MiB ``send_file`` twice: once as shipped, outside the
middleware (``/bare/file``), and once through it with a cleanup hook (``/ours/file``). Checked,
for each server:

* the ``sendfile()`` calls strace saw for each download: as many servers send by ``sendfile()``
  through the middleware as without it (where the server never does, neither route does, and the
  table in ``docs/servers.md`` says so);
* the hook ran exactly once, and deleted the file while it was still there;
* memory: the peak resident set (``VmHWM``) of every process of the server, read from ``/proc``
  after each download. The bare download comes first, so the middleware's download raises the
  peak only by what it costs beyond the bare one; that must stay within 5 MiB. The servers run
  with one malloc arena (``MALLOC_ARENA_MAX=1``), so that a thread's first allocations do not
  count as the request's, and with a fixed set of processes (Apache with one child, see
  ``apps/fault_mod_wsgi.py``): a process started between the two downloads fails the test, since
  its whole size would count as the second download's.

The figures are printed (``pytest -s``) for the server table. Servers that are not installed are
skipped with the command that installs them; strace too.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyserver
import pytest
from anyserver import ALL_SERVERS
from serverkit import HOST, RECORD_DIR_ENV, Server, read_records, wait_for_records

APP = "sendfile_app:application"
TMP_DIR_ENV = "CLEANUP_TMP_DIR"  # appkit.TMP_DIR_ENV
BARE_PREFIX = "bare-"  # sendfile_app.BARE_PREFIX
SIZE = 64 * 1024 * 1024
WARM_UP = 1024 * 1024
MIB = 1024 * 1024
#: Whether the server, as shipped, sends a file body with sendfile(): checked below for the bare
#: route, so that a probe that sees nothing fails instead of passing.
SENDS_WITH_SENDFILE = {
    "gunicorn-sync": True,
    "gunicorn-gthread": True,
    "gunicorn-gevent": False,  # no sendfile() seen under the gevent worker
    "gunicorn-eventlet": False,  # nor under eventlet's
    "waitress": False,  # its own file buffer, sent with send()
    "werkzeug": False,  # no wsgi.file_wrapper
    "wsgiref": False,
    "cheroot": False,  # no wsgi.file_wrapper
    "uwsgi": True,
    "bjoern": True,
    "meinheld": True,
    "mod_wsgi": True,
    "mod_wsgi-embedded": True,
}
#: Seen here: meinheld 1.0.2 (unmaintained since 2020) cuts the bare download short (4 to 13 MiB
#: of 64, every time), while the same file through the middleware arrives whole. The bare
#: download of those servers is only required to start.
CUTS_BARE_SHORT = ("meinheld",)
STRACE = shutil.which("strace")

# About a minute for every server: make test-servers runs it, make test does not.
pytestmark = pytest.mark.servers


class Traced:
    """A server running under strace, and what it left in its directories."""

    def __init__(self, server: Server, trace: Path, records: Path) -> None:
        self.server = server
        self.trace = trace
        self.records = records

    def sendfile_calls(self) -> int:
        """``sendfile()`` calls strace logged so far (an interrupted one counts once)."""
        try:
            return self.trace.read_text(errors="replace").count("sendfile(")
        except FileNotFoundError:
            return 0

    def peak_rss(self) -> dict[int, int]:
        """``VmHWM`` in bytes of each process in the server's process group."""
        group = os.getpgid(self.server.process.pid)
        peaks: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                if os.getpgid(int(entry)) != group:
                    continue
                status = Path(f"/proc/{entry}/status").read_text()
                line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
                peaks[int(entry)] = int(line.split()[1]) * 1024
        return peaks

    def download(self, route: str, size: int, whole: bool = True) -> str:
        """GET the file of ``size`` bytes by ``route``, reading it in blocks; its token.

        With ``whole`` false, a response that ends early is accepted.
        """
        token = uuid.uuid4().hex[:16]
        conn = http.client.HTTPConnection(HOST, self.server.port, timeout=30)
        try:
            conn.request("GET", f"{route}?token={token}&size={size}")
            response = conn.getresponse()
            assert response.status == 200, self.server.describe()
            first = response.read(len(token))
            received = len(first)
            with contextlib.suppress(http.client.IncompleteRead):
                while block := response.read(1024 * 1024):
                    received += len(block)
        finally:
            conn.close()
        assert first == token.encode(), first
        assert received == size or not whole, f"{received} of {size} bytes by {route}"
        return token

    def hooks_of(self, token: str) -> list[dict[str, Any]]:
        return [r for r in read_records(self.records) if r.get("token") == token]

    def barrier(self) -> None:
        """A request whose own hook must have run, on the servers that serve one at a time
        after any earlier request; on threaded ones, after the requests whose hooks ran."""
        token = uuid.uuid4().hex[:16]
        conn = http.client.HTTPConnection(HOST, self.server.port, timeout=10)
        try:
            conn.request("GET", f"/hello?token={token}")
            assert conn.getresponse().read() == b"hello\n"
        finally:
            conn.close()
        wait_for_records(self.records, lambda rs: any(r.get("token") == token for r in rs))


@pytest.fixture(scope="module", autouse=True)
def _one_malloc_arena() -> Iterator[None]:
    """Servers started here get one glibc malloc arena for all their threads.

    Otherwise a request served by a thread that has not allocated before opens an arena of its
    own and adds its pages to the peak (6 MiB seen on waitress), whatever the request did.
    """
    saved = os.environ.get("MALLOC_ARENA_MAX")
    os.environ["MALLOC_ARENA_MAX"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["MALLOC_ARENA_MAX"]
        else:
            os.environ["MALLOC_ARENA_MAX"] = saved


@pytest.fixture(scope="module", params=ALL_SERVERS)
def traced(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Traced]:
    name: str = request.param
    if STRACE is None:
        pytest.skip("strace is not installed: apt-get install strace")
    if missing := anyserver.missing(name):
        pytest.skip(missing)
    with anyserver.server_dir(name, tmp_path_factory) as base:
        yield from _traced(name, base)


def _traced(name: str, base: Path) -> Iterator[Traced]:
    records, files = base / "records", base / "files"
    records.mkdir()
    files.mkdir()
    trace = base / "sendfile.strace"
    assert STRACE is not None
    # --seccomp-bpf stops the server only at sendfile(), not at every system call.
    prefix = [STRACE, "-f", "-qq", "--seccomp-bpf", "-e", "trace=sendfile", "-e", "signal=none"]
    prefix += ["-o", os.fspath(trace)]
    env = {RECORD_DIR_ENV: os.fspath(records), TMP_DIR_ENV: os.fspath(files)}
    with anyserver.run(name, APP, env=env, log_dir=base, command_prefix=prefix) as server:
        yield Traced(server, trace, records)
    left = sorted(os.listdir(files))
    for bare in (f for f in left if f.startswith(BARE_PREFIX)):
        os.unlink(files / bare)
    assert [f for f in left if not f.startswith(BARE_PREFIX)] == [], f"left under {name}"


def test_sendfile_kept_and_memory_flat(traced: Traced) -> None:
    name = traced.server.name
    for route in ("/bare/file", "/ours/file"):  # the first requests allocate what a server keeps
        traced.download(route, WARM_UP)
    traced.barrier()

    calls_before = traced.sendfile_calls()
    traced.download("/bare/file", SIZE, whole=name not in CUTS_BARE_SHORT)
    traced.barrier()
    calls_bare = traced.sendfile_calls() - calls_before
    peaks_bare = traced.peak_rss()

    token = traced.download("/ours/file", SIZE)
    # The hook runs when the server closes the body, which a threaded server may do after the
    # client has read it all; then the barrier, after which a second run would show.
    wait_for_records(
        traced.records,
        lambda rs: any(r.get("token") == token and r["event"] == "deleted" for r in rs),
    )
    traced.barrier()
    calls_ours = traced.sendfile_calls() - calls_before - calls_bare
    peaks_ours = traced.peak_rss()

    # A process started since the bare download (a server that forks on demand) would count
    # whole, as if our download had cost all of it: that comparison is not like with like.
    started = sorted(set(peaks_ours) - set(peaks_bare))
    assert not started, f"{name}: processes {started} started after the bare download"
    growth = max(peaks_ours[pid] - peaks_bare[pid] for pid in peaks_ours)
    print(
        f"\n{name}: sendfile() calls {calls_bare} as shipped, {calls_ours} through the "
        f"middleware; peak RSS {max(peaks_bare.values()) / MIB:.1f} MiB after the bare "
        f"download, +{growth / MIB:.2f} MiB after ours"
    )
    deleted = [r for r in traced.hooks_of(token) if r["event"] == "deleted"]
    assert [(r["via"], r["existed"]) for r in deleted] == [("add_cleanup", True)]
    assert (calls_bare > 0) == SENDS_WITH_SENDFILE[name], (
        f"{name} as shipped made {calls_bare} sendfile() calls: {traced.server.describe()}"
    )
    assert (calls_ours > 0) == (calls_bare > 0), (
        f"{name}: {calls_ours} sendfile() calls through the middleware, {calls_bare} without"
    )
    assert growth <= 5 * MIB, f"{name}: peak RSS grew {growth / MIB:.1f} MiB over the bare download"
