"""Start an application with its cleanup configuration, without changing the application.

Operators start WSGI applications with gunicorn and want the cleanup of every request declared
in a config file (see :mod:`cleanup_middleware.config`). Three ways, none of which needs a line
of code in the application:

* gunicorn's app-factory syntax, with :func:`~cleanup_middleware.wrap`::

      gunicorn 'cleanup_middleware:wrap("myapp:app", config="cleanup.toml")'

* the ``cleanup-middleware`` command (:func:`main`), which runs gunicorn through its own
  application API, so every gunicorn option works::

      cleanup-middleware serve myapp:app --config cleanup.toml --workers 4
      cleanup-middleware check cleanup.toml     # in CI: exits non-zero on any mistake

  ``check`` imports the hooks from where gunicorn would: the working directory first on the
  path, and gunicorn's ``--chdir`` and ``--pythonpath`` options.

* a PasteDeploy pipeline, with :mod:`cleanup_middleware.paste`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import deferred
from .config import ENV_VAR, ConfigError, Hook, ImportInterrupted, load_config
from .middleware import CleanupMiddleware, wrap

__all__ = ["ConfigError", "Hook", "main", "wrap"]

PROG = "cleanup-middleware"
SERVE_USAGE = f"{PROG} serve APP_MODULE [--config FILE] [gunicorn options]"


def main(argv: Sequence[str] | None = None) -> int:
    """The ``cleanup-middleware`` command; returns its exit status."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run a WSGI application with the cleanup hooks of a config file, or check "
        "such a file.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        allow_abbrev=False,
        usage=SERVE_USAGE,
        help="run the application under gunicorn, wrapped in CleanupMiddleware",
        description="Run APP_MODULE (module:attribute, or gunicorn's module:factory(...)) "
        "under gunicorn, wrapped in CleanupMiddleware. Every other option is gunicorn's "
        "(see gunicorn --help); gunicorn's own config file is -c FILE.",
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        help=f"the cleanup config (TOML, or a pyproject.toml); default: ${ENV_VAR}",
    )
    check = commands.add_parser(
        "check",
        help="load and check a config, import its hooks, and show what runs for which requests",
        description="Load and check a cleanup config and import every hook; print what runs "
        "for which paths and methods, or the mistake (exit status 1).",
    )
    check.add_argument("file", nargs="?", metavar="FILE", help=f"default: ${ENV_VAR}")
    # Where hook modules are imported from, as gunicorn sets it up before it loads the app.
    check.add_argument(
        "--chdir",
        metavar="DIR",
        help="change to DIR first, as gunicorn's --chdir (FILE is then relative to DIR)",
    )
    check.add_argument(
        "--pythonpath",
        metavar="DIRS",
        help="comma-separated directories to import from, as gunicorn's --pythonpath",
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "serve":
        _serve(rest, args.config)
        return 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    path = args.file or os.environ.get(ENV_VAR)
    if not path:
        check.error(f"name the config file, or set ${ENV_VAR}")
    if args.chdir is not None:
        try:
            os.chdir(args.chdir)
        except OSError as exc:
            check.error(f"--chdir {args.chdir}: {exc.strerror}; name an existing directory")
    _import_paths(args.pythonpath)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{PROG} check: {exc}", file=sys.stderr)
        return 1
    except ImportInterrupted as exc:
        print(f"{PROG} check: {exc}", file=sys.stderr)
        return 130  # what a shell reports for a command stopped by Ctrl-C
    count = f"{len(config.hooks)} hook{'' if len(config.hooks) == 1 else 's'}"
    print(f'{config.source}: {count}, on-hook-error = "{config.on_hook_error}"')
    rows = [("", "kind", "hook", "methods", "path prefixes")]
    for index, (hook, compiled) in enumerate(zip(config.hooks, config.compiled, strict=True)):
        is_context = hook.context is not None
        kind, target = ("context", hook.context) if is_context else ("call", hook.call)
        if hook.defer:
            kind = "deferred call"
        if hook.when != "always":
            kind += f" on {hook.when}"
        rows.append(
            (
                f"hooks[{index}]",
                kind,
                str(target),
                # The methods matched (HEAD with GET); the paths as written, not as transcoded.
                ", ".join(sorted(compiled.methods)) if compiled.methods else "any",
                ", ".join(hook.paths) if hook.paths else "any",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        print("  " + "  ".join([*cells, row[4]]))
    print(
        "At close, each request runs its own hooks first, then these, last one first; "
        "context hooks are entered in this order before the application runs."
    )
    if any(hook.when != "always" for hook in config.hooks):
        print(
            "Hooks on success or on failure run after every other hook, with the request's "
            "own, in registration order: these first, in this order."
        )
    return 0


def _import_paths(pythonpath: str | None) -> None:
    """Put the working directory and ``pythonpath`` first on ``sys.path``, as gunicorn does.

    Gunicorn imports the application, and so the hooks of its config, with its working
    directory (``--chdir``) first on the path and each ``--pythonpath`` directory before that;
    ``check`` must import the hooks from where the server will.
    """
    directories = [os.getcwd(), *(pythonpath.split(",") if pythonpath else ())]
    for directory in map(os.path.abspath, directories):
        if directory not in sys.path:
            sys.path.insert(0, directory)


def _serve(gunicorn_args: list[str], config: str | None) -> None:
    """Run gunicorn with ``gunicorn_args`` (the application among them), wrapping the app."""
    try:
        from gunicorn.app.wsgiapp import WSGIApplication  # type: ignore[import-untyped]
    except ImportError:
        sys.exit(f"{PROG} serve needs gunicorn: pip install 'cleanup-middleware[gunicorn]'")

    class Server(WSGIApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            # Gunicorn's option parser reads sys.argv, at start and when SIGHUP reloads.
            argv = sys.argv
            sys.argv = [argv[0], *gunicorn_args]
            try:
                super().load_config()
            finally:
                sys.argv = argv
            # A stopping worker waits for its deferred work before the user's own hook runs.
            user_worker_exit = self.cfg.worker_exit

            def worker_exit(server: Any, worker: Any) -> None:
                try:
                    deferred.worker_exit(server, worker)
                finally:
                    user_worker_exit(server, worker)

            self.cfg.set("worker_exit", worker_exit)

        def load(self) -> CleanupMiddleware:
            return wrap(super().load(), config=config)

    Server(SERVE_USAGE, prog=f"{PROG} serve").run()
