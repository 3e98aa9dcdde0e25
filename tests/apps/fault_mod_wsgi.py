"""Apache with mod_wsgi for the real-server tests, in the manner of :func:`serverkit.run_server`.

mod_wsgi comes from the ``mod_wsgi`` package on PyPI, whose ``mod_wsgi-express`` builds an
Apache configuration and runs Apache in the foreground. The package compiles against Apache's
headers, so it needs Debian's ``apache2`` and ``apache2-dev`` (``make test-servers`` installs it
after them). :func:`mod_wsgi_missing` says why it cannot run here (tests skip with that reason);
:func:`run_mod_wsgi` starts it in daemon mode (the default: the application runs in a process of
its own that Apache's children talk to) or embedded mode (in Apache's children), and always stops
and reaps it.

Apache binds its own port: a free one is picked on 127.0.0.1 just before it starts (a start that
loses the port to another process is retried). Run as root, Apache serves as ``www-data``, so the
directories the apps write to are opened up for it: make them in :func:`apache_tmp_dir`. The
environment reaches the application through a generated WSGI script, since Apache does not pass
its own environment on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from serverkit import HOST, Server, new_log_path, wait_until_ready

TESTS_DIR = Path(__file__).resolve().parent.parent
APPS_DIR = TESTS_DIR / "apps"
# mod_wsgi-express of the virtual environment `make test-servers` makes from Debian's Python:
# Apache's user must be able to read the interpreter, and a Python under /root (pyenv) it
# cannot. $MOD_WSGI_EXPRESS names another.
EXPRESS = Path(
    os.environ.get(
        "MOD_WSGI_EXPRESS", TESTS_DIR.parent / ".venv-apache" / "bin" / "mod_wsgi-express"
    )
)

_SCRIPT = """\
import os, sys
os.environ.update({env!r})
sys.path[:0] = {paths!r}
from {module} import {attr} as application
"""


def mod_wsgi_missing() -> str | None:
    """Why mod_wsgi cannot run here, or None when it can."""
    if not EXPRESS.exists():
        if shutil.which("apxs") is None:
            return (
                "mod_wsgi needs Apache and its headers: apt-get install apache2 apache2-dev, "
                "then make test-servers (pip install mod_wsgi)"
            )
        return (
            f"mod_wsgi is not installed ({EXPRESS} is missing): make test-servers, which "
            "installs it from PyPI into .venv-apache, made with Debian's /usr/bin/python3"
        )
    return None


@contextlib.contextmanager
def apache_tmp_dir(name: str) -> Iterator[Path]:
    """A fresh directory under the system's temporary directory that Apache's user can reach.

    Not one of pytest's: a pytest session that starts meanwhile (any other one on the machine)
    sets ``/tmp/pytest-of-USER`` back to mode 0700, and Apache's user then loses its way in.
    Removed afterwards.
    """
    directory = Path(tempfile.mkdtemp(prefix=f"cleanup-{name}-"))
    try:
        directory.chmod(0o755)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _open_up(directory: Path) -> None:
    """Let Apache's user write in ``directory`` and reach it from /."""
    directory.chmod(0o777)
    for parent in directory.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


@contextlib.contextmanager
def run_mod_wsgi(
    app: str,
    *,
    env: Mapping[str, str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    embedded: bool = False,
    threads: int = 4,
    command_prefix: Sequence[str] = (),
    startup_timeout: float = 30.0,
) -> Iterator[Server]:
    """Run ``app`` (``"module:attr"``) under Apache and mod_wsgi (one process of ``threads``).

    :param env: environment variables for the application (set in its process by the script).
    :param embedded: run the application in Apache's own children instead of a daemon process.
    :param command_prefix: put before the command, e.g. ``strace -f -o FILE``.
    """
    missing = mod_wsgi_missing()
    if missing:
        raise RuntimeError(missing)
    module, _, attr = app.partition(":")
    env = dict(env or {})
    if os.geteuid() == 0:
        for value in env.values():
            if os.path.isdir(value):
                _open_up(Path(value))
    with tempfile.TemporaryDirectory(prefix="mod_wsgi-") as root:
        server_root = Path(root)
        server_root.chmod(0o755)
        script = server_root / "app.wsgi"
        script.write_text(
            _SCRIPT.format(
                env=env,
                paths=[os.fspath(APPS_DIR), os.fspath(TESTS_DIR)],
                module=module,
                attr=attr or "application",
            )
        )
        script.chmod(0o644)
        log_path = new_log_path(log_dir, "mod_wsgi-embedded" if embedded else "mod_wsgi")
        for _attempt in range(3):
            port = _free_port()
            cmd = [
                *command_prefix,
                os.fspath(EXPRESS),
                "start-server",
                os.fspath(script),
                "--host",
                HOST,
                "--port",
                str(port),
                "--server-root",
                os.fspath(server_root / "apache"),
                "--processes",
                "1",
                "--threads",
                str(threads),
                # One Apache child, of 10 threads, for the whole run. By default express allows
                # two and keeps 10 threads spare, so a download in progress makes Apache start
                # a second child at its next once-a-second check: which requests that child
                # serves, and what it weighs, would depend on timing.
                "--max-clients",
                "10",
                "--enable-sendfile",
                "--log-to-terminal",
                "--shutdown-timeout",
                "3",
            ]
            if embedded:
                cmd.append("--embedded-mode")
            if os.geteuid() == 0:
                cmd += ["--user", "www-data", "--group", "www-data"]
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            server = Server(
                name="mod_wsgi-embedded" if embedded else "mod_wsgi",
                app=app,
                port=port,
                process=process,
                log_path=log_path,
                signal_group=bool(command_prefix),
            )
            try:
                wait_until_ready(server, "/__ready__", startup_timeout)
            except RuntimeError:
                server.stop()
                if "Address already in use" in server.log():
                    continue
                raise
            break
        else:
            raise RuntimeError(f"Apache found no free port in 3 attempts: {server.describe()}")
        try:
            yield server
        finally:
            server.stop()
