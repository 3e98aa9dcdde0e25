"""A small Flask shop whose receipts go out from a task queue, only for orders that committed.

Each order is written in a database transaction held open for the life of the response
(``enter_context``): it commits when the response closes if the request succeeded, and rolls
back if it failed. A task enqueued from the view the usual way can reach a worker before that
commit, and the worker then finds no order. Registered with ``on_success``, the enqueue runs at
close after the commit, and only if the request succeeded.

This module is the shop; ``shop_rq.py`` and ``shop_celery.py`` give it a task queue each, with
the one line that differs. Both need a Redis server (``apt-get install redis-server``). Run the
RQ one with a worker in another terminal (``examples/`` on the path of both)::

    cd examples
    SHOP_DB=/tmp/shop.sqlite3 gunicorn shop_rq:app
    SHOP_DB=/tmp/shop.sqlite3 rq worker shop

    curl -d number=A1 -d item=book http://127.0.0.1:8000/orders           # ordered; receipt
    curl -d number=A2 -d item=sold-out http://127.0.0.1:8000/orders       # 500; no receipt

``$REDIS_URL`` names the Redis server (default ``redis://127.0.0.1:6379/0``).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager

from flask import Flask, request

import cleanup_middleware.flask
from cleanup_middleware import enter_context

DB = os.environ.get("SHOP_DB", os.path.join(tempfile.gettempdir(), "cleanup-middleware-shop.db"))
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
SOLD_OUT = {"sold-out"}


class SoldOut(Exception):
    """The item ordered is not in stock: the view fails, and the order is rolled back."""


def connect() -> sqlite3.Connection:
    """A connection to the shop's database, tables created; transactions are explicit."""
    # check_same_thread=False: a threaded server may close the response on another thread.
    conn = sqlite3.connect(DB, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE IF NOT EXISTS orders (number TEXT PRIMARY KEY, item TEXT)")
    conn.execute("CREATE TABLE IF NOT EXISTS outbox (number TEXT, message TEXT)")
    return conn


def commit(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")


@contextmanager
def transaction() -> Iterator[sqlite3.Connection]:
    """A transaction that commits when the request succeeded, and rolls back when it failed."""
    with closing(connect()) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        commit(conn)


def send_receipt(number: str) -> None:
    """The task, run by a worker: the receipt of a committed order goes to the outbox."""
    with closing(connect()) as conn:
        row = conn.execute("SELECT item FROM orders WHERE number = ?", (number,)).fetchone()
        if row is None:
            raise LookupError(f"order {number} is not in the database")
        conn.execute(
            "INSERT INTO outbox (number, message) VALUES (?, ?)",
            (number, f"Thank you for your order {number}: one {row[0]}."),
        )


def make_app(send_receipt_later: Callable[[str], None]) -> Flask:
    """The shop; ``send_receipt_later(number)`` is called in the view of each order."""
    app = Flask(__name__)
    cleanup_middleware.flask.init_app(app)

    @app.errorhandler(SoldOut)
    def sold_out(exc: SoldOut) -> tuple[str, int]:
        return "sold out, nothing was ordered\n", 500

    @app.post("/orders")
    def order() -> str:
        number, item = request.form["number"], request.form["item"]
        db = enter_context(request.environ, transaction())
        db.execute("INSERT INTO orders (number, item) VALUES (?, ?)", (number, item))
        send_receipt_later(number)
        if item in SOLD_OUT:
            raise SoldOut(item)  # answered with a 500: the order rolls back, no receipt
        return "ordered\n"

    return app
