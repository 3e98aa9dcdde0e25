"""``on_success`` in front of a real task queue: RQ and Celery on a real Redis, under gunicorn.

The shop of ``examples/shop.py`` runs under gunicorn (a sync worker, a real subprocess on
127.0.0.1); each order is written in an ``enter_context`` transaction that commits at close, and
its receipt is enqueued with ``on_success`` (``examples/shop_rq.py``, ``shop_celery.py``). A
worker runs as a separate process, on a ``redis-server`` that this module starts on a free
loopback port, without persistence, in a temporary directory, and stops at the end. Checked
from outside, through the shop's database:

* the worker writes exactly one receipt per successful order, and none for an order whose view
  raised and whose error handler answered 500;
* every receipt found its order committed (the task raises otherwise, and RQ keeps it in its
  failed registry), also when the commit is slow: the worker runs while the requests are made,
  and ``tests/apps/shop_slow.py`` holds each commit back, so a task enqueued before the commit
  would run before it;
* with the broker stopped, the request still answers, and gunicorn's log names the failing
  hook and the request's method and path.

Skipped, with the command that installs it, where ``redis-server`` is missing.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from serverkit import HOST, Server, child_env, run_server

redis = pytest.importorskip("redis", reason="needs redis (the 'test' extra)")
rq = pytest.importorskip("rq", reason="needs rq (the 'test' extra)")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="needs redis-server (the Debian package redis-server): apt-get install redis-server",
)
WAIT = 20.0  # seconds an event may take before the test fails (never a speed claim)


class RedisServer:
    """A ``redis-server`` on a free port of 127.0.0.1, without persistence; see :func:`start`."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process, self.port, self.log = process, port, log

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def free_port() -> int:
    # Redis cannot listen on port 0 and say which it got: take one the kernel gives out now.
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_redis(directory: Path) -> RedisServer:
    """Start ``redis-server`` in ``directory``; another port if the one picked was taken."""
    assert REDIS_SERVER is not None
    for _ in range(5):  # bounded: another process may take the port before redis does
        port = free_port()
        log = directory / f"redis-{port}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(port),
                    "--bind",
                    HOST,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(directory),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = RedisServer(process, port, log)
        client = redis.Redis(host=HOST, port=port, socket_timeout=1.0)
        deadline = time.monotonic() + WAIT
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(redis.exceptions.ConnectionError):
                if client.ping():
                    return server
            time.sleep(0.02)
        server.stop()
        if b"Address already in use" not in log.read_bytes():
            break
    raise RuntimeError(f"redis-server did not start:\n{log.read_text()}")


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="redis-") as directory:
        server = start_redis(Path(directory))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def broker() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def shop_env(broker: RedisServer, db: Path) -> dict[str, str]:
    return {"REDIS_URL": broker.url, "SHOP_DB": str(db)}


