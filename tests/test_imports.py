"""Importing the package costs only what a request uses, and each integration names its extra.

Every check runs in a fresh interpreter (``sys.executable``: the installation under test), where
a meta path finder makes chosen modules fail to import, as they do when not installed.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import cleanup_middleware
from cleanup_middleware import cleanup, config, middleware

# The modules that the package used to import eagerly and a request never needs.
CONFIG_MACHINERY = ["argparse", "difflib", "inspect", "tomllib", "tomli"]

BLOCKER = """
import sys

class Blocker:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        third_party = top not in sys.stdlib_module_names and top != "cleanup_middleware"
        if top in BLOCKED or name in BLOCKED or (ONLY_STDLIB and third_party):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Blocker())
"""


def run_python(
    code: str,
    *,
    blocked: Sequence[str] = (),
    only_stdlib: bool = False,
    environ: Mapping[str, str | None] | None = None,
) -> str:
    """Run ``code`` with ``blocked`` (a module or, at the top level, its package; with
    ``only_stdlib``, every third-party module) failing to import, and the environment variables
    of ``environ`` set (or, given ``None``, unset); return its output, failing the test if it
    exits non-zero."""
    env = {k: v for k, v in os.environ.items() if k != middleware.CONFIG_ENV_VAR}
    for name, value in (environ or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    prelude = f"BLOCKED = {set(blocked)!r}\nONLY_STDLIB = {only_stdlib!r}\n{BLOCKER}"
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# One request through the middleware with one add_cleanup hook, checked: the code given to
# run_python puts it in with {ONE_REQUEST}, after importing CleanupMiddleware and add_cleanup.
ONE_REQUEST = textwrap.indent(
    textwrap.dedent(
        """
        closed = []

        def app(environ, start_response):
            add_cleanup(environ, closed.append, "hook")
            start_response("200 OK", [])
            return [b"body"]

        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
        body = CleanupMiddleware(app)(environ, lambda status, headers, exc_info=None: None)
        assert list(body) == [b"body"]
        body.close()
        assert closed == ["hook"], closed
        """
    ),
    " " * 8,
).strip()


def test_core_needs_only_the_standard_library_and_not_the_config_machinery() -> None:
    # A request through the middleware, given no configuration, imports none of it either.
    output = run_python(
        f"""
        import sys
        from cleanup_middleware import CleanupMiddleware, add_cleanup, enter_context

        {ONE_REQUEST}
        loaded = {{name.partition(".")[0] for name in sys.modules}}
        print(sorted(loaded & {set(CONFIG_MACHINERY)!r}))
        print(sorted(name for name in sys.modules if name.startswith("cleanup_middleware.")))
        """,
        only_stdlib=True,
    )
    assert output.splitlines() == [
        "[]",
        str(
            [
                *([SPEEDUPS_MODULE] if cleanup.SPEEDUPS else []),
                "cleanup_middleware.cleanup",
                "cleanup_middleware.files",
                "cleanup_middleware.middleware",
                "cleanup_middleware.reporting",
            ]
        ),
    ]


SPEEDUPS_MODULE = "cleanup_middleware._speedups"
# Whether this installation has the C base (the build leaves it out where it does not compile).
HAVE_SPEEDUPS = importlib.util.find_spec(SPEEDUPS_MODULE) is not None


@pytest.mark.parametrize(
    ("variable", "prelude", "blocked", "speedups"),
    [
        (None, "", [], HAVE_SPEEDUPS),
        ("0", "", [], HAVE_SPEEDUPS),
        ("1", "", [], False),
        # Not built (no compiler): the Python base.
        (None, "", [SPEEDUPS_MODULE], False),
        # A free-threaded build without the GIL: never imported, which would enable the GIL.
        (None, "sys._is_gil_enabled = lambda: False", [], False),
    ],
)
def test_the_c_base_is_used_when_installed_and_allowed_else_the_python_one(
    variable: str | None, prelude: str, blocked: list[str], speedups: bool
) -> None:
    output = run_python(
        f"""
        {prelude}
        from cleanup_middleware import CleanupMiddleware, add_cleanup, cleanup

        {ONE_REQUEST}
        base = cleanup.ResponseCleanup.__mro__[1]
        print(cleanup.SPEEDUPS, base.__module__, {SPEEDUPS_MODULE!r} in sys.modules)
        print(add_cleanup.__module__)
        """,
        blocked=blocked,
        environ={cleanup.PURE_PYTHON_ENV_VAR: variable},
    )
    base_module = SPEEDUPS_MODULE if speedups else "cleanup_middleware.cleanup"
    # add_cleanup's common case is in C with the C base, and only then.
    assert output.split() == [str(speedups), base_module, str(speedups), base_module]


# Defines new_interpreter(), a legacy sub-interpreter (one that shares the process's modules of
# single-phase initialisation, as mod_wsgi's application groups do); run_in(interpreter, code),
# which returns what failed there, or None; and run_in_sub_interpreter(code), which does that
# in a new one and destroys it.
SUB_INTERPRETERS = """
try:
    import _interpreters as interpreters  # Python 3.13

    def new_interpreter():
        return interpreters.create(interpreters.new_config("legacy"))
