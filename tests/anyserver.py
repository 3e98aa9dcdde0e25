"""Start any server the tests know by name: serverkit's, uWSGI or Apache with mod_wsgi.

:mod:`serverkit` starts the servers of :data:`serverkit.SERVERS` and
:data:`serverkit.MORE_SERVERS`; uWSGI (``apps/fault_uwsgi.py``) and mod_wsgi
(``apps/fault_mod_wsgi.py``) have harnesses of their own, which import serverkit (so it cannot
import them). This module chooses among the three for the tests that run on every server::

    if reason := missing(name):
        pytest.skip(reason)
    with server_dir(name, tmp_path_factory) as base, run(name, APP, log_dir=base) as server:
        ...
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from apps.fault_mod_wsgi import apache_tmp_dir, mod_wsgi_missing, run_mod_wsgi
from apps.fault_uwsgi import run_uwsgi, uwsgi_missing
from serverkit import MORE_SERVERS, SERVERS, Server, run_server, server_missing

__all__ = ["ALL_SERVERS", "missing", "run", "server_dir"]

#: Every server, in the order the tests run them: ``mod_wsgi`` is daemon mode.
ALL_SERVERS = (*SERVERS, "uwsgi", *MORE_SERVERS, "mod_wsgi", "mod_wsgi-embedded")


def missing(name: str) -> str | None:
    """Why server ``name`` cannot run here, naming what installs it; None when it can."""
    if name == "uwsgi":
        return uwsgi_missing()
    if name.startswith("mod_wsgi"):
        return mod_wsgi_missing()
    if name in MORE_SERVERS:
        return server_missing(name)
    return None


@contextlib.contextmanager
def server_dir(name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh directory for the server's log and the files its app writes.

    For mod_wsgi one that Apache's user can reach (:func:`apps.fault_mod_wsgi.apache_tmp_dir`),
    removed afterwards; for the others one of pytest's.
    """
    if name.startswith("mod_wsgi"):
        with apache_tmp_dir(name) as directory:
            yield directory
    else:
        yield tmp_path_factory.mktemp(name)


@contextlib.contextmanager
def run(
    name: str,
    app: str,
    *,
    env: Mapping[str, str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    command_prefix: Sequence[str] = (),
) -> Iterator[Server]:
    """Run ``app`` (``"module:attr"``) under server ``name`` for the ``with`` block.

    The parameters are :func:`serverkit.run_server`'s; the server is always stopped and reaped.
    """
    manager: contextlib.AbstractContextManager[Server]
    if name == "uwsgi":
        manager = run_uwsgi(app, env=env, log_dir=log_dir, command_prefix=command_prefix)
    elif name.startswith("mod_wsgi"):
        manager = run_mod_wsgi(
            app,
            env=env,
            log_dir=log_dir,
            embedded=name == "mod_wsgi-embedded",
            command_prefix=command_prefix,
        )
    else:
        manager = run_server(name, app, env=env, log_dir=log_dir, command_prefix=command_prefix)
    with manager as server:
        yield server
