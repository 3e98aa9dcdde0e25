"""Run WSGI test apps under real servers in subprocesses, and observe them from outside.

The harness for tests that need a real server rather than an in-process WSGI call: the server's
own ``close()`` path, its ``wsgi.file_wrapper`` and ``sendfile()``, and its reaction to a client
that goes away are exactly what the middleware has to get right.

Servers (:data:`SERVERS`): ``gunicorn-sync``, ``gunicorn-gthread``, ``waitress``, ``werkzeug``
(the threaded server that ``werkzeug.serving.run_simple`` runs) and ``wsgiref``
(``wsgiref.simple_server``, single-threaded, never uses ``sendfile()``).

Starting one::

    from serverkit import RECORD_DIR_ENV, http_get, run_server, wait_for_records

    with run_server("waitress", "server_app:application", env={RECORD_DIR_ENV: str(d)}) as srv:
        response = http_get(srv.url + "/hello?token=abc")

* The listening socket is bound here, on 127.0.0.1 port 0 (so the kernel picks a free port and
  no other process can take it in between), and handed to the child as an inherited file
  descriptor: gunicorn gets ``--bind fd://N``, the others are started by this module run as a
  script (``python serverkit.py SERVER FD APP``).
* ``APP`` is ``"module:attr"``; the child's ``PYTHONPATH`` starts with ``tests/apps`` and
  ``tests``, so the apps there (and this module) are importable in the server.
* :func:`run_server` returns once the server answered an HTTP request, and always stops the
  server and reaps it: SIGTERM, then SIGKILL to its whole process group if it does not exit in
  time. The server's stdout and stderr go to a log file, shown in every failure message.

Hooks are recorded outside the server process: apps call :func:`record`, which appends one JSON
line per event to ``records.jsonl`` in the directory named by ``$CLEANUP_RECORD_DIR``, with a
single ``O_APPEND`` write, so lines written by several threads or worker processes never
interleave. The test reads them back with :func:`read_records` / :func:`wait_for_records`.

For raw client behaviour there are :func:`http_get` (``http.client`` with a timeout) and
:func:`disconnect_mid_body` (reads the headers and a few body bytes, then resets the connection).
Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import importlib.util
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "CLIENT_GONE",
    "HOST",
    "MORE_SERVERS",
    "RECORD_DIR_ENV",
    "SENDFILE_SERVERS",
    "SERVERS",
    "Disconnected",
    "HttpResponse",
    "Server",
    "Site",
    "child_env",
    "disconnect_mid_body",
    "http_get",
    "launch",
    "read_records",
    "record",
    "run_server",
    "server_missing",
    "start_server",
    "wait_for_records",
    "write_sendfile_probe_config",
]

#: Every server the harness can start.
SERVERS = ("gunicorn-sync", "gunicorn-gthread", "waitress", "werkzeug", "wsgiref")
#: More servers it can start, where installed (:func:`server_missing` says why not):
#: gunicorn's gevent and eventlet workers, cheroot (CherryPy's server), bjoern and meinheld.
#: mod_wsgi, which runs under Apache, has a harness of its own (``tests/apps/fault_mod_wsgi.py``),
#: as uWSGI has; ``tests/anyserver.py`` starts any of them by name.
MORE_SERVERS = ("gunicorn-gevent", "gunicorn-eventlet", "cheroot", "bjoern", "meinheld")
#: gunicorn 26 removed the eventlet worker: it runs from a virtual environment of its own with
#: gunicorn 25.3 and eventlet (``make test-servers`` makes it); ``$EVENTLET_PYTHON`` names another.
EVENTLET_PYTHON = Path(
    os.environ.get(
        "EVENTLET_PYTHON", Path(__file__).resolve().parent.parent / ".venv-eventlet/bin/python"
    )
)
# What each of MORE_SERVERS imports, and how to install it.
_REQUIREMENTS = {
    "gunicorn-gevent": ("gevent", "pip install gevent (the 'test' extra)"),
    "cheroot": ("cheroot", "pip install cheroot (the 'test' extra)"),
    "bjoern": (
        "bjoern",
        "it compiles against libev: apt-get install libev-dev, then make test-servers "
        "(pip install bjoern)",
    ),
    "meinheld": (
        "meinheld",
        "make test-servers (pip install --no-deps meinheld: its greenlet<0.5 pin does not "
        "build on Python 3.10+, and it runs with the greenlet that gevent brings)",
    ),
}
#: The servers that send ``wsgi.file_wrapper`` bodies with ``sendfile()``.
SENDFILE_SERVERS = ("gunicorn-sync", "gunicorn-gthread")

#: What a server's ``close()`` path is handling when the client reset the connection, on the
#: servers that tell: the exception types' names, as an ``enter_context`` witness records them.
CLIENT_GONE = frozenset({"BrokenPipeError", "ConnectionResetError", "ClientDisconnected"})

#: Environment variable naming the directory :func:`record` writes to.
RECORD_DIR_ENV = "CLEANUP_RECORD_DIR"
RECORD_FILE = "records.jsonl"

TESTS_DIR = Path(__file__).resolve().parent
APPS_DIR = TESTS_DIR / "apps"
HOST = "127.0.0.1"


# --------------------------------------------------------------------------------------------
# Records: written by the apps inside the server, read by the tests.


def record(event: str, **fields: Any) -> None:
    """Append one event (a JSON object) to the record file; call it from inside the server.

    The line carries ``event``, the writer's ``pid`` and ``thread`` and ``fields`` (which must be
    JSON-serialisable). It is written with one ``write()`` on an ``O_APPEND`` descriptor, so
    concurrent writers never interleave.

    :raises RuntimeError: ``$CLEANUP_RECORD_DIR`` is not set (a silent no-op would only show up
        later, as a test waiting in vain).
    """
    directory = os.environ.get(RECORD_DIR_ENV)
    if not directory:
        raise RuntimeError(f"record({event!r}): set ${RECORD_DIR_ENV} to a directory")
    line = json.dumps(
        {"event": event, "pid": os.getpid(), "thread": threading.get_ident(), **fields}
    )
    fd = os.open(
        os.path.join(directory, RECORD_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
    )
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_records(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete record written so far to ``directory``, oldest first."""
    try:
        data = (Path(directory) / RECORD_FILE).read_bytes()
    except FileNotFoundError:
        return []
    # A line still being written has no newline yet: leave it for the next read.
    return [json.loads(line) for line in data.split(b"\n")[:-1] if line]


