"""The examples work as their docstrings say.

* ``examples/demo.py`` (``make demo``) runs as a user would run it, as a subprocess: it must exit
  0 and report that the temporary file was sent by ``sendfile()`` and then deleted.
* ``examples/sqlite_app.py`` holds its SQLite connection open exactly as long as the response:
  checked in-process and under wsgiref, by looking for open file descriptors on the database
  file (Linux ``/proc``), not by replacing ``sqlite3``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from serverkit import http_get, run_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

needs_proc = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts open files through /proc"
)


def test_demo() -> None:
    # SIGINT on a timeout lets demo.py stop its gunicorn in its finally block before it dies.
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "demo.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        pytest.fail(f"demo.py did not finish in time:\n{output}")

    assert process.returncode == 0, output
    lines = output.splitlines()
    assert "temporary file deleted after the response: yes" in lines, output
    assert "sent with sendfile(): yes (gunicorn's Response.sendfile returned True)" in lines
    assert f"GET /download: status 200, {8 * 1024 * 1024} bytes received" in lines
    [temp_line] = [line for line in lines if line.startswith("temporary file on the server: ")]
    assert not os.path.exists(temp_line.partition(": ")[2])


# --------------------------------------------------------------------------------------------
# examples/sqlite_app.py


def _open_fds(pid: int | str, path: Path) -> int:
    """How many file descriptors of process ``pid`` are open on ``path``."""
    fd_dir = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fd_dir.iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed while we looked
            count += os.readlink(fd) == str(path)
    return count


@pytest.fixture
def sqlite_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # The module builds its application at import, from $SQLITE_APP_DB.
    monkeypatch.setenv("SQLITE_APP_DB", str(tmp_path / "example.sqlite3"))
    spec = importlib.util.spec_from_file_location("sqlite_app", EXAMPLES / "sqlite_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _call(app: Any) -> tuple[list[Any], Any]:
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    started: list[Any] = []
    body = app(environ, lambda status, headers, exc_info=None: started.append(status))
    return started, body


@needs_proc
def test_sqlite_connection_lives_as_long_as_the_response(
    sqlite_example: ModuleType, tmp_path: Path
) -> None:
    db = tmp_path / "example.sqlite3"
    assert _open_fds("self", db) == 0

    started, body = _call(sqlite_example.application)
    assert started == ["200 OK"]
    chunks = iter(body)
    first = [next(chunks) for _ in range(3)]
    assert first == [b"1\titem 1\n", b"2\titem 2\n", b"3\titem 3\n"]
    assert _open_fds("self", db) == 1  # still streaming: the connection is open
    rest = list(chunks)
    assert len(first) + len(rest) == 1000
    assert _open_fds("self", db) == 1  # all sent, but the server has not closed the body yet
    body.close()
    assert _open_fds("self", db) == 0


@needs_proc
def test_sqlite_connection_closed_when_body_closed_unstarted(
    sqlite_example: ModuleType, tmp_path: Path
) -> None:
    # A generator's finally would not run here; the middleware's close() does. Like a server,
    # the test keeps its iterator alive, so garbage collection cannot close the connection
    # for the example.
    _, body = _call(sqlite_example.application)
    chunks = iter(body)
    assert _open_fds("self", tmp_path / "example.sqlite3") == 1
    body.close()
    assert _open_fds("self", tmp_path / "example.sqlite3") == 0
    assert list(chunks) == []  # closed before its first chunk, it yields nothing more


@needs_proc
def test_sqlite_example_under_wsgiref(tmp_path: Path) -> None:
    db = tmp_path / "example.sqlite3"
    with run_server(
        "wsgiref", "sqlite_app:application", pythonpath=[EXAMPLES], env={"SQLITE_APP_DB": str(db)}
    ) as server:
        response = http_get(server.url + "/")
        assert response.status == 200
        lines = response.body.decode().splitlines()
        assert len(lines) == 1000 and lines[0] == "1\titem 1" and lines[-1] == "1000\titem 1000"
        # The server closes the body after the client has the last byte: wait for it, bounded.
        deadline = time.monotonic() + 10
        while _open_fds(server.process.pid, db) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _open_fds(server.process.pid, db) == 0, server.describe()
