"""Stream rows from SQLite with the connection held open for exactly the life of the response.

A generator body is still running after the application has returned, so the connection can be
closed neither in the application (too early) nor reliably in the generator's ``finally``
(which never runs when the server closes the body before the first chunk).
``enter_context(environ, closing(conn))`` closes it when the server closes the response,
whatever happened: the rows were all sent, the client went away, or the body failed. The cursor
is closed the same way rather than left to garbage collection, which may never free it.

Run it under the standard library's server::

    python examples/sqlite_app.py        # then fetch http://127.0.0.1:8000/
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import closing
from typing import TYPE_CHECKING

from cleanup_middleware import CleanupMiddleware, enter_context

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

DEFAULT_DB = os.path.join(tempfile.gettempdir(), "cleanup-middleware-example.sqlite3")


def create_sample_db(path: str, rows: int = 1000) -> None:
    """Create the ``items`` table with ``rows`` rows, unless the database already has it."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
        if conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0:
            conn.executemany(
                "INSERT INTO items (id, name) VALUES (?, ?)",
                ((i, f"item {i}") for i in range(1, rows + 1)),
            )


def make_app(db_path: str) -> WSGIApplication:
    """The application, reading ``db_path`` (a sample database is created if it is empty)."""
    create_sample_db(db_path)

    def rows_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        # check_same_thread=False: a threaded server may close the body on another thread.
        conn = enter_context(environ, closing(sqlite3.connect(db_path, check_same_thread=False)))
        # The cursor is closed too, and first (last-registered-first): an open cursor keeps the
        # database file open after conn.close(), and the generator's frame may keep the cursor
        # alive after the body is closed (since Python 3.12, when it never started).
        cursor = enter_context(
            environ, closing(conn.execute("SELECT id, name FROM items ORDER BY id"))
        )
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return _lines(cursor)

    return CleanupMiddleware(rows_app)


def _lines(cursor: sqlite3.Cursor) -> Iterator[bytes]:
    # Rows are fetched as the server asks for chunks, so the connection must stay open until
    # the server closes the body.
    for item_id, name in cursor:
        yield f"{item_id}\t{name}\n".encode()


application = make_app(os.environ.get("SQLITE_APP_DB") or DEFAULT_DB)


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    with make_server("127.0.0.1", 8000, application) as server:
        print("serving http://127.0.0.1:8000/ (Ctrl-C to stop)")
        server.serve_forever()
