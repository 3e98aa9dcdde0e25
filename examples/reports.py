"""The stand-in for real work that the download examples share: a fresh temporary file.

Each ``*_download.py`` example (and ``django_download``) answers ``GET /download?size=N`` with a
file made here, sent by its framework's own file response and deleted once the server has sent
it. The files go to the system's temporary directory (``$TMPDIR``) unless told otherwise.
"""

from __future__ import annotations

import os
import tempfile

#: The content of every report: this line, over and over, cut at the requested size.
LINE = b"cleanup-middleware: this file is deleted after the response\n"
DEFAULT_SIZE = 8 * 1024 * 1024
MAX_SIZE = 1024 * 1024 * 1024
_LINES_PER_WRITE = 16 * 1024  # about 1 MiB per write()


def report_size(value: str | None) -> int:
    """The ``size`` query parameter as a byte count: 8 MiB when absent, at most 1 GiB."""
    return min(int(value or DEFAULT_SIZE), MAX_SIZE)


def make_report(size: int, directory: str | None = None) -> str:
    """Write ``size`` bytes to a new temporary file in ``directory``; return its path."""
    fd, path = tempfile.mkstemp(prefix="report-", suffix=".txt", dir=directory)
    whole_lines, rest = divmod(size, len(LINE))
    with os.fdopen(fd, "wb") as f:
        for _ in range(whole_lines // _LINES_PER_WRITE):
            f.write(LINE * _LINES_PER_WRITE)
        f.write(LINE * (whole_lines % _LINES_PER_WRITE) + LINE[:rest])
    return path
