"""The operator's entry points: gunicorn's factory syntax, the ``serve`` and ``check`` commands.

Gunicorn runs as a subprocess on a 127.0.0.1 socket bound here and inherited (``--bind fd://N``),
through :mod:`serverkit`. The application and the hooks the config names are this module's own
functions, imported in the server (``tests`` is on its path), and they leave records with
:func:`serverkit.record`, keyed by each request's ``token``. A request's hooks have all run when
its ``closed`` record (the first hook registered, so the last to run) is there; one more request
after them all is the barrier after which a second run would show.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import serverkit
from apps.config_hooks import HOOKS, events
from serverkit import RECORD_DIR_ENV, Server, read_records, run_server, wait_for_records
from werkzeug.test import create_environ, run_wsgi_app

from cleanup_middleware import CleanupMiddleware
from cleanup_middleware.cli import main
from cleanup_middleware.config import ENV_VAR

SCRIPT = Path(sys.executable).with_name("cleanup-middleware")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

CONFIG = f"""
[[hooks]]
call = "{HOOKS}:closed"

[[hooks]]
context = "{HOOKS}:transaction"
paths = ["/api/"]
methods = ["POST"]
"""


# --- the application and the hooks, run inside gunicorn ---------------------------------------


# --- helpers ----------------------------------------------------------------------------------


def send(server: Server, method: str, path: str) -> int:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


# (method, path, status, what the request's hooks record, in order)
CASES = [
    ("GET", "/page", 200, [("own", None), ("closed", "GET")]),
    (
        "POST",
        "/api/items",
        200,
        [("enter", None), ("own", None), ("exit", None), ("closed", "POST")],
    ),
    ("GET", "/api/items", 200, [("own", None), ("closed", "GET")]),  # the method filter
    ("POST", "/apiary", 200, [("own", None), ("closed", "POST")]),  # the path filter
    (
        "POST",
        "/api/fail",
        500,
        [("enter", None), ("own", None), ("exit", "RuntimeError"), ("closed", "POST")],
    ),
]


def check_config_hooks_run(server: Server, records: Path) -> None:
    """Every case once; then every request's hooks ran once each, as the filters say."""
    tokens = []
    for method, path, status, _ in [*CASES, ("GET", "/barrier", 200, None)]:
        token = uuid.uuid4().hex
        tokens.append(token)
        assert send(server, method, f"{path}?token={token}") == status, server.describe()
        wait_for_records(records, lambda rs, t=token, m=method: ("closed", m) in events(rs, t))
    final = read_records(records)
    for (method, path, _, expected), token in zip(CASES, tokens, strict=False):
        assert events(final, token) == expected, (method, path, server.describe())


@contextlib.contextmanager
def run_serve(
    args: list[str], env: dict[str, str], log_dir: Path, cwd: Path | None = None
) -> Iterator[Server]:
    """``cleanup-middleware serve ARGS --bind fd://N`` on a socket bound here, always reaped."""
    listener, port = serverkit.listening_socket()
    try:
        fd = listener.fileno()
        log_path = log_dir / "serve.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(SCRIPT), "serve", *args, "--bind", f"fd://{fd}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=serverkit.child_env(env),
                cwd=cwd,
                pass_fds=(fd,),
                start_new_session=True,
            )
    finally:
        listener.close()
    server = Server(
        name="cleanup-middleware serve", app=args[0], port=port, process=process, log_path=log_path
    )
    try:
        serverkit.wait_until_ready(server, "/ready", 20.0)
        yield server
    finally:
        server.stop()


