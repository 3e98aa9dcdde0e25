"""Config hooks in-process: loading, checking, what runs for which request, and every mistake.

Hooks named in the TOML files here are this module's own functions (``f"{__name__}:closed"``),
which record into :data:`EVENTS`. Each bad-config case checks that the error names the file, the
entry and the fix, and that the middleware is not built.
"""

from __future__ import annotations

import contextlib
import logging
import textwrap
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import create_environ, run_wsgi_app

from cleanup_middleware import (
    CleanupMiddleware,
    ConfigError,
    Hook,
    add_cleanup,
    enter_context,
    wrap,
)
from cleanup_middleware.config import ENV_VAR, load_config

EVENTS: list[tuple[Any, ...]] = []
HERE = __name__


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    EVENTS.clear()
    monkeypatch.delenv(ENV_VAR, raising=False)
    yield
    EVENTS.clear()


# --- hooks and apps the configs name ----------------------------------------------------------


def closed(environ: dict[str, Any]) -> None:
    EVENTS.append(("closed", environ["REQUEST_METHOD"], environ["PATH_INFO"]))


def closed_too(environ: dict[str, Any]) -> None:
    EVENTS.append(("closed_too", environ["PATH_INFO"]))


def failing(environ: dict[str, Any]) -> None:
    raise RuntimeError("hook failed")


@contextlib.contextmanager
def transaction(environ: dict[str, Any]) -> Iterator[None]:
    environ["test.transaction"] = True
    EVENTS.append(("enter", environ["PATH_INFO"]))
    try:
        yield
    except BaseException as exc:
        EVENTS.append(("exit", type(exc).__name__))
        raise
    EVENTS.append(("exit", None))


