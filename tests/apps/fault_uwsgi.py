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
import sys
from collections.abc import Iterator, Mapping, Sequence

from serverkit import Server, child_env, launch, listening_socket, new_log_path

_RUN = "import sys; from pyuwsgi import run; sys.argv[0] = 'uwsgi'; sys.exit(run())"


def uwsgi_missing() -> str | None:
    """Why uWSGI cannot run here, or None when it can."""
    if sys.platform == "win32":
        return "uWSGI does not run on Windows"
    if importlib.util.find_spec("pyuwsgi") is None:
        return "pyuwsgi is not installed (pip install pyuwsgi, part of the 'test' extra on Linux)"
    return None


@contextlib.contextmanager
def run_uwsgi(
    app: str,
    *,
    env: Mapping[str, str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    threads: int = 4,
    startup_timeout: float = 20.0,
    command_prefix: Sequence[str] = (),
) -> Iterator[Server]:
    """Run ``app`` (``"module:attr"``) under uWSGI (one worker, ``threads`` threads).

    :param command_prefix: put before the command, e.g. ``strace -f -o FILE``.
    """
    missing = uwsgi_missing()
    if missing:
        raise RuntimeError(missing)
    listener, port = listening_socket()
    cmd = [
        *command_prefix,
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
    server = launch(
        "uwsgi",
        app,
        cmd,
        listener=listener,
        port=port,
        env=child_env(env),
        log_path=new_log_path(log_dir, "uwsgi"),
        stdin=listener,  # uWSGI adopts a socket on fd 0 as its own
        ready_path="/__ready__",
        startup_timeout=startup_timeout,
        signal_group=bool(command_prefix),
    )
    try:
        yield server
    finally:
        server.stop()