def start_and_fail(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command that must not start a server (a gunicorn that fails, or ``check``);
    return what it did (bounded)."""
    return subprocess.run(
        command,
        cwd=cwd,
        env=serverkit.child_env({}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(autouse=True)
def _own_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main(["check", ...])`` puts the working directory on ``sys.path``, as the command must;
    the tests after it get the path as it was."""
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def records(tmp_path: Path) -> Path:
    directory = tmp_path / "records"
    directory.mkdir()
    return directory


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cleanup.toml"
    path.write_text(CONFIG)
    return path


BAD_CONFIG = f'[[hooks]]\ncall = "{HOOKS}:closd"\n'
BAD_MESSAGE = f"hooks[0].call: '{HOOKS}:closd': 'closd' not found (did you mean 'closed'?)"


# --- gunicorn's app-factory syntax ------------------------------------------------------------


def test_gunicorn_factory_syntax(tmp_path: Path, records: Path, config: Path) -> None:
    factory = f'cleanup_middleware:wrap("{HOOKS}:app", config="{config}")'
    env = {RECORD_DIR_ENV: str(records)}
    with run_server("gunicorn-sync", factory, env=env, log_dir=tmp_path) as server:
        check_config_hooks_run(server, records)


def test_gunicorn_factory_syntax_with_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "cleanup.toml"
    bad.write_text(BAD_CONFIG)
    factory = f'cleanup_middleware:wrap("{HOOKS}:app", config="cleanup.toml")'
    command = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", "1", factory]
    result = start_and_fail(command, tmp_path)
    assert result.returncode != 0
    assert f"cleanup.toml: {BAD_MESSAGE}" in result.stderr


def test_gunicorn_factory_syntax_with_a_config_not_in_utf8(tmp_path: Path) -> None:
    (tmp_path / "cleanup.toml").write_bytes(CONFIG.replace("/api/", "/café/").encode("latin-1"))
    factory = f'cleanup_middleware:wrap("{HOOKS}:app", config="cleanup.toml")'
    command = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--workers", "1", factory]
    result = start_and_fail(command, tmp_path)
    assert result.returncode != 0
    assert "cleanup.toml: is not UTF-8 (byte 0xe9 at line 7, column 15" in result.stderr
    assert "UnicodeDecodeError" not in result.stderr


# The hooks' filters against real servers' environs: a non-ASCII path as PEP 3333 passes it (the
# request's UTF-8 bytes read as latin-1), and a lower-case method, which werkzeug's dev server
# passes on as it came (gunicorn refuses one with 400).
FILTER_CONFIG = f"""
[[hooks]]
call = "{HOOKS}:closed"
paths = ["/café/"]

[[hooks]]
context = "{HOOKS}:transaction"
methods = ["POST"]
"""


@pytest.mark.parametrize("server_name", ["werkzeug", "gunicorn-sync"])
def test_non_ascii_path_and_lower_case_method_filters_on_a_real_server(
    tmp_path: Path, records: Path, server_name: str
) -> None:
    config = tmp_path / "cleanup.toml"
    config.write_text(FILTER_CONFIG, encoding="utf-8")
    # Only gunicorn takes the factory syntax: a module of the test's own wraps the app, with the
    # config named in the environment.
    (tmp_path / "filtered_app.py").write_text(
        f"from cleanup_middleware import wrap\napplication = wrap({HOOKS + ':app'!r})\n"
    )
    post = "post" if server_name == "werkzeug" else "POST"
    # (method, path, what the request's hooks record, in order)
    cases = [
        ("GET", "/caf%C3%A9/menu", [("own", None), ("closed", "GET")]),
        ("GET", "/cafe/menu", [("own", None)]),
        (post, "/orders", [("enter", None), ("own", None), ("exit", None)]),
        ("GET", "/barrier", [("own", None)]),
    ]
    env = {RECORD_DIR_ENV: str(records), ENV_VAR: str(config)}
    with run_server(
        server_name, "filtered_app:application", env=env, pythonpath=[tmp_path], log_dir=tmp_path
    ) as server:
        tokens = []
        for method, path, expected in cases:
            token = uuid.uuid4().hex
            tokens.append(token)
            assert send(server, method, f"{path}?token={token}") == 200, server.describe()
            wait_for_records(records, lambda rs, t=token, e=expected: len(events(rs, t)) >= len(e))
        final = read_records(records)
    for (method, path, expected), token in zip(cases, tokens, strict=True):
        assert events(final, token) == expected, (method, path, server.describe())


# --- cleanup-middleware serve -----------------------------------------------------------------


def test_serve(tmp_path: Path, records: Path, config: Path) -> None:
    # Gunicorn options before and after ours, all passed through to gunicorn's own parser.
    args = [f"{HOOKS}:app", "--workers", "1", "--config", str(config), "--access-logfile", "-"]
    args += ["--graceful-timeout", "3"]
    with run_serve(args, {RECORD_DIR_ENV: str(records)}, tmp_path) as server:
        check_config_hooks_run(server, records)
        assert '"POST /api/items?token=' in server.log(), "gunicorn's --access-logfile ignored"


def test_serve_takes_the_config_from_the_environment(
    tmp_path: Path, records: Path, config: Path
) -> None:
    env = {RECORD_DIR_ENV: str(records), ENV_VAR: str(config)}
    with run_serve([f"{HOOKS}:app", "--workers", "1"], env, tmp_path) as server:
        check_config_hooks_run(server, records)


def test_serve_with_a_bad_config(tmp_path: Path) -> None:
    (tmp_path / "cleanup.toml").write_text(BAD_CONFIG)
    command = [str(SCRIPT), "serve", f"{HOOKS}:app", "--config", "cleanup.toml"]
    result = start_and_fail([*command, "--bind", "127.0.0.1:0"], tmp_path)
    assert result.returncode != 0
    assert f"cleanup.toml: {BAD_MESSAGE}" in result.stderr
    # gunicorn's --check-config loads the application, and so the config, too.
    result = start_and_fail([*command, "--check-config"], tmp_path)
    assert result.returncode == 1
    assert f"cleanup.toml: {BAD_MESSAGE}" in result.stderr


# --- cleanup-middleware check -----------------------------------------------------------------


def test_check_prints_what_runs_for_which_requests(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f'{config}: 2 hooks, on-hook-error = "log"\n')
    lines = out.splitlines()
    assert lines[2].split() == ["hooks[0]", "call", f"{HOOKS}:closed", "any", "any"]
    assert lines[3].split() == ["hooks[1]", "context", f"{HOOKS}:transaction", "POST", "/api/"]


def test_check_a_pyproject_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [tool.cleanup-middleware]
            on-hook-error = "raise"
            [[tool.cleanup-middleware.hooks]]
            call = "{HOOKS}:closed"
            methods = ["get", "HEAD"]
            """
        )
    )
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f'{path}: 1 hook, on-hook-error = "raise"\n')
    assert out.splitlines()[2].split() == [
        "hooks[0]",
        "call",
        f"{HOOKS}:closed",
        "GET,",
        "HEAD",
        "any",
    ]


def test_check_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_text(BAD_CONFIG)
    assert main(["check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"cleanup-middleware check: {path}: {BAD_MESSAGE}; check the spelling\n"


def test_check_shows_paths_as_written_and_head_with_get(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_text(
        f'[[hooks]]\ncall = "{HOOKS}:closed"\nmethods = ["post", "GET"]\npaths = ["/café/"]\n',
        encoding="utf-8",
    )
    assert main(["check", str(path)]) == 0
    row = capsys.readouterr().out.splitlines()[2].split()
    assert row == ["hooks[0]", "call", f"{HOOKS}:closed", "GET,", "HEAD,", "POST", "/café/"]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (BAD_CONFIG.replace("closd", "clos\xe9").encode("latin-1"), "is not UTF-8 (byte 0xe9"),
        (b"\xef\xbb\xbf" + CONFIG.encode(), "starts with a UTF-8 byte-order mark"),
    ],
    ids=["latin-1", "utf-8-with-a-byte-order-mark"],
)
def test_check_a_config_not_in_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, problem: str
) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_bytes(data)
    assert main(["check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"cleanup-middleware check: {path}: {problem}")
    assert captured.err.endswith(
        "save it as UTF-8 without a byte-order mark (your editor's "
        "encoding setting, or iconv -f ENCODING -t UTF-8)\n"
    )


@pytest.mark.parametrize(
    ("module_text", "status", "message"),
    [
        (
            "import sys\nsys.exit()\n",
            1,
            "hooks[0].call: importing 'misbehaving_hooks' called sys.exit(None); a hook module "
            "must not exit when imported",
        ),
        (
            "import sys\nsys.exit(0)\n",
            1,
            "hooks[0].call: importing 'misbehaving_hooks' called sys.exit(0)",
        ),
        (
            "raise KeyboardInterrupt\n",
            130,
            "hooks[0].call: interrupted while importing 'misbehaving_hooks'",
        ),
    ],
    ids=["sys.exit()", "sys.exit(0)", "KeyboardInterrupt"],
)
def test_check_a_hook_module_that_exits_or_is_interrupted_at_import(
    tmp_path: Path, module_text: str, status: int, message: str
) -> None:
    """The installed command fails CI, with one line naming the file and entry, no traceback."""
    (tmp_path / "misbehaving_hooks.py").write_text(module_text)
    path = tmp_path / "cleanup.toml"
    path.write_text('[[hooks]]\ncall = "misbehaving_hooks:f"\n')
    result = subprocess.run(
        [str(SCRIPT), "check", str(path)],
        env=serverkit.child_env({}, (tmp_path,)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == status, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith(f"cleanup-middleware check: {path}: {message}"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_check_uses_the_environment(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV_VAR, str(config))
    assert main(["check"]) == 0
    assert capsys.readouterr().out.startswith(f"{config}: 2 hooks")


def test_check_needs_a_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(SystemExit) as info:
        main(["check"])
    assert info.value.code == 2
    assert f"name the config file, or set ${ENV_VAR}" in capsys.readouterr().err


def test_check_refuses_unknown_options(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", str(config), "--workers", "2"])
    assert info.value.code == 2
    assert "unrecognized arguments: --workers 2" in capsys.readouterr().err


def test_console_script(tmp_path: Path, config: Path) -> None:
    """The installed command, as CI would run it: exit status 0, then 1 for a mistake."""
    env = serverkit.child_env({})
    good = subprocess.run(
        [str(SCRIPT), "check", str(config)], env=env, capture_output=True, text=True, timeout=60
    )
    assert good.returncode == 0, good.stderr
    assert f"{HOOKS}:transaction" in good.stdout
    bad_path = tmp_path / "bad.toml"
    bad_path.write_text(BAD_CONFIG)
    bad = subprocess.run(
        [str(SCRIPT), "check", str(bad_path)], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1
    assert BAD_MESSAGE in bad.stderr


def test_the_example_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``examples/cleanup.toml``, which ``make demo`` serves, checks out and its hooks work."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    config = EXAMPLES / "cleanup.toml"
    assert main(["check", str(config)]) == 0
    assert "hooks:scratch_dir" in capsys.readouterr().out
    scratch_dirs: list[str] = []

    def view(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        scratch_dirs.append(environ["flask_download.scratch_dir"])
        assert os.path.isdir(scratch_dirs[0])
        start_response("200 OK", [])
        return [b""]

    errors = io.StringIO()
    environ = create_environ("/download", errors_stream=errors)
    run_wsgi_app(CleanupMiddleware(view, config=config), environ, buffered=True)
    assert len(scratch_dirs) == 1 and not os.path.exists(scratch_dirs[0])
    assert errors.getvalue() == "cleanup-middleware example: GET /download closed\n"


# --- from the application's folder ------------------------------------------------------------

FOLDER_APP = """
from serverkit import record

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""
FOLDER_HOOKS = """
from serverkit import record

def closed(environ):
    record("folder-hook", path=environ["PATH_INFO"])
"""


def app_folder(tmp_path: Path) -> Path:
    """A folder with an app, its hooks beside it and their config, on no module path."""
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "folder_app.py").write_text(FOLDER_APP)
    (folder / "folder_hooks.py").write_text(FOLDER_HOOKS)
    (folder / "cleanup.toml").write_text('[[hooks]]\ncall = "folder_hooks:closed"\n')
    return folder


