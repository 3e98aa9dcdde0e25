"""Cleanup for every request, declared in configuration rather than in each view.

Some cleanup belongs to every request, not to one view: closing the database session, removing
the request's scratch directory, flushing a tracing span. Operators declare it in a TOML file, or
in a ``[tool.cleanup-middleware]`` table of ``pyproject.toml``::

    on-hook-error = "log"                 # "log" (the default) or "raise"
    executor = "myapp.tasks:pool"         # a concurrent.futures.Executor for defer() (optional)
    slow-hook-seconds = 0.5               # a WARNING for each hook slower than this (optional)

    [[hooks]]
    call = "myapp.db:remove_session"      # called as fn(environ) when each response closes

    [[hooks]]
    context = "myapp.db:transaction"      # fn(environ) returns a context manager: entered before
    paths = ["/api/"]                     # the application runs, exited at close and told
    methods = ["POST", "PUT"]             # whether the request failed; only for these requests

    [[hooks]]
    call = "myapp.audit:upload"           # defer = true: handed to the executor at close, as
    defer = true                          # defer(environ, upload, environ) does

    [[hooks]]
    call = "myapp.alerts:page"            # when = "failure": only if the request failed, as
    when = "failure"                      # on_failure(environ, page, environ) does

and give it to :class:`~cleanup_middleware.CleanupMiddleware` as ``config=`` (or name it in
``$CLEANUP_MIDDLEWARE_CONFIG``); code gives the same as ``hooks=[Hook(...), ...]``.

Everything is checked once, when the middleware is built: a mistake raises :class:`ConfigError`,
whose message names the file, the entry (``hooks[2].call``) and the fix, so that the application
does not start with cleanup missing. Nothing in a file is evaluated as code: a
``"module:attribute"`` name is imported and looked up, and that is all.

Per request, :func:`register` puts the hooks that apply on the request's cleanup before the
application runs, so they run after the request's own hooks (last-registered-first).
"""

from __future__ import annotations

import codecs
import difflib
import importlib
import inspect
import os
import pkgutil
import re
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from .cleanup import _is_threshold, add_cleanup, enter_context, on_failure, on_success
from .deferred import deferring

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from _typeshed.wsgi import WSGIEnvironment

    # A call hook runs with the request's environ when the response closes; a context hook
    # makes the request's context manager from its environ.
    HookFunction = Callable[[WSGIEnvironment], object]
    ContextFactory = Callable[[WSGIEnvironment], AbstractContextManager[Any]]

__all__ = [
    "ENV_VAR",
    "Config",
    "ConfigError",
    "Hook",
    "ImportInterrupted",
    "configure",
    "load_config",
    "register",
    "resolve",
]

#: The environment variable naming the config file when the middleware is given neither
#: ``config`` nor ``hooks``.
ENV_VAR = "CLEANUP_MIDDLEWARE_CONFIG"

# How errors name the hooks given in code.
_HOOKS_ARGUMENT = "hooks=[...] argument"

# The config hooks registered on a request so far, so that nested middleware add each once.
_REGISTERED_KEY = "cleanup_middleware.config_hooks"

_TOP_KEYS = ("on-hook-error", "executor", "slow-hook-seconds", "hooks")
_HOOK_KEYS = ("call", "context", "defer", "when", "paths", "methods")
# What a call hook's ``when`` may be, and the function that registers it so.
_WHEN = {"always": add_cleanup, "success": on_success, "failure": on_failure}
_PYPROJECT_TABLE = "tool.cleanup-middleware"
# RFC 9110 token: what a request method may be made of.
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class ConfigError(ValueError):
    """A mistake in the configuration, found when the middleware is built.

    The message reads ``SOURCE: KEY: problem; fix``.

    :param source: the file, or ``"hooks=[...] argument"`` for hooks given in code.
    :param key: the entry, such as ``hooks[2].call``; empty for the file as a whole.
    :param problem: what is wrong and how to fix it.
    """

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")
        self.source = source
        self.key = key