def wait_for_records(
    directory: str | os.PathLike[str],
    predicate: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 10.0,
    interval: float = 0.02,
) -> list[dict[str, Any]]:
    """Poll ``directory`` until ``predicate(records)`` is true; return those records.

    Hooks run when the server closes the body, which may be after the client has read the last
    byte, so tests wait for them here rather than assume they already ran.

    :raises AssertionError: the predicate was still false after ``timeout`` seconds; the message
        lists the last records seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(directory)
        if predicate(records):
            return records
        if time.monotonic() >= deadline:
            shown = "\n".join(json.dumps(r) for r in records[-30:]) or "(none)"
            raise AssertionError(
                f"records in {directory} did not satisfy {predicate!r} within {timeout} s; "
                f"last {min(len(records), 30)} of {len(records)}:\n{shown}"
            )
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Servers.


@dataclass
class Server:
    """A running server subprocess; made by :func:`run_server`."""

    name: str
    app: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    host: str = HOST
    # Stop by signalling the whole process group: a server run under strace is strace's child.
    signal_group: bool = False

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        """Whether the server process (the gunicorn arbiter, for gunicorn) is still running."""
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and reap it; kill its process group if it does not exit in time.

        Safe to call more than once.
        """
        proc = self.process
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if self.signal_group:
                    os.killpg(proc.pid, signal.SIGTERM)
                else:
                    proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        # Gunicorn workers notice a dead arbiter only at their next check; the server runs in a
        # session of its own (start_new_session), so its group id is its pid and this reaches
        # only processes it started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def describe(self) -> str:
        """A summary for failure messages: name, app, exit status and the server log."""
        status = "running" if self.alive() else f"exited with {self.process.returncode}"
        return f"{self.name} serving {self.app} ({status}); server log:\n{self.log()}"


