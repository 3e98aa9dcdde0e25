"""Pieces shared by the test apps: temporary files, and hooks that leave records.

Everything a hook does is reported with :func:`serverkit.record`, keyed by the ``token`` query
parameter of the request, so that a test can find the records of its own request among those
of every other request the shared server handled.
"""

from __future__ import annotations

import os
import tempfile
from types import TracebackType

from serverkit import record

#: Environment variable naming the directory for the apps' temporary files (optional).
TMP_DIR_ENV = "CLEANUP_TMP_DIR"

# Only this much of a file is written; the rest is a hole, so a large file costs nothing.
_PATTERN_BYTES = 64 * 1024


def file_content_prefix(token: str, size: int) -> bytes:
    """The bytes :func:`make_temp_file` writes at the start of the file (zeros follow)."""
    line = f"{token}\n".encode()
    return (line * (_PATTERN_BYTES // len(line) + 1))[: min(size, _PATTERN_BYTES)]


def make_temp_file(token: str, size: int, prefix: str = "cleanup-test-") -> str:
    """Create a fresh temporary file of ``size`` bytes for this request; record its path."""
    fd, path = tempfile.mkstemp(prefix=prefix, dir=os.environ.get(TMP_DIR_ENV))
    try:
        os.write(fd, file_content_prefix(token, size))
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    record("created", token=token, path=path, size=size)
    return path


def delete_file(token: str, path: str, via: str) -> None:
    """The cleanup under test: delete the request's file, and record that (and whether it was
    still there, so a second run would show up as ``existed: false``)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        record("deleted", token=token, path=path, via=via, existed=False)
        raise
    record("deleted", token=token, path=path, via=via, existed=True)


def note(token: str, via: str) -> None:
    """A hook that only records that it ran."""
    record("hook", token=token, via=via)


class Witness:
    """A context manager for ``enter_context`` that records how it was exited."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __enter__(self) -> Witness:
        record("enter", token=self.token)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        record("exit", token=self.token, failure=exc_type.__name__ if exc_type else None)
