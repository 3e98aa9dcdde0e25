"""The shop of ``shop.py`` with Celery: each receipt is sent once its order has committed.

As in ``shop_rq.py``, with ``receipt.delay`` registered with ``on_success``. Run it as
``shop.py`` says, with this worker (a process of its own; ``--pool=solo`` runs one task at a
time in it)::

    SHOP_DB=/tmp/shop.sqlite3 celery -A shop_celery:celery worker --pool=solo -c 1
"""

from __future__ import annotations

from celery import Celery
from shop import REDIS_URL, make_app, send_receipt

import cleanup_middleware.flask

celery = Celery("shop_celery", broker=REDIS_URL)
receipt = celery.task(name="shop.receipt")(send_receipt)


def send_receipt_later(number: str) -> None:
    cleanup_middleware.flask.on_success(receipt.delay, number)


app = make_app(send_receipt_later)