class Site:
    """A running server and the directories its app writes to: records and files."""

    def __init__(self, server: Server, records: Path, files: Path) -> None:
        self.server = server
        self.records = records
        self.files = files

    @property
    def name(self) -> str:
        return self.server.name

    def of(self, token: str, event: str | None = None) -> list[dict[str, Any]]:
        """The records of the request with ``token`` (of one ``event``), oldest first."""
        return [
            r
            for r in read_records(self.records)
            if r.get("token") == token and (event is None or r["event"] == event)
        ]


def server_missing(name: str) -> str | None:
    """Why server ``name`` of :data:`MORE_SERVERS` cannot run here, or None when it can."""
    if name == "gunicorn-eventlet":
        if EVENTLET_PYTHON.exists():
            return None
        return (
            f"gunicorn-eventlet: {EVENTLET_PYTHON} is missing; make test-servers makes it "
            "(gunicorn 25.3, the last with the eventlet worker, and eventlet)"
        )
    module, install = _REQUIREMENTS[name]
    if importlib.util.find_spec(module) is None:
        return f"{name}: {module} is not installed; {install}"
    return None


def _gunicorn_version() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(part) for part in version("gunicorn").split(".")[:2] if part.isdigit())


def _command(
    name: str, fd: int, app: str, gunicorn_config: str | os.PathLike[str] | None
) -> list[str]:
    """The command line that starts server ``name`` on the inherited descriptor ``fd``."""
    if name.startswith("gunicorn-"):
        python = EVENTLET_PYTHON if name == "gunicorn-eventlet" else sys.executable
        cmd = [os.fspath(python), "-m", "gunicorn", "--bind", f"fd://{fd}", "--workers", "1"]
        if name == "gunicorn-gthread":
            cmd += ["--worker-class", "gthread", "--threads", "4"]
        else:
            cmd += ["--worker-class", name.removeprefix("gunicorn-")]
        # Short grace, so that stopping with a request still hanging does not take 30 s.
        cmd += ["--graceful-timeout", "3", "--timeout", "30"]
        if _gunicorn_version() >= (25, 1):
            # Else every gunicorn of the user shares one control socket, $HOME/.gunicorn/...
            cmd.append("--no-control-socket")
        if gunicorn_config is not None:
            cmd += ["--config", os.fspath(gunicorn_config)]
        return [*cmd, app]
    if name in SERVERS or name in MORE_SERVERS:
        return [sys.executable, os.fspath(Path(__file__).resolve()), name, str(fd), app]
    raise ValueError(f"unknown server {name!r}; choose from {', '.join((*SERVERS, *MORE_SERVERS))}")


def child_env(
    env: Mapping[str, str] | None, pythonpath: Sequence[str | os.PathLike[str]] = ()
) -> dict[str, str]:
    """The environment of a server child: ours, with ``tests/apps`` and ``tests`` (after
    ``pythonpath``) on its module path, unbuffered output, and ``env`` over it."""
    child = dict(os.environ)
    # Settings meant for another gunicorn must not leak into ours.
    child.pop("GUNICORN_CMD_ARGS", None)
    paths = [os.fspath(p) for p in (*pythonpath, APPS_DIR, TESTS_DIR)]
    if child.get("PYTHONPATH"):
        paths.append(child["PYTHONPATH"])
    child["PYTHONPATH"] = os.pathsep.join(paths)
    child["PYTHONUNBUFFERED"] = "1"
    child.update(env or {})
    return child


