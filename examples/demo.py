"""Show the middleware at work: gunicorn sends a temporary file, then the file is deleted.

``make demo`` runs this. It starts gunicorn (one sync worker, 127.0.0.1, a free port) serving
``examples/flask_download.py`` with the cleanup hooks of ``examples/cleanup.toml``, through
gunicorn's app-factory syntax (``cleanup_middleware:wrap(...)``), downloads ``/download`` (a
freshly made temporary file, sent by ``send_file``) and reports:

* the temporary file's path and the bytes received;
* whether gunicorn sent it with ``sendfile()`` (a small gunicorn config, written here, records
  what ``Response.sendfile`` returns);
* whether the config's hooks ran (``examples/hooks.py``: a line in gunicorn's log, and the
  request's scratch directory removed);
* whether the file was deleted after the response (the view's ``response.call_on_close``).

It stops gunicorn and exits 0 only if the file was deleted.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
CLEANUP_CONFIG = EXAMPLES / "cleanup.toml"
APP = f'cleanup_middleware:wrap("flask_download:app", config={str(CLEANUP_CONFIG)!r})'
# What examples/hooks.py:log_closed writes to gunicorn's log for the download.
CLOSED_LINE = "cleanup-middleware example: GET /download closed"
SIZE = 8 * 1024 * 1024

# A gunicorn config that wraps Response.sendfile in the worker and appends its result (or the
# error it raised) to the file named by $DEMO_SENDFILE_LOG.
SENDFILE_PROBE = """\
import os


def post_worker_init(worker):
    from gunicorn.http.wsgi import Response

    original = Response.sendfile

    def sendfile(self, respiter):
        outcome = "raised"
        try:
            sent = original(self, respiter)
            outcome = str(sent)
            return sent
        finally:
            with open(os.environ["DEMO_SENDFILE_LOG"], "a") as log:
                log.write(f"{self.req.path} {outcome}\\n")

    Response.sendfile = sendfile
"""


def start_gunicorn(workdir: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start gunicorn on a free port of 127.0.0.1; return the process, the port and its log."""
    config = workdir / "gunicorn_demo.conf.py"
    config.write_text(SENDFILE_PROBE)
    log_path = workdir / "gunicorn.log"
    env = dict(
        os.environ,
        DEMO_SENDFILE_LOG=str(workdir / "sendfile.log"),
        FLASK_DOWNLOAD_TMPDIR=str(workdir),
    )
    env.pop("GUNICORN_CMD_ARGS", None)
    # Bind here, on port 0, and hand the socket to gunicorn: the port is free and stays ours.
    with socket.socket() as listener, open(log_path, "wb") as log:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        fd = listener.fileno()
        command = [
            sys.executable, "-m", "gunicorn",
            "--bind", f"fd://{fd}",
            "--workers", "1", "--worker-class", "sync",
            "--config", str(config),
            "--pythonpath", str(EXAMPLES),
            APP,
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            pass_fds=(fd,),
            start_new_session=True,  # its own process group: workers included in stop_gunicorn
        )
        return process, listener.getsockname()[1], log_path


def stop_gunicorn(process: subprocess.Popen[bytes]) -> None:
    """Stop gunicorn gracefully, or kill its process group after 10 s; always reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    # A worker left behind by a master that died would still be in the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def download(port: int, path: str) -> tuple[int, int, str]:
    """GET ``path``; return the status, the number of body bytes and the temp file header.

    Connections queue on the listening socket until the worker has booted, so the first
    request simply waits for it (up to the timeout).
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        received = 0
        while chunk := response.read(1024 * 1024):
            received += len(chunk)
        return response.status, received, response.getheader("X-Demo-Temp-File", "")
    finally:
        conn.close()


def wait_until_gone(path: str, timeout: float = 10.0) -> bool:
    """True once ``path`` no longer exists: the cleanup runs after the client got the body."""
    deadline = time.monotonic() + timeout
    while os.path.exists(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cleanup-demo-") as tmp:
        workdir = Path(tmp)
        process, port, log_path = start_gunicorn(workdir)
        try:
            print(f"gunicorn (sync worker) serving examples/flask_download.py on 127.0.0.1:{port}")
            try:
                status, received, temp_file = download(port, f"/download?size={SIZE}")
            except OSError as exc:
                print(f"the download failed: {exc!r}; gunicorn's log:\n{log_path.read_text()}")
                return 1
            print(f"GET /download: status {status}, {received} bytes received")
            print(f"temporary file on the server: {temp_file}")
            if status != 200 or received != SIZE or not temp_file:
                print(f"unexpected response; gunicorn's log:\n{log_path.read_text()}")
                return 1
            deleted = wait_until_gone(temp_file)
            sendfile_log = workdir / "sendfile.log"
            # One "PATH OUTCOME" line per Response.sendfile call.
            calls = sendfile_log.read_text().splitlines() if sendfile_log.exists() else []
        finally:
            stop_gunicorn(process)
        # Gunicorn stopped gracefully, so every hook of the download has run.
        hooks_ran = CLOSED_LINE in log_path.read_text() and not any(workdir.glob("scratch-*"))
        if calls == ["/download True"]:
            print("sent with sendfile(): yes (gunicorn's Response.sendfile returned True)")
        else:
            print(f"sent with sendfile(): no (Response.sendfile calls: {calls or 'none'})")
        print(
            "hooks of examples/cleanup.toml ran: "
            + ("yes (close logged, scratch directory removed)" if hooks_ran else "NO")
        )
        if deleted:
            print("temporary file deleted after the response: yes")
            return 0
        print("temporary file deleted after the response: NO, it is still there")
        return 1


if __name__ == "__main__":
    sys.exit(main())
