"""uWSGI for the real-server tests, in the manner of :func:`serverkit.run_server`.

uWSGI comes from the ``pyuwsgi`` wheel (``pip install pyuwsgi``): the server as a Python
extension module, run in a subprocess of its own. :func:`uwsgi_missing` says why it cannot run
here (tests skip with that reason); :func:`run_uwsgi` starts it and always stops and reaps it.

The listening socket is bound here on 127.0.0.1 port 0 and handed to uWSGI as its standard
input, which uWSGI adopts as an inherited socket (``--protocol http`` makes it speak HTTP), so no
port is ever guessed. uWSGI's ``wsgi.file_wrapper`` is a function that returns the object it is
given, and the server sends the body with ``sendfile()`` only when the application returns that
very object.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from serverkit import Server

TESTS_DIR = Path(__file__).resolve().parent.parent
APPS_DIR = TESTS_DIR / "apps"
HOST = "127.0.0.1"

_RUN = "import sys; from pyuwsgi import run; sys.argv[0] = 'uwsgi'; sys.exit(run())"


def uwsgi_missing() -> str | None:
    """Why uWSGI cannot run here, or None when it can."""
    if sys.platform == "win32":
        return "uWSGI does not run on Windows"
    if importlib.util.find_spec("pyuwsgi") is None:
        return "pyuwsgi is not installed (pip install pyuwsgi, part of the 'test' extra on Linux)"
    return None


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    child = dict(os.environ)
    paths = [os.fspath(APPS_DIR), os.fspath(TESTS_DIR)]
    if child.get("PYTHONPATH"):
        paths.append(child["PYTHONPATH"])
    child["PYTHONPATH"] = os.pathsep.join(paths)
    child["PYTHONUNBUFFERED"] = "1"
    child.update(env or {})
    return child


@contextlib.contextmanager
def run_uwsgi(
    app: str,
    *,
    env: Mapping[str, str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    threads: int = 4,
    startup_timeout: float = 20.0,
) -> Iterator[Server]:
    """Run ``app`` (``"module:attr"``) under uWSGI (one worker, ``threads`` threads)."""
    missing = uwsgi_missing()
    if missing:
        raise RuntimeError(missing)
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="uwsgi-"))
    log_path = log_dir / f"uwsgi-{os.getpid()}-{time.monotonic_ns()}.log"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        cmd = [
            sys.executable,
            "-c",
            _RUN,
            "--protocol=http",
            f"--module={app}",
            "--master",
            "--processes=1",
            f"--threads={threads}",
            "--enable-threads",
            "--die-on-term",
            "--need-app",
            "--disable-logging",
            "--buffer-size=32768",
        ]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                cmd,
                stdin=listener,  # uWSGI adopts a socket on fd 0 as its own
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(env),
                start_new_session=True,
            )
    finally:
        listener.close()
    server = Server(name="uwsgi", app=app, port=port, process=process, log_path=log_path)
    try:
        _wait_until_ready(server, startup_timeout)
        yield server
    finally:
        server.stop()


def _wait_until_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    request = f"GET /__ready__ HTTP/1.0\r\nHost: {HOST}:{server.port}\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"uWSGI exited before answering: {server.describe()}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection((HOST, server.port), timeout=1.0) as sock,
        ):
            sock.sendall(request)
            if sock.recv(16).startswith(b"HTTP/"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"uWSGI did not answer within {timeout} s: {server.describe()}")