class ImportInterrupted(KeyboardInterrupt):
    """A ``KeyboardInterrupt`` while a hook's module was being imported, naming where.

    Still an interrupt for everything that handles one (Ctrl-C, or a module that raised it);
    ``cleanup-middleware check`` prints it as one line instead of a traceback.
    """

    def __init__(self, source: str, key: str, module: str) -> None:
        super().__init__(
            f"{source}: {key}: interrupted while importing {module!r} (Ctrl-C, or the module "
            "raised KeyboardInterrupt); run the check again, or fix that module"
        )


@dataclass(frozen=True, kw_only=True)
class Hook:
    """A cleanup hook for every request, or for the requests its filters match.

    Give exactly one of ``call`` and ``context``, each as a callable or as a
    ``"module:attribute"`` name to import when the middleware is built.

    :param call: ``call(environ)`` runs when the response closes.
    :param context: ``context(environ)`` returns a context manager, entered before the
        application runs and exited when the response closes, with the exception the request
        failed with, if any.
    :param paths: only requests whose ``PATH_INFO`` starts with one of these prefixes.
    :param methods: only requests with one of these methods.
    :param defer: a ``call`` hook is handed to the executor when the response closes, as
        :func:`~cleanup_middleware.defer` does, instead of running in the server's thread.
    :param when: ``"always"`` (the default); ``"success"`` or ``"failure"``: a ``call`` hook
        runs (or, with ``defer``, is handed over) only if the request succeeded, or failed, as
        :func:`~cleanup_middleware.on_success` and :func:`~cleanup_middleware.on_failure` do.

    Example::

        app = CleanupMiddleware(app, hooks=[
            Hook(call="myapp.db:remove_session"),
            Hook(context=transaction, paths=["/api/"], methods=["POST", "PUT"]),
            Hook(call="myapp.alerts:page", when="failure"),
        ])
    """

    call: HookFunction | str | None = None
    context: ContextFactory | str | None = None
    paths: Sequence[str] | None = None
    methods: Sequence[str] | None = None
    defer: bool = False
    when: Literal["always", "success", "failure"] = "always"


class _Compiled(NamedTuple):
    """A checked hook, in the form :func:`register` uses per request."""

    fn: Callable[[WSGIEnvironment], Any]
    is_context: bool
    # Upper case, with HEAD added to GET; None: every method.
    methods: frozenset[str] | None
    # As PEP 3333 puts them in PATH_INFO (UTF-8 bytes read as latin-1); None: every path.
    prefixes: tuple[str, ...] | None
    # A call hook's registration, as its ``when`` says: add_cleanup, on_success or on_failure.
    add: Callable[..., None]


@dataclass(frozen=True)
class Config:
    """A checked configuration; made by :func:`load_config` and :func:`configure`.

    :param source: where it came from, as error messages name it.
    :param on_hook_error: the file's ``on-hook-error``; ``"log"`` when it sets none.
    :param hooks: the hooks as declared, in order.
    :param compiled: the same hooks, imported and checked, for :func:`register`.
    :param executor: the file's ``executor``, imported; ``None`` when it names none.
    :param slow_hook_seconds: the file's ``slow-hook-seconds``; ``None`` when it sets none.
    """

    source: str
    on_hook_error: Literal["log", "raise"]
    hooks: tuple[Hook, ...]
    compiled: tuple[_Compiled, ...]
    executor: Executor | None = None
    slow_hook_seconds: float | None = None