except ImportError:
    import _xxsubinterpreters as interpreters

    def new_interpreter():
        try:
            return interpreters.create(isolated=False)  # Python 3.12
        except TypeError:
            return interpreters.create()  # Python 3.10 and 3.11: legacy

def run_in(interpreter, code):
    return interpreters.run_string(interpreter, code)  # 3.13 returns what failed

def run_in_sub_interpreter(code):
    interpreter = new_interpreter()
    try:
        return run_in(interpreter, code)
    finally:
        interpreters.destroy(interpreter)
"""


def test_a_sub_interpreter_keeps_its_own_add_cleanup_and_its_hooks_run() -> None:
    # mod_wsgi runs each application group in a sub-interpreter of one process, and they share
    # a C module of single-phase initialisation: _speedups's add_cleanup keeps the objects of
    # the first interpreter, so another uses the Python function (and, on Python 3.12 and
    # later, a sub-interpreter of its own GIL may refuse the module: then the Python base).
    sub_interpreter_code = (
        "from cleanup_middleware import CleanupMiddleware, add_cleanup\n"
        + textwrap.dedent(" " * 8 + ONE_REQUEST)
        + "\nassert add_cleanup.__module__ == 'cleanup_middleware.cleanup', add_cleanup\n"
    )
    output = run_python(
        f"""
        import cleanup_middleware  # first in the main interpreter
        {textwrap.indent(SUB_INTERPRETERS, " " * 8).strip()}

        print(run_in_sub_interpreter({sub_interpreter_code!r}))
        from cleanup_middleware import CleanupMiddleware, add_cleanup
        {ONE_REQUEST}
        print(add_cleanup.__module__)
        """
    )
    main_module = SPEEDUPS_MODULE if cleanup.SPEEDUPS else "cleanup_middleware.cleanup"
    assert output.splitlines() == ["None", main_module]


def test_no_opentelemetry_unless_instrumented() -> None:
    # Installed, and a middleware with a slow-hook threshold too: nothing of it is imported.
    output = run_python(
        f"""
        import sys
        from cleanup_middleware import CleanupMiddleware, add_cleanup, defer

        CleanupMiddleware(lambda environ, start_response: [], slow_hook_seconds=1)
        {ONE_REQUEST}
        print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
        """
    )
    assert output == "[]\n"


def test_a_later_sub_interpreter_never_gets_the_add_cleanup_of_one_that_is_gone() -> None:
    # The package imported in sub-interpreters only, as mod_wsgi's application groups do when
    # the main interpreter never imports it: the first owns the C add_cleanup. A later one may
    # be made at the first one's address once that one is destroyed (seen on 3.10 and 3.11,
    # most often when several are made at once); it must keep the Python function, whose errors
    # are the documented ones, not the C one bound to the dead interpreter's objects (issue 18,
    # item 6).
    count = 8  # made at once after the first is gone: one of them may get its address
    sub_interpreter_code = (
        "import ctypes\n"
        "get_state = ctypes.pythonapi.PyInterpreterState_Get\n"
        "get_state.restype = ctypes.c_void_p\n"
        "from cleanup_middleware import CleanupMiddleware, add_cleanup\n"
        + textwrap.dedent(" " * 8 + ONE_REQUEST)
        + "\ntry:\n    add_cleanup({}, print)\nexcept Exception as exc:\n"
        "    print(get_state(), add_cleanup.__module__, type(exc).__name__, exc)\n"
    )
    output = run_python(
        f"""
        {textwrap.indent(SUB_INTERPRETERS, " " * 8).strip()}

        code = {sub_interpreter_code!r}
        assert run_in_sub_interpreter(code) is None
        later = [new_interpreter() for _ in range({count})]
        for interpreter in later:
            assert run_in(interpreter, code) is None
        for interpreter in later:
            interpreters.destroy(interpreter)
        """
    )
    lines = [line.split(" ", 2) for line in output.splitlines()]
    first = SPEEDUPS_MODULE if cleanup.SPEEDUPS else "cleanup_middleware.cleanup"
    assert [module for _, module, _ in lines] == [first] + ["cleanup_middleware.cleanup"] * count
    assert {error for _, _, error in lines} == {
        "RuntimeError add_cleanup() needs an environ that passed through CleanupMiddleware, and "
        "this one did not; wrap the WSGI application: app = CleanupMiddleware(app) (for Flask: "
        "cleanup_middleware.flask.init_app(app))"
    }
    addresses = [address for address, _, _ in lines]
    if addresses[0] not in addresses[1:]:
        pytest.skip("no later sub-interpreter was made at the first one's address this time")


def test_config_names_are_imported_on_first_use() -> None:
    output = run_python(
        """
        import sys
        import cleanup_middleware

        assert "cleanup_middleware.config" not in sys.modules
        assert {"wrap", "Hook", "ConfigError"} <= set(dir(cleanup_middleware))
        from cleanup_middleware import ConfigError, Hook, wrap
        from cleanup_middleware.cli import wrap as cli_wrap
        from cleanup_middleware.config import ConfigError as config_error, Hook as hook

        assert (wrap, Hook, ConfigError) == (cli_wrap, hook, config_error)
        namespace = {}
        exec("from cleanup_middleware import *", namespace)
        assert set(cleanup_middleware.__all__) <= set(namespace)
        try:
            cleanup_middleware.no_such_name
        except AttributeError as exc:
            print(exc)
        """,
        blocked=["werkzeug", "flask"],
    )
    assert output == "module 'cleanup_middleware' has no attribute 'no_such_name'\n"


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("cleanup_middleware.flask", ["flask"], "flask"),
        ("cleanup_middleware.flask", ["flask", "werkzeug"], "flask"),
        ("cleanup_middleware.response", ["werkzeug"], "werkzeug"),
        ("cleanup_middleware.pyramid", ["pyramid"], "pyramid"),
        ("cleanup_middleware.otel", ["opentelemetry"], "otel"),
    ],
)
def test_integration_without_its_framework_names_the_extra(
    module: str, blocked: list[str], extra: str
) -> None:
    output = run_python(
        f"""
        try:
            import {module}
        except ImportError as exc:
            print(exc.name)
            print(exc)
            print(type(exc.__cause__).__name__)
        """,
        blocked=blocked,
    )
    name, message, cause = output.splitlines()
    assert name == blocked[0]
    assert message.startswith(f"{module} needs the {extra!r} extra (No module named")
    assert message.endswith(f"pip install 'cleanup-middleware[{extra}]'")
    assert cause == "ModuleNotFoundError"


def test_the_middleware_knows_the_config_variable() -> None:
    assert middleware.CONFIG_ENV_VAR == config.ENV_VAR


def test_declared_dependencies_keep_the_core_free_of_frameworks() -> None:
    # The installed metadata, as pip sees it: the core requires only tomli, before 3.11.
    requirements = [
        Requirement(line) for line in importlib.metadata.requires("cleanup-middleware") or []
    ]
    core = [r.name for r in requirements if r.marker is None or "extra" not in str(r.marker)]
    assert core == ["tomli"]

    def extra(name: str) -> set[str]:
        return {r.name for r in requirements if r.marker and r.marker.evaluate({"extra": name})}

    assert "werkzeug" in extra("werkzeug")
    assert {"flask", "cleanup-middleware"} <= extra("flask")
    assert "pyramid" in extra("pyramid")
    assert cleanup_middleware.__version__ == importlib.metadata.version("cleanup-middleware")


def _runtime_imports(module: Path) -> set[str]:
    """The package's modules that ``module`` imports when run (``TYPE_CHECKING`` blocks aside),
    wherever the import statement is, functions included."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    checking_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for statement in block.body
        for node in ast.walk(statement)
    }
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in checking_only:
            if node.module:
                imported.add(node.module.partition(".")[0])
            else:
                imported.update(alias.name for alias in node.names)
    return imported


def test_the_package_has_no_import_circle() -> None:
    package = Path(cleanup_middleware.__file__).parent
    graph = {path.stem: _runtime_imports(path) for path in package.glob("*.py")}
    assert graph["cleanup"] >= {"reporting"}  # the walk sees what it should

    def circle_from(name: str, trail: tuple[str, ...]) -> tuple[str, ...] | None:
        if name in trail:
            return (*trail[trail.index(name) :], name)
        for imported in sorted(graph.get(name, ())):
            found = circle_from(imported, (*trail, name))
            if found:
                return found
        return None

    circles = [" -> ".join(c) for name in graph if (c := circle_from(name, ()))]
    assert circles == []