class Session:
    """A class is a factory too: ``Session(environ)`` is the context manager."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.path = environ["PATH_INFO"]

    def __enter__(self) -> Session:
        EVENTS.append(("session", self.path))
        return self

    def __exit__(self, *exc: object) -> None:
        EVENTS.append(("session closed", self.path))


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    EVENTS.append(("app", environ.get("test.transaction", False)))
    add_cleanup(environ, EVENTS.append, ("own",))
    if environ["PATH_INFO"].endswith("/fail"):
        raise ValueError("app failed")
    start_response("200 OK", [])
    return [b"ok"]


async def async_hook(environ: dict[str, Any]) -> None:
    pass


def generator_hook(environ: dict[str, Any]) -> Iterator[None]:
    yield


def two_args(environ: dict[str, Any], other: object) -> None:
    pass


NOT_CALLABLE = 42
A_CONTEXT_MANAGER = contextlib.nullcontext()


def toml(tmp_path: Path, text: str, name: str = "cleanup.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return lambda data: None


def serve(application: Any, method: str = "GET", path: str = "/") -> None:
    """Serve one request in-process, as a server would: read the body, then close it."""
    run_wsgi_app(application, create_environ(path, method=method), buffered=True)


def run(application: Any, method: str = "GET", path: str = "/") -> list[tuple[Any, ...]]:
    """Serve one request in-process; return (and forget) what it recorded."""
    serve(application, method, path)
    events = EVENTS[:]
    EVENTS.clear()
    return events


# --- what runs --------------------------------------------------------------------------------


def test_call_hook_runs_once_per_request_after_the_requests_own(tmp_path: Path) -> None:
    config = toml(tmp_path, f'[[hooks]]\ncall = "{HERE}:closed"\n')
    wrapped = CleanupMiddleware(app, config=config)
    for path in ("/a", "/b"):
        assert run(wrapped, path=path) == [("app", False), ("own",), ("closed", "GET", path)]


def test_context_hook_entered_before_the_app_and_told_of_success(tmp_path: Path) -> None:
    wrapped = CleanupMiddleware(
        app, config=toml(tmp_path, f'[[hooks]]\ncontext = "{HERE}:transaction"\n')
    )
    assert run(wrapped, path="/x") == [("enter", "/x"), ("app", True), ("own",), ("exit", None)]


def test_context_hook_told_of_the_apps_failure(tmp_path: Path) -> None:
    wrapped = CleanupMiddleware(
        app, config=toml(tmp_path, f'[[hooks]]\ncontext = "{HERE}:transaction"\n')
    )
    with pytest.raises(ValueError, match="app failed"):
        wrapped(create_environ("/fail"), start_response)
    assert EVENTS == [("enter", "/fail"), ("app", True), ("own",), ("exit", "ValueError")]


def test_class_as_context_factory(tmp_path: Path) -> None:
    wrapped = CleanupMiddleware(
        app, config=toml(tmp_path, f'[[hooks]]\ncontext = "{HERE}:Session"')
    )
    assert run(wrapped, path="/s") == [
        ("session", "/s"),
        ("app", False),
        ("own",),
        ("session closed", "/s"),
    ]


def test_hooks_run_in_reverse_file_order(tmp_path: Path) -> None:
    config = toml(
        tmp_path,
        f"""
        [[hooks]]
        context = "{HERE}:transaction"
        [[hooks]]
        call = "{HERE}:closed"
        [[hooks]]
        call = "{HERE}:closed_too"
        """,
    )
    assert run(CleanupMiddleware(app, config=config), path="/o") == [
        ("enter", "/o"),
        ("app", True),
        ("own",),
        ("closed_too", "/o"),
        ("closed", "GET", "/o"),
        ("exit", None),
    ]


def test_path_and_method_filters(tmp_path: Path) -> None:
    config = toml(
        tmp_path,
        f"""
        [[hooks]]
        call = "{HERE}:closed"
        paths = ["/api/", "/admin/"]
        methods = ["post", "PUT"]
        [[hooks]]
        call = "{HERE}:closed_too"
        paths = ["/api/"]
        """,
    )
    wrapped = CleanupMiddleware(app, config=config)
    assert run(wrapped, "POST", "/api/x")[2:] == [
        ("closed_too", "/api/x"),
        ("closed", "POST", "/api/x"),
    ]
    assert run(wrapped, "PUT", "/admin/")[2:] == [("closed", "PUT", "/admin/")]
    assert run(wrapped, "GET", "/api/x")[2:] == [("closed_too", "/api/x")]
    assert run(wrapped, "POST", "/other")[2:] == []
    assert run(wrapped, "POST", "/api")[2:] == []  # a prefix, not a pattern


def test_non_ascii_path_prefix_matches_the_path_as_the_application_sees_it(
    tmp_path: Path,
) -> None:
    # PEP 3333: PATH_INFO holds the request's UTF-8 bytes read as latin-1, so "/café/x" arrives
    # as "/cafÃ©/x"; werkzeug's EnvironBuilder makes it so, as servers do.
    config = toml(tmp_path, f'[[hooks]]\ncall = "{HERE}:closed"\npaths = ["/café/", "/日本/"]\n')
    wrapped = CleanupMiddleware(app, config=config)
    for path in ("/café/x", "/caf%C3%A9/x", "/日本/y"):
        wsgi_path = create_environ(path)["PATH_INFO"]
        assert run(wrapped, path=path)[2:] == [("closed", "GET", wsgi_path)], path
    assert run(wrapped, path="/cafe/x")[2:] == []
    # The hook as declared keeps the path as written: that is what `check` shows.
    assert load_config(config).hooks[0].paths == ["/café/", "/日本/"]


def test_request_method_compared_in_upper_case(tmp_path: Path) -> None:
    config = toml(tmp_path, f'[[hooks]]\ncall = "{HERE}:closed"\nmethods = ["POST"]\n')
    wrapped = CleanupMiddleware(app, config=config)
    # Werkzeug's dev server passes a "post" request on as it came, and Flask routes it to the
    # POST view (Werkzeug's routing upper-cases the method): the hook applies to it too.
    assert run(wrapped, "post", "/l")[2:] == [("closed", "post", "/l")]
    assert run(wrapped, "Post", "/l")[2:] == [("closed", "Post", "/l")]
    assert run(wrapped, "GET", "/l")[2:] == []


def test_get_filter_matches_head_as_flask_routing_does(tmp_path: Path) -> None:
    config = toml(
        tmp_path,
        f"""
        [[hooks]]
        call = "{HERE}:closed"
        methods = ["GET"]
        [[hooks]]
        call = "{HERE}:closed_too"
        methods = ["HEAD"]
        """,
    )
    wrapped = CleanupMiddleware(app, config=config)
    assert run(wrapped, "HEAD", "/h")[2:] == [("closed_too", "/h"), ("closed", "HEAD", "/h")]
    # HEAD alone does not bring GET with it.
    assert run(wrapped, "GET", "/h")[2:] == [("closed", "GET", "/h")]


def test_hooks_in_code_take_callables_or_names() -> None:
    wrapped = CleanupMiddleware(
        app,
        hooks=[Hook(call=closed, methods=["GET"]), Hook(context=f"{HERE}:transaction")],
    )
    assert run(wrapped, path="/c") == [
        ("enter", "/c"),
        ("app", True),
        ("own",),
        ("exit", None),
        ("closed", "GET", "/c"),
    ]


def test_file_hooks_come_before_code_hooks(tmp_path: Path) -> None:
    config = toml(tmp_path, f'[[hooks]]\ncall = "{HERE}:closed"\n')
    wrapped = CleanupMiddleware(app, config=config, hooks=[Hook(call=closed_too)])
    assert run(wrapped, path="/f")[2:] == [("closed_too", "/f"), ("closed", "GET", "/f")]


def test_environment_variable_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(toml(tmp_path, f'[[hooks]]\ncall = "{HERE}:closed"\n')))
    assert run(CleanupMiddleware(app), path="/e")[2:] == [("closed", "GET", "/e")]
    # Hooks given in code replace it.
    assert run(CleanupMiddleware(app, hooks=[]), path="/e")[2:] == []


def test_pyproject_table(tmp_path: Path) -> None:
    config = toml(
        tmp_path,
        f"""
        [project]
        name = "myapp"

        [tool.cleanup-middleware]
        on-hook-error = "raise"

        [[tool.cleanup-middleware.hooks]]
        call = "{HERE}:closed"
        """,
        name="pyproject.toml",
    )
    wrapped = CleanupMiddleware(app, config=config)
    assert wrapped.on_hook_error == "raise"
    assert run(wrapped, path="/p")[2:] == [("closed", "GET", "/p")]


def test_on_hook_error_from_the_file_unless_given(tmp_path: Path) -> None:
    config = toml(tmp_path, f'on-hook-error = "raise"\n[[hooks]]\ncall = "{HERE}:failing"\n')
    with pytest.raises(RuntimeError, match="hook failed"):
        serve(CleanupMiddleware(app, config=config))
    assert CleanupMiddleware(app, config=config, on_hook_error="log").on_hook_error == "log"
    plain = toml(tmp_path, f'[[hooks]]\ncall = "{HERE}:closed"\n', name="plain.toml")
    assert CleanupMiddleware(app, config=plain).on_hook_error == "log"


def test_failing_context_factory_closes_what_was_entered(tmp_path: Path) -> None:
    def broken(environ: dict[str, Any]) -> Any:
        raise OSError("no database")

    wrapped = CleanupMiddleware(app, hooks=[Hook(context=transaction), Hook(context=broken)])
    with pytest.raises(OSError, match="no database"):
        wrapped(create_environ("/b"), start_response)
    assert EVENTS == [("enter", "/b"), ("exit", "OSError")]


def test_nested_middleware_registers_inner_hooks_once(tmp_path: Path) -> None:
    config = toml(tmp_path, f'[[hooks]]\ncall = "{HERE}:closed"\n')
    other = toml(tmp_path, f'[[hooks]]\ncall = "{HERE}:closed_too"\n', name="other.toml")
    # The same file on both levels (say, the app's own init and the operator's wrap): once.
    same = CleanupMiddleware(CleanupMiddleware(app, config=config), config=config)
    assert run(same, path="/n")[2:] == [("closed", "GET", "/n")]
    # Different files: the inner one's hooks go on the outer one's registry.
    nested = CleanupMiddleware(CleanupMiddleware(app, config=other), config=config)
    assert run(nested, path="/n")[2:] == [("closed_too", "/n"), ("closed", "GET", "/n")]


def test_no_config_registers_nothing() -> None:
    environ = create_environ()
    # Closed here: left to the garbage-collection net, its hook would run in a later test.
    with contextlib.closing(CleanupMiddleware(app)(environ, start_response)):  # type: ignore[type-var]
        assert "cleanup_middleware.config_hooks" not in environ
    assert EVENTS == [("app", False), ("own",)]


def test_config_hooks_alongside_enter_context(tmp_path: Path) -> None:
    def view(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        enter_context(environ, Session(environ))
        start_response("200 OK", [])
        return [b""]

    config = toml(tmp_path, f'[[hooks]]\ncontext = "{HERE}:transaction"\n')
    assert run(CleanupMiddleware(view, config=config), path="/v") == [
        ("enter", "/v"),
        ("session", "/v"),
        ("session closed", "/v"),
        ("exit", None),
    ]


def test_load_config_keeps_the_declared_hooks(tmp_path: Path) -> None:
    config = load_config(
        toml(tmp_path, f'[[hooks]]\ncontext = "{HERE}:transaction"\nmethods = ["POST"]\n')
    )
    assert config.hooks == (Hook(context=f"{HERE}:transaction", methods=["POST"]),)
    assert config.on_hook_error == "log"


# --- mistakes: one case each ------------------------------------------------------------------

# (name, file text, the entry the message names, the fix it gives)
BAD_CONFIGS = [
    ("not-toml", '[[hooks]]\ncall = "x:y\n', "", "not valid TOML"),
    ("unknown-top-key", 'on_hook_error = "log"\n', "on_hook_error", "did you mean 'on-hook-error'"),
    (
        "unknown-hook-key",
        f'[[hooks]]\ncall = "{HERE}:closed"\npath = ["/"]\n',
        "hooks[0].path",
        "did you mean 'paths'",
    ),
    (
        "bad-on-hook-error",
        'on-hook-error = "warn"\n',
        "on-hook-error",
        'write on-hook-error = "log"',
    ),
    ("hooks-not-tables", 'hooks = ["x:y"]\n', "hooks", "as a [[hooks]] section"),
    ("neither-call-nor-context", "[[hooks]]\npaths = ['/']\n", "hooks[0]", "needs call"),
    (
        "call-and-context",
        f'[[hooks]]\ncall = "{HERE}:closed"\ncontext = "{HERE}:transaction"\n',
        "hooks[0]",
        "make them two hooks",
    ),
    (
        "not-a-name",
        '[[hooks]]\ncall = "os.path.join"\n',
        "hooks[0].call",
        '"myapp.db:remove_session"',
    ),
    ("no-such-module", '[[hooks]]\ncall = "no_such_module_x:f"\n', "hooks[0].call", "PYTHONPATH"),
    (
        "no-such-attribute",
        f'[[hooks]]\ncall = "{HERE}:closd"\n',
        "hooks[0].call",
        "did you mean 'closed'",
    ),
    (
        "call-not-callable",
        f'[[hooks]]\ncall = "{HERE}:NOT_CALLABLE"\n',
        "hooks[0].call",
        "not callable",
    ),
    (
        "call-wrong-signature",
        f'[[hooks]]\ncall = "{HERE}:two_args"\n',
        "hooks[0].call",
        "cannot be called with the environ alone",
    ),
    ("call-async", f'[[hooks]]\ncall = "{HERE}:async_hook"\n', "hooks[0].call", "is async"),
    (
        "call-generator",
        f'[[hooks]]\ncall = "{HERE}:generator_hook"\n',
        "hooks[0].call",
        "make it a plain function",
    ),
    (
        "context-is-a-context-manager",
        f'[[hooks]]\ncontext = "{HERE}:A_CONTEXT_MANAGER"\n',
        "hooks[0].context",
        "a context manager, not a factory",
    ),
    (
        "context-undecorated-generator",
        f'[[hooks]]\ncontext = "{HERE}:generator_hook"\n',
        "hooks[0].context",
        "decorate it with @contextlib.contextmanager",
    ),
    (
        "paths-a-string",
        f'[[hooks]]\ncall = "{HERE}:closed"\n[[hooks]]\ncall = "{HERE}:closed"\npaths = "/api/"\n',
        "hooks[1].paths",
        'write ["/api/"]',
    ),
    (
        "paths-empty",
        f'[[hooks]]\ncall = "{HERE}:closed"\npaths = []\n',
        "hooks[0].paths",
        "remove the key",
    ),
    (
        "path-not-from-root",
        f'[[hooks]]\ncall = "{HERE}:closed"\npaths = ["api/"]\n',
        "hooks[0].paths",
        "'/api/'",
    ),
    (
        "methods-in-one-string",
        f'[[hooks]]\ncall = "{HERE}:closed"\nmethods = ["GET POST"]\n',
        "hooks[0].methods",
        "one method per string",
    ),
    (
        "third-entry-call",
        f'[[hooks]]\ncall = "{HERE}:closed"\n[[hooks]]\ncall = "{HERE}:closed"\n'
        f'[[hooks]]\ncall = "{HERE}:nope"\n',
        "hooks[2].call",
        "check the spelling",
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "fix"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config(tmp_path: Path, text: str, key: str, fix: str) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        CleanupMiddleware(app, config=path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: " if key else f"{path}: "), message
    assert fix in message
    assert (info.value.source, info.value.key) == (str(path), key)


def test_bad_toml_names_the_line(tmp_path: Path) -> None:
    path = toml(tmp_path, '[[hooks]]\ncall = "x:y\n')
    with pytest.raises(ConfigError, match=r"line 2"):
        load_config(path)


# (module name, its text, what importing it raises, how the message goes on after the entry)
BROKEN_MODULES = [
    pytest.param(
        "raises_at_import",
        "raise RuntimeError('boom at import')\n",
        ConfigError,
        "importing 'raises_at_import' raised RuntimeError: boom at import; fix that module",
        id="raises",
    ),
    pytest.param(
        "needs_a_dependency",
        "import no_such_dependency_x\n",
        ConfigError,
        "importing 'needs_a_dependency' failed: it imports 'no_such_dependency_x', which is not "
        "installed or not on the path",
        id="missing-dependency",
    ),
    pytest.param(
        "exits_at_import",
        "import sys\nsys.exit()\n",
        ConfigError,
        "importing 'exits_at_import' called sys.exit(None); a hook module must not exit when "
        "imported",
        id="sys.exit",
    ),
    pytest.param(
        "interrupted_at_import",
        "raise KeyboardInterrupt\n",
        KeyboardInterrupt,  # still an interrupt, naming where
        "interrupted while importing 'interrupted_at_import'",
        id="KeyboardInterrupt",
    ),
]


@pytest.mark.parametrize(("module", "text", "raised", "message"), BROKEN_MODULES)
def test_hook_module_that_fails_at_import(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    text: str,
    raised: type[BaseException],
    message: str,
) -> None:
    (tmp_path / f"{module}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = toml(tmp_path, f'[[hooks]]\ncall = "{module}:f"\n')
    with pytest.raises(raised) as info:
        CleanupMiddleware(app, config=path)
    assert str(info.value).startswith(f"{path}: hooks[0].call: {message}"), str(info.value)
    assert "check the name" not in str(info.value)


@pytest.mark.parametrize("name", ["no_such_package_x.hooks", "cleanup_middleware.no_such_module"])
def test_hook_module_that_is_not_there_says_check_the_name(tmp_path: Path, name: str) -> None:
    path = toml(tmp_path, f'[[hooks]]\ncall = "{name}:f"\n')
    with pytest.raises(ConfigError, match=rf"cannot import '{name}' .*; check the name"):
        CleanupMiddleware(app, config=path)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("near_hoks", "near_hooks"),  # beside the config, on the path
        ("cleanup_middleware.defered", "cleanup_middleware.deferred"),  # in a package
        ("cleanup_midleware.deferred", "cleanup_middleware"),  # the package itself
    ],
)
def test_a_misspelt_hook_module_gets_did_you_mean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, suggestion: str
) -> None:
    (tmp_path / "near_hooks.py").write_text("def f(environ):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = toml(tmp_path, f'[[hooks]]\ncall = "{name}:f"\n')
    with pytest.raises(ConfigError) as info:
        CleanupMiddleware(app, config=path)
    assert f"(did you mean {suggestion!r}?); check the name" in str(info.value)


# (file bytes, what the message says the file is)
UNREADABLE_ENCODINGS = [
    pytest.param(
        f'[[hooks]]\ncall = "{HERE}:closed"\npaths = ["/café/"]\n'.encode("latin-1"),
        "is not UTF-8 (byte 0xe9 at line 3, column 15",
        id="latin-1",
    ),
    pytest.param(
        f'[[hooks]]\ncall = "{HERE}:closed"\n'.encode("utf-16"), "is UTF-16 text", id="utf-16"
    ),
    pytest.param(
        f'[[hooks]]\ncall = "{HERE}:closed"\n'.encode("utf-16-le"),
        "is UTF-16 text",
        id="utf-16-without-a-byte-order-mark",
    ),
    pytest.param(
        f'[[hooks]]\ncall = "{HERE}:closed"\n'.encode("utf-8-sig"),
        "starts with a UTF-8 byte-order mark, which TOML does not allow",
        id="utf-8-with-a-byte-order-mark",
    ),
]


@pytest.mark.parametrize(("data", "problem"), UNREADABLE_ENCODINGS)
def test_config_file_not_in_utf8(tmp_path: Path, data: bytes, problem: str) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_bytes(data)
    for build in (lambda: CleanupMiddleware(app, config=path), lambda: wrap(app, config=path)):
        with pytest.raises(ConfigError) as info:
            build()
        message = str(info.value)
        assert message.startswith(f"{path}: {problem}"), message
        assert message.endswith(
            "; save it as UTF-8 without a byte-order mark (your editor's "
            "encoding setting, or iconv -f ENCODING -t UTF-8)"
        )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file .*fix the path"):
        CleanupMiddleware(app, config=path)


def test_missing_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=rf"gone\.toml: no such file .*{ENV_VAR}"):
        CleanupMiddleware(app)


def test_pyproject_without_the_table(tmp_path: Path) -> None:
    path = toml(tmp_path, '[project]\nname = "x"\n', name="pyproject.toml")
    with pytest.raises(ConfigError, match=r"has no \[tool\.cleanup-middleware\] table; add one"):
        CleanupMiddleware(app, config=path)


def test_pyproject_entries_are_named_in_full(tmp_path: Path) -> None:
    path = toml(
        tmp_path, '[[tool.cleanup-middleware.hooks]]\ncall = "x:y"\n', name="pyproject.toml"
    )
    with pytest.raises(ConfigError) as info:
        CleanupMiddleware(app, config=path)
    assert str(info.value).startswith(f"{path}: tool.cleanup-middleware.hooks[0].call: ")


def test_code_hooks_not_hook_objects() -> None:
    with pytest.raises(ConfigError) as info:
        CleanupMiddleware(app, hooks=[closed])  # type: ignore[list-item]
    assert str(info.value).startswith("hooks=[...] argument: hooks[0]: expected a ")
    assert "write Hook(call=...)" in str(info.value)


def test_code_hooks_not_a_list() -> None:
    with pytest.raises(ConfigError, match=r"hooks=\[\.\.\.\] argument: hooks: expected a list"):
        CleanupMiddleware(app, hooks=Hook(call=closed))  # type: ignore[arg-type]


def test_code_hook_path_with_a_lone_surrogate() -> None:
    with pytest.raises(ConfigError, match=r"hooks\[0\]\.paths: '/\\udce9/' has a lone surrogate"):
        CleanupMiddleware(app, hooks=[Hook(call=closed, paths=["/\udce9/"])])


def test_code_hook_not_callable() -> None:
    with pytest.raises(ConfigError, match=r"^hooks=\[\.\.\.\] argument: hooks\[1\]\.call: 42 is"):
        CleanupMiddleware(app, hooks=[Hook(call=closed), Hook(call=42)])  # type: ignore[arg-type]


def test_wrap_takes_every_argument_of_the_middleware(caplog: pytest.LogCaptureFixture) -> None:
    executor = ThreadPoolExecutor(max_workers=1)
    try:
        wrapped = wrap(f"{HERE}:app", executor=executor, slow_hook_seconds=0.001)
        assert wrapped.executor is executor
        environ = create_environ()
        body = wrapped(environ, start_response)
        add_cleanup(environ, time.sleep, 0.01)
        with caplog.at_level(logging.WARNING, logger="cleanup_middleware"):
            body.close()
        assert "over slow_hook_seconds=0.001" in caplog.text
    finally:
        executor.shutdown()


def test_wrap_names_a_missing_app() -> None:
    with pytest.raises(ConfigError, match=r"^wrap\('no_such_module_x:app'\): app: cannot import"):
        wrap("no_such_module_x:app")


def test_wrap_names_an_app_that_is_not_callable() -> None:
    with pytest.raises(ConfigError, match=rf"^wrap\('{HERE}:NOT_CALLABLE'\): app: is not a WSGI"):
        wrap(f"{HERE}:NOT_CALLABLE")
