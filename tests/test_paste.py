"""The PasteDeploy filter: an ini pipeline with ``use = egg:cleanup-middleware``, loaded and served.

The ini file is loaded with PasteDeploy's ``loadapp`` (which finds the filter through the
distribution's ``paste.filter_app_factory`` entry point) and served on 127.0.0.1 by
``wsgiref`` in a thread, then by gunicorn's ``--paste``, which loads it the same way. The hooks
the cleanup config names are this module's functions; they leave records with
:func:`serverkit.record`, keyed by the request's ``token``.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from apps.config_hooks import HOOKS, events
from paste.deploy import loadapp
from serverkit import RECORD_DIR_ENV, http_get, read_records, run_server, wait_for_records

from cleanup_middleware import ConfigError

INI = f"""
[pipeline:main]
pipeline = cleanup app

[filter:cleanup]
use = egg:cleanup-middleware
config = %(here)s/cleanup.toml

[app:app]
use = call:{HOOKS}:app_factory
"""

CLEANUP_TOML = f"""
[[hooks]]
call = "{HOOKS}:closed"

[[hooks]]
context = "{HOOKS}:transaction"
paths = ["/api/"]
"""

# (path, status, what the request's hooks record, in order)
CASES = [
    ("/page", 200, [("own", None), ("closed", "GET")]),
    ("/api/items", 200, [("enter", None), ("own", None), ("exit", None), ("closed", "GET")]),
    (
        "/api/fail",
        500,
        [("enter", None), ("own", None), ("exit", "RuntimeError"), ("closed", "GET")],
    ),
]


def check_config_hooks_run(url: str, records: Path) -> None:
    """Each case once, then a barrier; each request's hooks ran once, as the filters say."""
    tokens = []
    for path, status in [*((case[0], case[1]) for case in CASES), ("/barrier", 200)]:
        token = uuid.uuid4().hex
        tokens.append(token)
        assert http_get(f"{url}{path}?token={token}").status == status
        wait_for_records(records, lambda rs, t=token: ("closed", "GET") in events(rs, t))
    final = read_records(records)
    for (path, _, expected), token in zip(CASES, tokens, strict=False):
        assert events(final, token) == expected, path


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(application: Any) -> Iterator[str]:
    """Serve ``application`` with wsgiref on 127.0.0.1 in a thread; yield its URL."""
    server = make_server("127.0.0.1", 0, application, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "records"
    directory.mkdir()
    monkeypatch.setenv(RECORD_DIR_ENV, str(directory))
    return directory


def write_ini(directory: Path, ini: str = INI, cleanup_toml: str = CLEANUP_TOML) -> Path:
    (directory / "cleanup.toml").write_text(cleanup_toml)
    path = directory / "app.ini"
    path.write_text(ini)
    return path


def test_loadapp_and_serve(tmp_path: Path, records: Path) -> None:
    application = loadapp(f"config:{write_ini(tmp_path)}")
    with serving(application) as url:
        check_config_hooks_run(url, records)


def test_gunicorn_paste(tmp_path: Path, records: Path) -> None:
    ini = write_ini(tmp_path)
    # gunicorn --paste loads the pipeline with loadapp too.
    env = {RECORD_DIR_ENV: str(records)}
    with run_server("gunicorn-sync", f"--paste={ini}", env=env, log_dir=tmp_path) as server:
        check_config_hooks_run(server.url, records)


def test_config_relative_to_the_ini_file(tmp_path: Path, records: Path) -> None:
    application = loadapp(f"config:{write_ini(tmp_path, INI.replace('%(here)s/', ''))}")
    with serving(application) as url:
        check_config_hooks_run(url, records)


def test_unknown_filter_option(tmp_path: Path) -> None:
    ini = write_ini(tmp_path, INI.replace("config =", "on_hook_error = raise\nconfig ="))
    with pytest.raises(ConfigError) as info:
        loadapp(f"config:{ini}")
    message = str(info.value)
    assert message.startswith(f"the cleanup filter section of {ini}: on_hook_error: unknown option")
    assert "the only option is config" in message


def test_bad_cleanup_config(tmp_path: Path) -> None:
    ini = write_ini(tmp_path, cleanup_toml=f'[[hooks]]\ncall = "{HOOKS}:closd"\n')
    with pytest.raises(ConfigError) as info:
        loadapp(f"config:{ini}")
    assert str(info.value).startswith(f"{tmp_path / 'cleanup.toml'}: hooks[0].call: ")
    assert "did you mean 'closed'" in str(info.value)