def start_server(
    name: str,
    app: str,
    *,
    env: Mapping[str, str] | None = None,
    pythonpath: Sequence[str | os.PathLike[str]] = (),
    gunicorn_config: str | os.PathLike[str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    ready_path: str | None = "/__serverkit_ready__",
    startup_timeout: float = 20.0,
    command_prefix: Sequence[str] = (),
) -> Server:
    """Start ``app`` under server ``name`` and wait until it answers; see :func:`run_server`.

    The caller must call :meth:`Server.stop`; prefer :func:`run_server`, which always does.
    Without ``log_dir`` the log goes to a new temporary directory that is left in place.
    """
    listener, port = listening_socket()
    fd = listener.fileno()
    return launch(
        name,
        app,
        [*command_prefix, *_command(name, fd, app, gunicorn_config)],
        listener=listener,
        port=port,
        env=child_env(env, pythonpath),
        log_path=new_log_path(log_dir, name),
        pass_fds=(fd,),
        ready_path=ready_path,
        startup_timeout=startup_timeout,
        signal_group=bool(command_prefix),
    )


def launch(
    name: str,
    app: str,
    command: Sequence[str],
    *,
    listener: socket.socket,
    port: int,
    env: Mapping[str, str],
    log_path: Path,
    pass_fds: Sequence[int] = (),
    stdin: int | socket.socket = subprocess.DEVNULL,
    ready_path: str | None,
    startup_timeout: float,
    signal_group: bool = False,
) -> Server:
    """Run ``command``, a server listening on ``listener``, and wait until it answers.

    The server gets its own process group (so that :meth:`Server.stop` can kill its workers
    with it) and writes its output to ``log_path``; it is stopped if it does not answer. Our
    copy of the listening socket is closed as soon as the child holds it: otherwise a dead
    server's port would queue connections instead of refusing them.
    """
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command,
                stdin=stdin,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=pass_fds,
                start_new_session=True,
            )
    finally:
        listener.close()
    server = Server(
        name=name,
        app=app,
        port=port,
        process=process,
        log_path=log_path,
        signal_group=signal_group,
    )
    try:
        wait_until_ready(server, ready_path, startup_timeout)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def run_server(
    name: str,
    app: str,
    *,
    env: Mapping[str, str] | None = None,
    pythonpath: Sequence[str | os.PathLike[str]] = (),
    gunicorn_config: str | os.PathLike[str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    ready_path: str | None = "/__serverkit_ready__",
    startup_timeout: float = 20.0,
    command_prefix: Sequence[str] = (),
) -> Iterator[Server]:
    """Run ``app`` (``"module:attr"``) under server ``name`` for the ``with`` block.

    :param env: extra environment variables for the server, e.g. ``{RECORD_DIR_ENV: path}``.
    :param pythonpath: directories put before ``tests/apps`` and ``tests`` on the child's path.
    :param gunicorn_config: a gunicorn config file (``--config``); gunicorn servers only.
    :param log_dir: where the server log goes; by default a temporary directory that is removed
        when the server stops.
    :param ready_path: the path requested to learn that the server answers; any HTTP status
        counts. ``None`` waits only for the process to be running (the socket already listens).
    :param startup_timeout: seconds the server gets to answer before the start fails with its
        log in the message.
    :param command_prefix: put before the server's command, e.g. ``strace -f -o FILE``; the
        server then runs as its child, in the same process group, which stop() signals whole.

    Pytest fixture::

        @pytest.fixture(scope="module", params=SERVERS)
        def server(request, tmp_path_factory):
            with run_server(request.param, "server_app:application") as srv:
                yield srv
    """
    if gunicorn_config is not None and not name.startswith("gunicorn"):
        raise ValueError(f"gunicorn_config given for {name!r}, which is not gunicorn")
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="serverkit-"))
        server = start_server(
            name,
            app,
            env=env,
            pythonpath=pythonpath,
            gunicorn_config=gunicorn_config,
            log_dir=log_dir,
            ready_path=ready_path,
            startup_timeout=startup_timeout,
            command_prefix=command_prefix,
        )
        # Registered after the directory, so it runs first: the server stops, then its log goes.
        stack.callback(server.stop)
        yield server