def register(hooks: tuple[_Compiled, ...], environ: WSGIEnvironment) -> None:
    """Register on this request's cleanup the ``hooks`` whose filters match it.

    Called by the middleware for every request, before the application runs. Hooks an outer
    middleware registered on the same request already are left out, so each runs once.
    """
    registered = environ.get(_REGISTERED_KEY)
    if registered is None:
        environ[_REGISTERED_KEY] = hooks
    else:
        hooks = tuple(hook for hook in hooks if hook not in registered)
        environ[_REGISTERED_KEY] = registered + hooks
    # Werkzeug's routing upper-cases the method too, so a "post" request runs the POST view.
    method = environ.get("REQUEST_METHOD", "").upper()
    path = environ.get("PATH_INFO", "")
    for fn, is_context, methods, prefixes, add in hooks:
        if (methods is None or method in methods) and (
            prefixes is None or path.startswith(prefixes)
        ):
            if is_context:
                enter_context(environ, fn(environ))
            else:
                add(environ, fn, environ)


def configure(
    config: str | os.PathLike[str] | None = None, hooks: Sequence[Hook] | None = None
) -> Config:
    """The configuration ``CleanupMiddleware(app, config=..., hooks=...)`` runs.

    The file's hooks come first, then ``hooks``. With neither, the file named by
    ``$CLEANUP_MIDDLEWARE_CONFIG``, if it is set; else no hooks.

    :raises ConfigError: see :func:`load_config`; or ``hooks`` is not a sequence of
        :class:`Hook`, or one of them is wrong.
    """
    if config is None and hooks is None:
        config = os.environ.get(ENV_VAR) or None
    from_file = load_config(config) if config is not None else None
    if hooks is None:
        return from_file if from_file is not None else Config("no configuration", "log", (), ())
    if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Sequence):
        raise ConfigError(
            _HOOKS_ARGUMENT, "hooks", f"expected a list of Hook objects, got {hooks!r}"
        )
    in_code = _compile(_HOOKS_ARGUMENT, "", "log", hooks)
    if from_file is None:
        return in_code
    return Config(
        f"{from_file.source} and the {_HOOKS_ARGUMENT}",
        from_file.on_hook_error,
        from_file.hooks + in_code.hooks,
        from_file.compiled + in_code.compiled,
        from_file.executor,
        from_file.slow_hook_seconds,
    )


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, check and import the configuration in the TOML file ``path``.

    A file named ``pyproject.toml`` is read from its ``[tool.cleanup-middleware]`` table.

    :raises ConfigError: the file cannot be read or parsed, has a key it should not, a value
        of the wrong kind, or a hook that does not import or cannot be called as the schema
        says.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise ConfigError(
            source,
            "",
            f"no such file (relative paths start in {os.getcwd()}); fix the path given as "
            f"config= or in ${ENV_VAR}",
        ) from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read it: {exc.strerror}") from exc
    try:
        document = tomllib.loads(_text(data, source))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}; fix the syntax there") from None
    prefix = ""
    if os.path.basename(source) == "pyproject.toml":
        tool = document.get("tool")
        table = tool.get("cleanup-middleware") if isinstance(tool, dict) else None
        if not isinstance(table, dict):
            raise ConfigError(
                source,
                "",
                f"has no [{_PYPROJECT_TABLE}] table; add one, with a "
                f"[[{_PYPROJECT_TABLE}.hooks]] section per hook, or name a separate "
                "cleanup.toml",
            )
        document, prefix = table, f"{_PYPROJECT_TABLE}."
    _check_keys(document, _TOP_KEYS, source, prefix)
    on_hook_error = document.get("on-hook-error", "log")
    if on_hook_error not in ("log", "raise"):
        raise ConfigError(
            source,
            f"{prefix}on-hook-error",
            f'{on_hook_error!r} is neither "log" nor "raise"; write on-hook-error = "log" '
            '(the default: log a failing hook and carry on) or "raise"',
        )
    entries = document.get("hooks", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(
            source,
            f"{prefix}hooks",
            f"must be an array of tables; write each hook as a [[{prefix}hooks]] section",
        )
    hooks = []
    for index, entry in enumerate(entries):
        _check_keys(entry, _HOOK_KEYS, source, f"{prefix}hooks[{index}].")
        hooks.append(Hook(**{key: entry[key] for key in _HOOK_KEYS if key in entry}))
    config = _compile(source, prefix, on_hook_error, hooks)
    if "slow-hook-seconds" in document:
        slow = document["slow-hook-seconds"]
        if not _is_threshold(slow):
            raise ConfigError(
                source,
                f"{prefix}slow-hook-seconds",
                f"must be a number of seconds above 0, got {slow!r}; write "
                "slow-hook-seconds = 0.5, or remove the key for no slow-hook warning",
            )
        config = replace(config, slow_hook_seconds=float(slow))
    if "executor" not in document:
        return config
    return replace(config, executor=_executor(document["executor"], source, f"{prefix}executor"))


def _executor(name: object, source: str, key: str) -> Executor:
    """The ``executor`` key's object, imported and checked."""
    fix = (
        'name an executor made in a module, as in executor = "myapp.tasks:pool" with '
        "pool = ThreadPoolExecutor(max_workers=8) in myapp/tasks.py"
    )
    if not isinstance(name, str):
        raise ConfigError(source, key, f"must be a string, got {name!r}; {fix}")
    executor = resolve(name, source, key)
    if not isinstance(executor, Executor):
        raise ConfigError(
            source,
            key,
            f"{name} is not a concurrent.futures.Executor (an object of type "
            f"{type(executor).__name__}); {fix}",
        )
    return executor


def _text(data: bytes, source: str) -> str:
    """The file's bytes as text: TOML is UTF-8, and each way a file can fail that is named."""
    if data.startswith(codecs.BOM_UTF8):
        # tomllib takes the mark for the start of a statement and says only "Invalid statement".
        problem = "starts with a UTF-8 byte-order mark, which TOML does not allow"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\0" in data:
        # UTF-16 text: a byte-order mark, or a NUL byte next to each ASCII character.
        problem = "is UTF-16 text (or has NUL bytes), and TOML files are UTF-8"
    else:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            problem = (
                f"is not UTF-8 (byte 0x{data[exc.start]:02x} at line {line}, column {column}: "
                "latin-1 or another legacy encoding), and TOML files are UTF-8"
            )
    raise ConfigError(
        source,
        "",
        f"{problem}; save it as UTF-8 without a byte-order mark (your editor's encoding "
        "setting, or iconv -f ENCODING -t UTF-8)",
    )


def _check_keys(table: dict[str, Any], known: tuple[str, ...], source: str, prefix: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(
                source,
                prefix + key,
                f"unknown key {key!r}{_did_you_mean(key, known)}; the keys allowed here are "
                f"{', '.join(known)}",
            )


def _compile(
    source: str, prefix: str, on_hook_error: Literal["log", "raise"], hooks: Sequence[Hook]
) -> Config:
    compiled = tuple(
        _compile_hook(hook, source, f"{prefix}hooks[{index}]") for index, hook in enumerate(hooks)
    )
    return Config(source, on_hook_error, tuple(hooks), compiled)


def _compile_hook(hook: Hook, source: str, key: str) -> _Compiled:
    if not isinstance(hook, Hook):
        raise ConfigError(
            source,
            key,
            f"expected a cleanup_middleware.Hook, got {type(hook).__name__}; write "
            "Hook(call=...) or Hook(context=...)",
        )
    if (hook.call is None) == (hook.context is None):
        problem = (
            "has both call and context; make them two hooks, one each"
            if hook.call is not None
            else 'needs call (a "module:function" to call at close) or context (a '
            '"module:factory" of context managers)'
        )
        raise ConfigError(source, key, problem)
    is_context = hook.context is not None
    if not isinstance(hook.defer, bool):
        raise ConfigError(
            source, f"{key}.defer", f"must be true or false, got {hook.defer!r}; write defer = true"
        )
    if is_context and hook.defer:
        raise ConfigError(
            source,
            f"{key}.defer",
            "a context hook cannot be deferred: it is exited at close, in the request; remove "
            "defer, or make it a call hook",
        )
    add = _WHEN.get(hook.when) if isinstance(hook.when, str) else None
    if add is None:
        raise ConfigError(
            source,
            f"{key}.when",
            f'must be "always", "success" or "failure", got {hook.when!r}; write when = '
            '"success" to run the hook only if the request succeeded, "failure" only if it failed',
        )
    if is_context and hook.when != "always":
        raise ConfigError(
            source,
            f"{key}.when",
            "applies to call hooks: a context hook runs either way, and its __exit__ is told "
            "whether the request failed; remove when, or make it a call hook",
        )
    target = hook.context if is_context else hook.call
    fn = _function(target, source, f"{key}.{'context' if is_context else 'call'}", is_context)
    if hook.defer:
        fn = deferring(fn)
    methods = _strings(hook.methods, source, f"{key}.methods", '["POST", "PUT"]')
    for method in methods or ():
        if not _METHOD.fullmatch(method):
            raise ConfigError(
                source,
                f"{key}.methods",
                f"{method!r} is not a request method; write one method per string, such "
                'as ["POST", "PUT"]',
            )
    prefixes = _strings(hook.paths, source, f"{key}.paths", '["/api/"]')
    for prefix in prefixes or ():
        if not prefix.startswith("/"):
            raise ConfigError(
                source,
                f"{key}.paths",
                f"{prefix!r} does not start with '/'; write the path prefix from the root of "
                f"the application, such as {'/' + prefix!r}",
            )
        try:
            prefix.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(
                source,
                f"{key}.paths",
                f"{prefix!r} has a lone surrogate, which no request path can hold; write the "
                "path as text, such as '/café/'",
            ) from None
    return _Compiled(
        fn,
        is_context,
        _effective_methods(methods) if methods is not None else None,
        tuple(_wsgi_path(prefix) for prefix in prefixes) if prefixes is not None else None,
        add,
    )


def _effective_methods(methods: Sequence[str]) -> frozenset[str]:
    """The request methods a ``methods`` filter matches: upper case, and ``HEAD`` with ``GET``.

    Flask and Werkzeug answer ``HEAD`` with the ``GET`` view (a rule for ``GET`` matches
    ``HEAD`` too), so the hooks of that view's requests apply to it as well.
    """
    matched = {method.upper() for method in methods}
    if "GET" in matched:
        matched.add("HEAD")
    return frozenset(matched)


def _wsgi_path(path: str) -> str:
    """``path`` as PEP 3333 puts it in ``PATH_INFO``: its UTF-8 bytes, each read as latin-1.

    Servers decode the request's percent-escapes into bytes and hand them over as latin-1, so
    ``/café/`` arrives as ``/cafÃ©/``; converting each prefix once here keeps the per-request
    test a plain ``startswith``.
    """
    return path.encode("utf-8").decode("latin-1")


def _strings(value: object, source: str, key: str, example: str) -> tuple[str, ...] | None:
    """A filter's list of strings as a tuple; ``None`` when the filter is not set."""
    if value is None:
        return None
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or not all(isinstance(item, str) and item for item in value)
    ):
        raise ConfigError(
            source, key, f"must be a list of non-empty strings, got {value!r}; write {example}"
        )
    if not value:
        raise ConfigError(
            source,
            key,
            "is empty, so the hook would never run; remove the key to apply the hook to every "
            "request",
        )
    return tuple(value)


def _function(target: object, source: str, key: str, is_factory: bool) -> Callable[..., Any]:
    """``target`` imported if it is a name, once checked to be callable as ``fn(environ)``."""
    fn: object = resolve(target, source, key) if isinstance(target, str) else target
    name = target if isinstance(target, str) else getattr(fn, "__qualname__", repr(fn))
    if is_factory:
        expected = (
            "a function that takes the WSGI environ and returns a new context manager, such "
            "as a generator function decorated with @contextlib.contextmanager"
        )
    else:
        expected = "a function that takes the WSGI environ"
    if not callable(fn):
        what = (
            "a context manager, not a factory of them"
            if is_factory and hasattr(type(fn), "__enter__")
            else f"not callable (an object of type {type(fn).__name__})"
        )
        raise ConfigError(source, key, f"{name} is {what}; point it at {expected}")
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise ConfigError(
            source, key, f"{name} is async, and cleanup runs synchronously; point it at {expected}"
        )
    if inspect.isgeneratorfunction(fn):
        fix = (
            "decorate it with @contextlib.contextmanager"
            if is_factory
            else "make it a plain function, or a context hook decorated with "
            "@contextlib.contextmanager"
        )
        raise ConfigError(
            source, key, f"{name} is a generator function, whose body would never run; {fix}"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn  # a builtin that does not tell its signature: nothing to check
    try:
        signature.bind(None)
    except TypeError:
        raise ConfigError(
            source,
            key,
            f"{name}{signature} cannot be called with the environ alone; point it at {expected}",
        ) from None
    return fn


def resolve(name: str, source: str, key: str) -> Any:
    """Import ``"module:attribute"`` (the attribute may be dotted) and return the attribute.

    Nothing is evaluated: the module is imported and the attribute looked up.

    :raises ConfigError: naming ``source`` and ``key``, when ``name`` is malformed, its module
        does not import or has no such attribute.
    """
    module_name, _, attribute = name.partition(":")
    if not all(part.isidentifier() for part in [*module_name.split("."), *attribute.split(".")]):
        raise ConfigError(
            source,
            key,
            f'{name!r} is not a "module:attribute" name; write it as "myapp.db:remove_session"',
        )
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and f"{module_name}.".startswith(f"{exc.name}."):
            # The named module (or a package it is in) is not there at all.
            raise ConfigError(
                source,
                key,
                f"cannot import {module_name!r} ({exc}){_module_like(exc.name)}; check the "
                f"name, and that the module can be imported from {os.getcwd()} or the "
                "PYTHONPATH",
            ) from exc
        # The module is there, but something it imports is not.
        raise ConfigError(
            source,
            key,
            f"importing {module_name!r} failed: it imports {exc.name!r}, which is not installed "
            f"or not on the path ({exc}); install it where the application runs, or fix that "
            "import",
        ) from exc
    except SystemExit as exc:
        # Raised by the module itself: left alone, `check` would exit with its status, 0 for
        # sys.exit(), and print nothing.
        raise ConfigError(
            source,
            key,
            f"importing {module_name!r} called sys.exit({exc.code!r}); a hook module must not "
            'exit when imported: move that code under if __name__ == "__main__":',
        ) from exc
    except KeyboardInterrupt as exc:
        raise ImportInterrupted(source, key, module_name) from exc
    except Exception as exc:
        raise ConfigError(
            source,
            key,
            f"importing {module_name!r} raised {type(exc).__name__}: {exc}; fix that module "
            "(its traceback is chained to this error)",
        ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                source,
                key,
                f"{name!r}: {part!r} not found{_did_you_mean(part, dir(obj))}; check the spelling",
            ) from None
    return obj


def _module_like(missing: str) -> str:
    """A "did you mean" for the module ``missing``, among its package's or the top level's."""
    package, _, leaf = missing.rpartition(".")
    if package:
        # Imported already: importing ``missing`` got that far.
        path = getattr(sys.modules.get(package), "__path__", None)
        if path is None:
            return ""
        names = [module.name for module in pkgutil.iter_modules(path)]
        return _did_you_mean(leaf, names, f"{package}.")
    # Those on sys.path, those imported (an editable install's finder hides its own), builtins.
    names = [module.name for module in pkgutil.iter_modules()]
    names += [name for name in sys.modules if "." not in name]
    return _did_you_mean(leaf, [*names, *sys.builtin_module_names])


def _did_you_mean(word: str, candidates: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""
