"""Cleanup for every request of ``flask_download.py``, declared in ``examples/cleanup.toml``.

Some cleanup is the operator's business rather than the view's: these hooks are named in a config
file and run for every matching request, without a line in the application. Each takes the WSGI
environ:

* :func:`log_closed` (a ``call`` hook) writes one line to the server's error log when a response
  has been closed;
* :func:`scratch_dir` (a ``context`` hook) gives the request a scratch directory, at
  ``environ["flask_download.scratch_dir"]``, and removes it with everything in it once the
  response is closed, whether the request succeeded or failed.

Check the config, which imports these hooks, as CI would (from the project's folder)::

    cleanup-middleware check --chdir examples cleanup.toml
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

#: Where :func:`scratch_dir` puts the request's scratch directory in the environ.
SCRATCH_DIR_KEY = "flask_download.scratch_dir"


def log_closed(environ: WSGIEnvironment) -> None:
    """Note in the server's error log that this request's response was closed."""
    errors = environ["wsgi.errors"]
    errors.write(
        f"cleanup-middleware example: {environ['REQUEST_METHOD']} "
        f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')} closed\n"
    )
    errors.flush()


@contextmanager
def scratch_dir(environ: WSGIEnvironment) -> Iterator[str]:
    """A new scratch directory for this request, removed once its response is closed.

    It is made where ``flask_download.py`` makes its files (``$FLASK_DOWNLOAD_TMPDIR``, else the
    system's temporary directory).
    """
    path = tempfile.mkdtemp(prefix="scratch-", dir=os.environ.get("FLASK_DOWNLOAD_TMPDIR") or None)
    environ[SCRATCH_DIR_KEY] = path
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