def run_check(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed ``cleanup-middleware check ARGS``, run in ``cwd`` (bounded)."""
    return start_and_fail([str(SCRIPT), "check", *args], cwd)


def test_check_imports_hooks_from_the_working_directory_as_gunicorn_does(tmp_path: Path) -> None:
    folder = app_folder(tmp_path)
    result = run_check(["cleanup.toml"], folder)
    assert result.returncode == 0, result.stderr
    assert "folder_hooks:closed" in result.stdout
    # The project's own example, checked from its folder.
    result = run_check(["cleanup.toml"], EXAMPLES)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('cleanup.toml: 2 hooks, on-hook-error = "log"\n')


def test_check_takes_gunicorn_s_chdir_and_pythonpath(tmp_path: Path) -> None:
    folder = app_folder(tmp_path)
    result = run_check(["--chdir", "app", "cleanup.toml"], tmp_path)  # FILE is from DIR
    assert result.returncode == 0, result.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_check(["--pythonpath", f"{EXAMPLES},../app", "../app/cleanup.toml"], elsewhere)
    assert result.returncode == 0, result.stderr
    # Without them, the hooks are not found, and the error says where it looked.
    result = run_check([str(folder / "cleanup.toml")], elsewhere)
    assert result.returncode == 1
    assert f"can be imported from {elsewhere} or the PYTHONPATH" in result.stderr
    result = run_check(["--chdir", "nowhere", "cleanup.toml"], tmp_path)
    assert result.returncode == 2
    assert "--chdir nowhere: No such file or directory" in result.stderr


def test_serve_imports_hooks_from_the_working_directory(tmp_path: Path, records: Path) -> None:
    folder = app_folder(tmp_path)
    args = ["folder_app:app", "--config", "cleanup.toml", "--workers", "1"]
    with run_serve(args, {RECORD_DIR_ENV: str(records)}, tmp_path, cwd=folder) as server:
        assert send(server, "GET", "/from-the-folder") == 200
        wait_for_records(records, lambda rs: {"/ready", "/from-the-folder"} <= paths(rs))


def paths(records: list[dict[str, Any]]) -> set[str]:
    return {r["path"] for r in records if r["event"] == "folder-hook"}
