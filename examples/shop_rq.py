"""The shop of ``shop.py`` with RQ: each receipt is enqueued once its order has committed.

The line that matters is in :func:`send_receipt_later`: ``queue.enqueue(send_receipt, number)``
is registered with ``on_success``, so it runs when the response closes, after the order's
transaction committed, and only if the request succeeded. Run it as ``shop.py`` says; the
worker is ``rq worker shop`` (``--url`` for a Redis server other than the default).
"""

from __future__ import annotations

from redis import Redis
from rq import Queue
from shop import REDIS_URL, make_app, send_receipt

import cleanup_middleware.flask

queue = Queue("shop", connection=Redis.from_url(REDIS_URL))


def send_receipt_later(number: str) -> None:
    cleanup_middleware.flask.on_success(queue.enqueue, send_receipt, number)


app = make_app(send_receipt_later)
