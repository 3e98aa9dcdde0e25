"""``defer()``: after-response work handed to an executor, in-process and under real gunicorn.

In-process tests call the middleware as a server does (iterate the body, close it) and watch
what the deferred functions do by events, never by elapsed time. The gunicorn tests run
``tests/apps/defer_app.py``, whose deferred function waits until the test creates a file, so
the test decides that the work is still running when it stops the server.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from serverkit import (
    RECORD_DIR_ENV,
    SENDFILE_SERVERS,
    Server,
    http_get,
    read_records,
    run_server,
    wait_for_records,
)
from test_cli import run_serve
from werkzeug.test import create_environ

import cleanup_middleware.flask
from cleanup_middleware import CleanupMiddleware, ConfigError, Hook, add_cleanup, defer
from cleanup_middleware.cli import main
from cleanup_middleware.config import load_config
from cleanup_middleware.deferred import DeferredPool

WAIT = 10.0  # seconds an event may take before the test fails (never a speed claim)


def serve(app: Any, environ: dict[str, Any] | None = None) -> list[bytes]:
    """What a server does with one request: iterate the body, then close it."""
    body = app(environ or create_environ("/thing"), lambda status, headers, exc=None: None)
    try:
        return list(body)
    finally:
        body.close()


def deferring_app(*actions: Callable[[dict[str, Any]], object]) -> Callable[..., Any]:
    """A WSGI app that runs ``actions(environ)`` in order, then answers one chunk."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        for action in actions:
            action(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return app


class HandOver(Executor):
    """An executor that keeps what it is given, for the test to run when it chooses."""

    def __init__(self) -> None:
        self.given: list[Callable[[], object]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.given.append(partial(fn, *args, **kwargs))
        return Future()

    def run_all(self) -> None:
        for fn in self.given:
            fn()


def test_runs_after_every_hook_in_order_and_only_once_closed() -> None:
    events: list[str] = []
    executor = HandOver()

    def hook_that_defers(environ: dict[str, Any]) -> None:
        events.append("hook-that-defers")
        defer(environ, events.append, "deferred-by-a-hook")

    app = deferring_app(
        lambda environ: add_cleanup(environ, events.append, "hook-1"),
        lambda environ: defer(environ, events.append, "deferred-1"),
        lambda environ: add_cleanup(environ, hook_that_defers, environ),
        lambda environ: defer(environ, events.append, "deferred-2"),
        lambda environ: add_cleanup(environ, events.append, "hook-3"),
    )
    body = CleanupMiddleware(app, executor=executor)(create_environ("/"), lambda *a: None)
    assert list(body) == [b"ok"]
    assert executor.given == [] and events == []  # nothing before the response is closed
    body.close()
    body.close()
    assert events == ["hook-3", "hook-that-defers", "hook-1"]  # only the hooks, in close()
    assert len(executor.given) == 3
    executor.run_all()
    assert events[3:] == ["deferred-1", "deferred-2", "deferred-by-a-hook"]


def test_the_default_pool_runs_it_in_another_thread_while_close_has_returned() -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    threads: list[str] = []

    def slow() -> None:
        threads.append(threading.current_thread().name)
        started.set()
        release.wait(WAIT)
        finished.set()

    serve(CleanupMiddleware(deferring_app(lambda environ: defer(environ, slow))))
    # close() returned: had it run slow() inline, it would have waited for `release` first.
    assert started.wait(WAIT)
    assert not finished.is_set()
    release.set()
    assert finished.wait(WAIT)
    assert threads[0].startswith("cleanup-middleware-defer") and threads[0] != "MainThread"


def test_nested_middleware_the_outer_one_owns_the_request_and_runs_it_once() -> None:
    outer, inner = HandOver(), HandOver()
    ran: list[str] = []
    app = deferring_app(lambda environ: defer(environ, ran.append, "x"))
    serve(CleanupMiddleware(CleanupMiddleware(app, executor=inner), executor=outer))
    assert inner.given == [] and len(outer.given) == 1
    outer.run_all()
    assert ran == ["x"]


REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("REQUEST_ID", default=None)


@pytest.mark.parametrize("kind", ["default pool", "ThreadPoolExecutor", "inline", "config hook"])
def test_each_deferred_function_runs_in_a_copy_of_its_request_s_context(kind: str) -> None:
    """What /alice bound, /alice's deferred work sees; never /bob's, nor what another one set."""
    seen: list[tuple[str | None, str]] = []
    done = threading.Semaphore(0)

    def deferred(label: str) -> None:
        seen.append((REQUEST_ID.get(), label))
        REQUEST_ID.set("set by a deferred function")  # must stay in its own copy
        done.release()

    def bind(environ: dict[str, Any]) -> None:
        REQUEST_ID.set(environ["PATH_INFO"])

    executor: Executor = {
        "default pool": DeferredPool(max_workers=1),  # one thread runs both, one after the other
        "ThreadPoolExecutor": ThreadPoolExecutor(max_workers=1),
    }.get(kind, HandOver())
    if kind == "config hook":  # defer() is called by the hook, at close
        hooks = [Hook(call=lambda environ: deferred(f"{environ['PATH_INFO']} hook"), defer=True)]
        app = CleanupMiddleware(deferring_app(bind), hooks=hooks, executor=executor)
    else:
        app = CleanupMiddleware(
            deferring_app(bind, lambda environ: defer(environ, deferred, environ["PATH_INFO"])),
            executor=executor,
        )
    for path in ("/alice", "/bob"):
        # A server thread of its own for each request, as a fresh thread of a server has.
        contextvars.copy_context().run(serve, app, create_environ(path))
    if isinstance(executor, HandOver):
        executor.run_all()  # here, in the test's own context
    for _ in range(2):
        assert done.acquire(timeout=WAIT)
    executor.shutdown(wait=True)
    suffix = " hook" if kind == "config hook" else ""
    assert seen == [("/alice", f"/alice{suffix}"), ("/bob", f"/bob{suffix}")]
    assert REQUEST_ID.get() is None


def block_pool(pool: DeferredPool, release: threading.Event) -> threading.Event:
    """Occupy the pool's one thread until ``release``; returns the event set once it waits."""
    waiting = threading.Event()

    def occupy() -> None:
        waiting.set()
        release.wait(WAIT)

    pool.submit(occupy)
    assert waiting.wait(WAIT)
    return waiting


def test_a_full_queue_runs_the_work_inline_at_close(caplog: pytest.LogCaptureFixture) -> None:
    pool = DeferredPool(max_workers=1, max_queued=1, name="full-queue-pool")
    release = threading.Event()
    ran: list[tuple[str, str]] = []

    def note(label: str) -> None:
        ran.append((label, threading.current_thread().name))

    try:
        block_pool(pool, release)
        app = CleanupMiddleware(
            deferring_app(
                lambda environ: defer(environ, note, "queued"),
                lambda environ: defer(environ, note, "inline"),
            ),
            executor=pool,
        )
        with caplog.at_level(logging.WARNING, "cleanup_middleware"):
            serve(app)
        # The queue held one; the second ran in this (the server's) thread, during close().
        assert ran == [("inline", threading.current_thread().name)]
        assert "full-queue-pool queue was full" in caplog.text
        assert "test_defer.test_a_full_queue_runs_the_work_inline_at_close.<locals>.note" in (
            caplog.text
        )
    finally:
        release.set()
        pool.shutdown(wait=True)
    assert ran[1] == ("queued", "full-queue-pool-1")


def test_an_executor_that_refuses_work_gets_it_run_inline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    executor = ThreadPoolExecutor(max_workers=1)
    executor.shutdown()
    ran: list[str] = []
    app = CleanupMiddleware(
        deferring_app(lambda environ: defer(environ, ran.append, "refused")), executor=executor
    )
    with caplog.at_level(logging.WARNING, "cleanup_middleware"):
        serve(app)
    assert ran == ["refused"]
    assert "the executor refused it (RuntimeError" in caplog.text


def explode(secret_argument: str) -> None:
    raise ValueError("deferred failure")


def test_a_failing_deferred_function_is_logged_by_name_without_request_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    executor = HandOver()
    app = CleanupMiddleware(
        deferring_app(lambda environ: defer(environ, explode, "argument-secret")),
        executor=executor,
    )
    environ = create_environ(
        "/", headers={"Cookie": "session=cookie-secret", "X-Token": "header-secret"}
    )
    environ["PATH_INFO"] = "/pa\nth"  # as a server may pass it on, decoded from %0A
    serve(app, environ)
    with caplog.at_level(logging.ERROR, "cleanup_middleware"):
        executor.run_all()  # raises nothing: the failure stays with the deferred function
    [entry] = caplog.records
    message = entry.getMessage()
    assert message == "deferred function test_defer.explode failed for GET /pa\\x0ath"
    assert entry.exc_info is not None and entry.exc_info[0] is ValueError
    for secret in ("argument-secret", "cookie-secret", "header-secret"):
        assert secret not in caplog.text


def test_a_pool_made_before_fork_works_in_the_child(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys, threading
        from werkzeug.test import create_environ
        from cleanup_middleware import CleanupMiddleware, defer

        def run(fn, *args):
            app = CleanupMiddleware(lambda environ, sr: (defer(environ, fn, *args), [b""])[1])
            body = app(create_environ("/"), lambda *a: None)
            body.close()

        def note(label):
            with open(sys.argv[1], "a") as f:
                f.write(f"{label} {os.getpid()}\\n")

        release, ran = threading.Event(), threading.Event()
        run(ran.set)                      # the default pool exists and has a thread
        assert ran.wait(10)
        run(release.wait, 10)             # its thread is busy at the fork ...
        run(note, "queued-in-parent")     # ... and one function waits in its queue
        pid = os.fork()
        if pid == 0:
            done = threading.Event()
            run(done.set)
            os._exit(0 if done.wait(10) else 1)
        _, status = os.waitpid(pid, 0)
        release.set()
        from cleanup_middleware.deferred import drain
        drain(10)
        print(os.waitstatus_to_exitcode(status), os.getpid())
        """
    )
    notes = tmp_path / "notes"
    result = subprocess.run(
        [sys.executable, "-c", script, str(notes)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    child_status, parent = result.stdout.split()
    assert child_status == "0", result.stderr  # the child's pool ran its own work
    # The parent's queued function ran once, in the parent, not again in the child.
    assert notes.read_text().splitlines() == [f"queued-in-parent {parent}"]


def test_the_garbage_collection_net_covers_deferred_work() -> None:
    ran = threading.Event()
    app = CleanupMiddleware(deferring_app(lambda environ: defer(environ, ran.set)))
    body = app(create_environ("/never-closed"), lambda *a: None)
    list(body)
    with pytest.warns(ResourceWarning, match="never closed"):
        del body
        gc.collect()
    assert ran.wait(WAIT)


def not_wrapped(fn: Callable[..., Any]) -> None:
    defer({"REQUEST_METHOD": "GET"}, fn)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (not_wrapped, RuntimeError, r"wrap the WSGI application: app = CleanupMiddleware\(app\)"),
        (lambda fn: defer("environ", fn), TypeError, "takes the WSGI environ dict"),  # type: ignore[arg-type]
    ],
)
def test_an_environ_that_did_not_pass_through_the_middleware(
    call: Callable[[Any], None], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        call(print)


def test_a_function_that_is_not_callable_is_refused_at_once() -> None:
    errors: list[BaseException] = []

    def view(environ: dict[str, Any]) -> None:
        try:
            defer(environ, len("abc"))  # type: ignore[arg-type]
        except TypeError as exc:
            errors.append(exc)

    serve(CleanupMiddleware(deferring_app(view)))
    assert "defer() needs a callable" in str(errors[0])
    assert "not its result" in str(errors[0])


def test_defer_after_the_response_closed_raises() -> None:
    environs: list[dict[str, Any]] = []
    serve(CleanupMiddleware(deferring_app(environs.append)))
    with pytest.raises(RuntimeError, match=r"defer\(\) was called after the response was closed"):
        defer(environs[0], print)


def test_executor_must_be_an_executor() -> None:
    with pytest.raises(TypeError, match=r"give a concurrent\.futures\.Executor object"):
        CleanupMiddleware(deferring_app(), executor=ThreadPoolExecutor)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"DeferredPool\(max_queued=0\)"):
        DeferredPool(max_queued=0)


def test_submit_returns_a_future_and_drain_logs_what_it_abandons() -> None:
    # In a process of its own: drain() shuts down every pool of the process, the default too.
    script = textwrap.dedent(
        """
        import logging, threading
        from cleanup_middleware.deferred import DeferredPool, drain

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

        def stuck(release):
            release.wait(10)

        def waiting(release):
            release.wait(10)

        pool = DeferredPool(max_workers=1, max_queued=5)
        print("result", pool.submit(sum, [1, 2]).result(10))
        release = threading.Event()
        pool.submit(stuck, release)
        for _ in range(2):
            pool.submit(waiting, release)
        print("abandoned", drain(0.05))
        try:
            pool.submit(print)
        except RuntimeError as exc:
            print("refused", exc)
        # Exits with the three still waiting: the exit net must not wait for them again.
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "result 3",
        "abandoned 3",
        "refused cannot schedule new work after shutdown",
    ]
    assert (
        "WARNING waiting up to 0.1 s for 3 deferred functions still queued or running, lost if "
        "the process is killed first: 2 x __main__.waiting, 1 x __main__.stuck"
    ) in result.stderr
    assert (
        "WARNING abandoned 3 deferred functions still queued or running after 0.1 s: "
        "2 x __main__.waiting, 1 x __main__.stuck"
    ) in result.stderr
    assert result.stderr.count("waiting up to") == 1, result.stderr


# --- Flask and the config file ------------------------------------------------------------------


def test_flask_defer_and_init_app_executor() -> None:
    from flask import Flask

    executor = HandOver()
    ran: list[str] = []
    app = Flask(__name__)
    cleanup_middleware.flask.init_app(app, executor=executor)

    @app.get("/")
    def view() -> str:
        cleanup_middleware.flask.defer(ran.append, "from-a-view")
        return "ok"

    assert serve(app.wsgi_app, create_environ("/")) == [b"ok"]
    assert ran == []
    executor.run_all()
    assert ran == ["from-a-view"]


# The executor the config file below names, and its deferred config hook.
CONFIG_EXECUTOR = HandOver()
config_hook_environs: list[dict[str, Any]] = []


def test_config_executor_and_a_deferred_call_hook(tmp_path: Path) -> None:
    config = tmp_path / "cleanup.toml"
    config.write_text(
        textwrap.dedent(
            """
            executor = "test_defer:CONFIG_EXECUTOR"

            [[hooks]]
            call = "test_defer:config_hook_environs.append"
            defer = true
            """
        )
    )
    CONFIG_EXECUTOR.given.clear()
    config_hook_environs.clear()
    environ = create_environ("/")
    # Nested with the same config, as when the operator wraps an app that wraps itself.
    app = CleanupMiddleware(CleanupMiddleware(deferring_app(), config=config), config=config)
    serve(app, environ)
    assert config_hook_environs == []  # not run in close()
    assert len(CONFIG_EXECUTOR.given) == 1
    CONFIG_EXECUTOR.run_all()
    assert config_hook_environs == [environ]


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('executor = "os:getcwd"', "executor", "os:getcwd is not a concurrent.futures.Executor"),
        ("executor = 3", "executor", "must be a string"),
        ('[[hooks]]\ncall = "os:getcwd"\ndefer = "yes"', "hooks[0].defer", "true or false"),
        (
            '[[hooks]]\ncontext = "contextlib:nullcontext"\ndefer = true',
            "hooks[0].defer",
            "a context hook cannot be deferred",
        ),
    ],
)
def test_config_mistakes(tmp_path: Path, text: str, key: str, problem: str) -> None:
    config = tmp_path / "cleanup.toml"
    config.write_text(text + "\n")
    with pytest.raises(ConfigError, match=problem) as caught:
        load_config(config)
    assert caught.value.key == key