def new_log_path(log_dir: str | os.PathLike[str] | None, name: str) -> Path:
    """A fresh log file name for server ``name``; a new temporary directory without ``log_dir``."""
    directory = (
        Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="serverkit-"))
    )
    return directory / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"


def listening_socket() -> tuple[socket.socket, int]:
    """A socket listening on an ephemeral port of 127.0.0.1, for a server to inherit; its port.

    Listening before the server starts means no port race; the caller closes its copy once the
    child holds it.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(128)
    except BaseException:
        listener.close()
        raise
    return listener, listener.getsockname()[1]


def wait_until_ready(server: Server, ready_path: str | None, timeout: float) -> None:
    """Return once the server answered a request on ``ready_path`` with any status line.

    The socket listens before the server runs, so a connection alone proves nothing: the probe
    sends a request and waits for the first bytes of an answer, checking all along that the
    process is still alive.
    """
    deadline = time.monotonic() + timeout
    if ready_path is None:
        if not server.alive():
            raise RuntimeError(f"server failed to start: {server.describe()}")
        return
    request = f"GET {ready_path} HTTP/1.0\r\nHost: {HOST}:{server.port}\r\n\r\n".encode()
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"server exited before answering: {server.describe()}")
        try:
            with socket.create_connection((HOST, server.port), timeout=1.0) as sock:
                sock.sendall(request)
                answer = b""
                while time.monotonic() < deadline and server.alive():
                    readable, _, _ = select.select([sock], [], [], 0.1)
                    if not readable:
                        continue
                    chunk = sock.recv(16)
                    answer += chunk
                    if answer.startswith(b"HTTP/"):
                        return
                    if not chunk or not b"HTTP/".startswith(answer):
                        break  # closed, or not HTTP: the server is not serving yet; retry
        except OSError as exc:
            last_error = exc
        time.sleep(0.05)
    raise RuntimeError(
        f"server did not answer GET {ready_path} within {timeout} s "
        f"(last error: {last_error!r}): {server.describe()}"
    )


# --------------------------------------------------------------------------------------------
# Clients.


@dataclass
class HttpResponse:
    """A complete response read by :func:`http_get`."""

    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


def _check_local(host: str) -> None:
    if host not in (HOST, "localhost"):
        raise ValueError(f"the test harness only talks to {HOST}, not {host!r}")


def http_get(
    url: str, *, timeout: float = 10.0, headers: Mapping[str, str] | None = None
) -> HttpResponse:
    """GET ``url`` (on 127.0.0.1) and read the whole body; every socket operation times out.

    Statuses other than 200 are returned, not raised: tests check them.
    """
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    _check_local(parts.hostname)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", target, headers=dict(headers or {}))
        response = conn.getresponse()
        body = response.read()
        return HttpResponse(
            status=response.status,
            headers={k.lower(): v for k, v in response.getheaders()},
            body=body,
        )
    finally:
        conn.close()


@dataclass
class Disconnected:
    """What :func:`disconnect_mid_body` saw before it reset the connection."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names
    # Bytes received after the headers (chunk framing included, if the server chunked the
    # body): at least the ones asked for, unless eof.
    body_bytes: int = 0
    eof: bool = False  # the server ended the response before enough bytes arrived