@contextlib.contextmanager
def worker(
    command: list[str], env: dict[str, str], log: Path, cold: signal.Signals
) -> Iterator[subprocess.Popen[bytes]]:
    """A task queue's worker, a process of its own, stopped by SIGTERM (a warm shutdown), then
    by ``cold`` (a cold shutdown), then killed, each after a few seconds."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            env=child_env(env, [EXAMPLES]),
            cwd=EXAMPLES,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        for stop in (signal.SIGTERM, cold):
            process.send_signal(stop)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(3)
                break
        else:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(WAIT)


def rq_worker(
    broker: RedisServer, db: Path, log: Path
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    # SimpleWorker runs each job in the worker process, without a fork per job. A second
    # SIGTERM is RQ's cold shutdown: RQ 3.0's warm one may wait up to 60 s for its pubsub thread
    # with redis-py 8.2 (PubSubWorkerThread.stop() joins it, while it waits for a message).
    command = [sys.executable, "-m", "rq.cli", "worker", "--url", broker.url]
    command += ["--worker-class", "rq.worker.SimpleWorker", "shop"]
    return worker(command, shop_env(broker, db), log, signal.SIGTERM)


def order(server: Server, number: str, item: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, server.port, timeout=WAIT)
    try:
        conn.request(
            "POST",
            "/orders",
            body=urlencode({"number": number, "item": item}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def rows(db: Path, query: str) -> list[tuple[str, ...]]:
    with contextlib.closing(sqlite3.connect(db, timeout=WAIT)) as conn:
        return conn.execute(query).fetchall()


def wait_for_receipts(db: Path, count: int, *logs: Path) -> list[str]:
    deadline = time.monotonic() + WAIT
    while True:
        with contextlib.suppress(sqlite3.OperationalError):  # no table before the first order
            numbers = [number for (number,) in rows(db, "SELECT number FROM outbox")]
            if len(numbers) >= count:
                return numbers
        if time.monotonic() >= deadline:
            shown = "\n".join(f"{log}:\n{log.read_text(errors='replace')}" for log in logs)
            raise AssertionError(f"{count} receipts did not come within {WAIT} s:\n{shown}")
        time.sleep(0.05)


def place_orders(server: Server) -> tuple[list[str], list[str]]:
    """Orders, some of them failing; the last one succeeds. Returns (succeeded, failed)."""
    token = uuid.uuid4().hex[:8]
    succeeded: list[str] = []
    failed: list[str] = []
    for n, item in enumerate(["book", "sold-out", "pen", "sold-out", "lamp"]):
        number = f"{token}-{n}"
        status, body = order(server, number, item)
        if item == "sold-out":
            assert (status, body) == (500, b"sold out, nothing was ordered\n"), server.describe()
            failed.append(number)
        else:
            assert (status, body) == (200, b"ordered\n"), server.describe()
            succeeded.append(number)
    return succeeded, failed


@pytest.mark.parametrize("app", ["shop_rq:app", "shop_slow:app"], ids=["commit", "slow commit"])
def test_rq_one_receipt_per_successful_order_after_its_commit(
    app: str, broker: RedisServer, tmp_path: Path
) -> None:
    db = tmp_path / "shop.db"
    env = shop_env(broker, db)
    with (
        rq_worker(broker, db, tmp_path / "rq.log"),
        run_server(
            "gunicorn-sync", app, env=env, pythonpath=[EXAMPLES], log_dir=tmp_path
        ) as server,
    ):
        succeeded, _ = place_orders(server)
        receipts = wait_for_receipts(db, len(succeeded), tmp_path / "rq.log", server.log_path)
    # One worker takes jobs in order, so a job of a failed order would have run before the
    # last receipt came.
    assert sorted(receipts) == sorted(succeeded)
    assert rows(db, "SELECT number FROM orders ORDER BY number") == [(n,) for n in succeeded]
    queue = rq.Queue("shop", connection=redis.Redis.from_url(broker.url))
    assert queue.count == 0
    assert rq.registry.FailedJobRegistry(queue=queue).count == 0, (tmp_path / "rq.log").read_text()


def test_rq_with_the_broker_stopped_the_request_answers_and_the_failure_is_logged(
    tmp_path: Path,
) -> None:
    db = tmp_path / "shop.db"
    with running_redis() as down:
        env = shop_env(down, db)
        with run_server(
            "gunicorn-sync", "shop_rq:app", env=env, pythonpath=[EXAMPLES], log_dir=tmp_path
        ) as server:
            down.stop()
            assert order(server, "B1", "book") == (200, b"ordered\n")
            line = "cleanup hook rq.queue.Queue.enqueue failed for POST /orders"
            deadline = time.monotonic() + WAIT
            while line not in server.log() and time.monotonic() < deadline:
                time.sleep(0.05)
            log = server.log()
    assert line in log, log
    assert "redis.exceptions.ConnectionError" in log
    # The order itself committed: the enqueue runs after the commit.
    assert rows(db, "SELECT number FROM orders") == [("B1",)]
    assert "B1" not in log.split(line)[0]  # no request data beyond method and path


def test_celery_one_receipt_per_successful_order(broker: RedisServer, tmp_path: Path) -> None:
    pytest.importorskip("celery", reason="needs celery (the 'test' extra)")
    db = tmp_path / "shop.db"
    env = shop_env(broker, db)
    log = tmp_path / "celery.log"
    command = [sys.executable, "-m", "celery", "-A", "shop_celery:celery", "worker", "--pool=solo"]
    command += ["-c", "1", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    with (
        worker(command, env, log, signal.SIGQUIT),
        run_server(
            "gunicorn-sync", "shop_celery:app", env=env, pythonpath=[EXAMPLES], log_dir=tmp_path
        ) as server,
    ):
        succeeded, _ = place_orders(server)
        receipts = wait_for_receipts(db, len(succeeded), log, server.log_path)
    assert sorted(receipts) == sorted(succeeded)
    assert "LookupError" not in log.read_text()