def test_deferred_hook_in_code_and_in_check(tmp_path: Path, capsys: Any) -> None:
    executor = HandOver()
    ran: list[object] = []
    serve(
        CleanupMiddleware(
            deferring_app(), hooks=[Hook(call=ran.append, defer=True)], executor=executor
        )
    )
    assert ran == [] and len(executor.given) == 1
    config = tmp_path / "cleanup.toml"
    config.write_text('[[hooks]]\ncall = "os:fspath"\ndefer = true\n')
    assert main(["check", str(config)]) == 0
    assert "deferred call  os:fspath" in capsys.readouterr().out


# --- real gunicorn workers ----------------------------------------------------------------------

HOOK_CONFIG = "from cleanup_middleware.deferred import worker_exit\n"
# A gunicorn server hook the arbiter calls for a worker that exited before it was killed.
REAPED_RECORD = """
def child_exit(server, worker):
    from serverkit import record
    record("worker-reaped", worker=worker.pid)
"""


def gunicorn_config(tmp_path: Path, extra: str = "", hook: bool = True) -> Path:
    path = tmp_path / "gunicorn.conf.py"
    path.write_text((HOOK_CONFIG if hook else "") + extra)
    return path


def wait_for_log(server: Server, text: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, f"{text!r} not in the log: {server.describe()}"
        time.sleep(0.01)


def release(records: Path, *tokens: str) -> None:
    """Let the deferred functions of ``tokens`` finish (see ``defer_app.go_path``)."""
    for token in tokens:
        (records / f"go-{token}").touch()


def events_of(records: Path, token: str) -> list[str]:
    return [r["event"] for r in read_records(records) if r.get("token") == token]


@contextlib.contextmanager
def gunicorn(
    name: str,
    tmp_path: Path,
    extra_config: str | None = "",
    app: str = "defer_app:application",
    hook: bool = True,
) -> Iterator[tuple[Server, Path]]:
    """Serve ``app``; with ``extra_config`` (unless None) and, with ``hook``, the worker_exit
    hook."""
    records = tmp_path / "records"
    records.mkdir()
    config = gunicorn_config(tmp_path, extra_config, hook) if extra_config is not None else None
    with run_server(
        name, app, env={RECORD_DIR_ENV: str(records)}, gunicorn_config=config, log_dir=tmp_path
    ) as server:
        yield server, records


def defer_request(server: Server, token: str) -> int:
    """Request ``/defer?token=``; returns the pid of the worker that answered."""
    response = http_get(f"{server.url}/defer?token={token}")
    assert response.status == 200, server.describe()
    return int(response.body)


@pytest.mark.parametrize("name", SENDFILE_SERVERS)
def test_sigterm_waits_for_work_accepted_just_before(name: str, tmp_path: Path) -> None:
    """One deferred function is running and one queued when gunicorn is told to stop."""
    running, queued = (f"{label}-{uuid.uuid4().hex[:8]}" for label in ("running", "queued"))
    with gunicorn(name, tmp_path) as (server, records):
        pid = defer_request(server, running)
        defer_request(server, queued)
        # The pool has one thread. Which of the two runs first is the order of the two
        # responses' close() (gthread may close the second first); the other waits in the queue.
        wait_for_records(
            records,
            lambda rs: any("deferred-start" in events_of(records, t) for t in (running, queued)),
        )
        server.process.send_signal(signal.SIGTERM)
        wait_for_log(server, f"Worker exiting (pid: {pid})")
        release(records, running, queued)
        server.process.wait(WAIT)
    for token in (running, queued):
        assert events_of(records, token) == ["accepted", "deferred-start", "deferred-done"]
    assert {r["pid"] for r in read_records(records)} == {pid}
    assert "abandoned" not in server.log()


def test_a_pool_used_in_the_master_works_in_preloaded_workers(tmp_path: Path) -> None:
    token = f"preload-{uuid.uuid4().hex[:8]}"
    app = "defer_app:preloaded()"
    with gunicorn("gunicorn-sync", tmp_path, "preload_app = True\n", app) as (server, records):
        release(records, token)
        pid = defer_request(server, token)
        wait_for_records(records, lambda rs: "deferred-done" in events_of(records, token))
    assert pid != server.process.pid
    assert [r["pid"] for r in read_records(records) if r["event"] == "deferred-done"] == [pid]


def check_pending_work_is_said_before_the_kill(
    name: str, tmp_path: Path, hook: bool = False, extra_config: str = ""
) -> None:
    """Three deferred functions still running when gunicorn is told to stop, for good: the
    worker says at WARNING that it waits for them and then that it abandons them, by name and
    count, and exits before the arbiter kills it. With the worker_exit line in gunicorn's
    config only with ``hook``."""
    tokens = [f"stuck-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    app = "defer_app:default_pool_app"
    with gunicorn(name, tmp_path, REAPED_RECORD + extra_config, app, hook) as (server, records):
        pid = defer_request(server, tokens[0])
        for token in tokens[1:]:
            defer_request(server, token)
        server.process.send_signal(signal.SIGTERM)
        # gunicorn's --graceful-timeout is 3 s here: the worker waits 2 s, logs, exits.
        wait_for_log(server, "abandoned 3 deferred functions")
        server.process.wait(WAIT)
    log = server.log()
    waiting = log.index("for 3 deferred functions still queued or running, lost if the process")
    abandoned = log.index(
        "abandoned 3 deferred functions still queued or running after 2.0 s: "
        "3 x defer_app.wait_for_go"
    )
    assert waiting < abandoned, log
    # It exited on its own, before the arbiter's SIGKILL: the arbiter reaped it.
    assert [r["worker"] for r in read_records(records) if r["event"] == "worker-reaped"] == [pid]
    release(records, *tokens)


@pytest.mark.parametrize(
    ("hook", "extra_config"),
    [(True, ""), (False, ""), (False, "preload_app = True\n")],
    ids=["worker_exit line", "plain gunicorn", "plain gunicorn --preload"],
)
@pytest.mark.parametrize("name", SENDFILE_SERVERS)
def test_work_still_running_at_the_limit_is_logged_by_name_and_count(
    name: str, hook: bool, extra_config: str, tmp_path: Path
) -> None:
    """Without a line in a config file too: the worker finds its own graceful_timeout."""
    check_pending_work_is_said_before_the_kill(name, tmp_path, hook, extra_config)


@pytest.mark.parametrize("name", SENDFILE_SERVERS)
def test_work_deferred_by_a_request_running_at_sigterm_is_said_before_the_kill(
    name: str, tmp_path: Path
) -> None:
    """The worker's wait ends before the kill, counted from the stop, not from its last request.

    ``cleanup-middleware serve --graceful-timeout 4``: a request still running when the worker
    is told to stop defers two functions, which never finish.
    """
    records = tmp_path / "records"
    records.mkdir()
    token = f"late-{uuid.uuid4().hex[:8]}"
    own_config = tmp_path / "own.gunicorn.conf.py"
    own_config.write_text(REAPED_RECORD)
    args = ["defer_app:default_pool_app", "--workers", "1", "--graceful-timeout", "4"]
    args += ["--timeout", "30", "-c", str(own_config)]
    if name == "gunicorn-gthread":
        args += ["--worker-class", "gthread", "--threads", "4"]
    with (
        run_serve(args, {RECORD_DIR_ENV: str(records)}, tmp_path) as server,
        ThreadPoolExecutor(max_workers=1) as client,
    ):
        response = client.submit(http_get, f"{server.url}/defer-late?token={token}")
        wait_for_records(records, lambda rs: "request-started" in events_of(records, token))
        server.process.send_signal(signal.SIGTERM)
        wait_for_log(server, "Handling signal: term")
        # Not a measurement: it makes the request end more than 1 s after the stop, which a
        # wait of graceful_timeout less 1 s counted from the request's end would outlast.
        time.sleep(1.5)
        release(records, f"respond-{token}")
        pid = int(response.result(WAIT).body)
        server.process.wait(WAIT)
    log = server.log()
    assert "for 2 deferred functions still queued or running, lost if the process" in log
    assert (
        "abandoned 2 deferred functions still queued or running after 3.0 s: "
        "2 x defer_app.wait_for_go"
    ) in log
    assert [r["worker"] for r in read_records(records) if r["event"] == "worker-reaped"] == [pid]
    release(records, f"{token}-1", f"{token}-2")


def test_max_requests_recycling_waits_for_the_last_request_s_work(tmp_path: Path) -> None:
    token = f"recycled-{uuid.uuid4().hex[:8]}"
    # The readiness probe is the first request, so the worker recycles after this one.
    with gunicorn("gunicorn-sync", tmp_path, "max_requests = 2\n") as (server, records):
        pid = defer_request(server, token)
        wait_for_log(server, f"Worker exiting (pid: {pid})")
        release(records, token)
        wait_for_records(records, lambda rs: "deferred-done" in events_of(records, token))
        assert int(http_get(server.url + "/").body) != pid  # a new worker answers
    assert {r["pid"] for r in read_records(records)} == {pid}


def test_sighup_reload_waits_for_the_old_worker_s_work(tmp_path: Path) -> None:
    token = f"reload-{uuid.uuid4().hex[:8]}"
    with gunicorn("gunicorn-sync", tmp_path) as (server, records):
        pid = defer_request(server, token)
        server.process.send_signal(signal.SIGHUP)
        wait_for_log(server, f"Worker exiting (pid: {pid})")
        release(records, token)
        wait_for_records(records, lambda rs: "deferred-done" in events_of(records, token))
    assert [r["pid"] for r in read_records(records) if r["event"] == "deferred-done"] == [pid]


def test_without_the_gunicorn_hook_the_exit_net_waits(tmp_path: Path) -> None:
    token = f"atexit-{uuid.uuid4().hex[:8]}"
    with gunicorn("gunicorn-sync", tmp_path, None, "defer_app:default_pool_app") as (
        server,
        records,
    ):
        pid = defer_request(server, token)
        wait_for_records(records, lambda rs: "deferred-start" in events_of(records, token))
        server.process.send_signal(signal.SIGTERM)
        wait_for_log(server, f"Worker exiting (pid: {pid})")
        release(records, token)
        server.process.wait(WAIT)
    assert events_of(records, token) == ["accepted", "deferred-start", "deferred-done"]


def test_serve_installs_the_worker_exit_hook(tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    token = f"serve-{uuid.uuid4().hex[:8]}"
    own_config = tmp_path / "own.gunicorn.conf.py"
    own_config.write_text(
        "def worker_exit(server, worker):\n"
        "    from serverkit import record\n"
        "    record('own-worker-exit')\n"
    )
    args = ["defer_app:application", "--workers", "1", "--graceful-timeout", "3"]
    args += ["-c", str(own_config)]
    with run_serve(args, {RECORD_DIR_ENV: str(records)}, tmp_path) as server:
        pid = defer_request(server, token)
        wait_for_records(records, lambda rs: "deferred-start" in events_of(records, token))
        server.process.send_signal(signal.SIGTERM)
        # Only the hook's limit (graceful_timeout less 1 s) logs before gunicorn's SIGKILL.
        wait_for_log(server, "abandoned 1 deferred function")
        # ... and the operator's own worker_exit hook (in -c FILE) still runs.
        wait_for_records(records, lambda rs: any(r["event"] == "own-worker-exit" for r in rs))
        server.process.wait(WAIT)
    assert [r["pid"] for r in read_records(records) if r["event"] == "own-worker-exit"] == [pid]
    release(records, token)