def disconnect_mid_body(
    host: str, port: int, path: str, read_bytes: int, *, timeout: float = 10.0
) -> Disconnected:
    """Request ``path``, read the headers and ``read_bytes`` of body, then reset the connection.

    The socket is closed with ``SO_LINGER`` 0, so the kernel sends RST instead of FIN: the
    server's next write fails the way it does when a real client goes away.
    """
    _check_local(host)
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed before the headers: {data!r}")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        result = Disconnected(status=int(status_line.split()[1]))
        for line in header_lines:
            key, _, value = line.partition(":")
            result.headers[key.strip().lower()] = value.strip()
        received = len(body)
        while received < read_bytes:
            chunk = sock.recv(min(65536, read_bytes - received))
            if not chunk:
                result.eof = True
                break
            received += len(chunk)
        result.body_bytes = received
        return result
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


# --------------------------------------------------------------------------------------------
# Instrumentation.

_SENDFILE_PROBE = '''\
"""Gunicorn config written by serverkit: record what Response.sendfile() returns."""

from urllib.parse import parse_qs


def post_worker_init(worker):
    from gunicorn.http.wsgi import Response

    from serverkit import record

    original = Response.sendfile

    def sendfile(self, respiter):
        token = parse_qs(self.req.query).get("token", [None])[0]
        try:
            result = original(self, respiter)
        except BaseException as exc:
            record("sendfile", path=self.req.path, token=token, result=None,
                   error=type(exc).__name__)
            raise
        record("sendfile", path=self.req.path, token=token, result=result)
        return result

    Response.sendfile = sendfile
'''


def write_sendfile_probe_config(directory: str | os.PathLike[str]) -> Path:
    """Write a gunicorn config file that records each ``Response.sendfile()`` call; return it.

    Each call adds a ``sendfile`` record with the request ``path``, its ``token`` query
    parameter and the ``result`` (``True`` when the body went out by ``sendfile()``; ``None``
    with an ``error`` when it raised). Gunicorn calls it only for bodies that are its own
    ``wsgi.file_wrapper`` objects, so a wrapped body leaves no record at all.
    """
    path = Path(directory) / "sendfile_probe.gunicorn.py"
    path.write_text(_SENDFILE_PROBE)
    return path


# --------------------------------------------------------------------------------------------
# The child side: ``python serverkit.py SERVER FD MODULE:ATTR`` for the non-gunicorn servers.


def _load_app(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    app: Any = importlib.import_module(module_name)
    for part in (attr or "application").split("."):
        app = getattr(app, part)
    return app


def _serve(name: str, fd: int, app_spec: str) -> None:
    app = _load_app(app_spec)
    sock = socket.socket(fileno=fd)
    if name == "waitress":
        import waitress

        waitress.serve(app, sockets=[sock], threads=4)
    elif name == "werkzeug":
        from werkzeug.serving import make_server

        # What run_simple(threaded=True) runs once it has no reloader to start.
        srv = make_server(HOST, sock.getsockname()[1], app, threaded=True, fd=sock.detach())
        srv.serve_forever()
    elif name == "wsgiref":
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

        wsgi_server = WSGIServer(sock.getsockname(), WSGIRequestHandler, bind_and_activate=False)
        wsgi_server.socket.close()
        wsgi_server.socket = sock
        # What server_bind() sets up, minus the bind: the socket is bound and listening.
        wsgi_server.server_name = HOST
        wsgi_server.server_port = sock.getsockname()[1]
        wsgi_server.setup_environ()
        wsgi_server.set_app(app)
        wsgi_server.serve_forever()
    elif name == "cheroot":
        from cheroot.wsgi import Server as CherootServer

        # cheroot adopts a listening socket on fd 3 under systemd's socket activation.
        if fd != 3:
            os.dup2(fd, 3)
            sock.close()
        os.environ["LISTEN_PID"] = str(os.getpid())
        CherootServer((HOST, 0), app, numthreads=4).safe_start()
    elif name == "bjoern":
        import bjoern

        bjoern.server_run(sock, app)
    elif name == "meinheld":
        from meinheld import server as meinheld_server

        meinheld_server.set_listen_socket(sock.detach())
        meinheld_server.run(app)
    else:
        raise SystemExit(f"serverkit: unknown server {name!r}")


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
