"""``examples/shop_rq.py`` with a slow commit: each order's transaction waits before COMMIT.

A receipt enqueued before the commit would then reach the RQ worker, which runs while the
requests are made, before the order is in the database; ``on_success`` enqueues after it.
"""

from __future__ import annotations

import sqlite3
import time

import shop
from shop_rq import app

__all__ = ["app"]

_commit = shop.commit


def slow_commit(conn: sqlite3.Connection) -> None:
    time.sleep(0.5)  # widens the window a too-early task would fall in; nothing is timed
    _commit(conn)


shop.commit = slow_commit
