"""Raw HTTP clients for the fault matrix and the load test: read all, or go away early.

Every function talks to 127.0.0.1 only, every socket operation has a timeout, and a client that
leaves early closes with ``SO_LINGER`` 0, so the kernel sends RST and the server's next write
fails as it does when a real client vanishes.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"
CLIENTS = ("reads_all", "leaves_before_body", "leaves_mid_body")


@dataclass
class Outcome:
    """What the client saw before it finished or left."""

    status: int | None = None  # None: no status line arrived (the connection just closed)
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names
    body: bytes = b""  # de-chunked when the response was chunked and complete
    complete: bool = False  # the server ended the response normally
    reset: bool = False  # the server reset or closed the connection in the middle


def _request(method: str, path: str, port: int, headers: dict[str, str] | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _parse_head(data: bytes, outcome: Outcome) -> bytes:
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    outcome.status = int(status_line.split()[1])
    for line in header_lines:
        key, _, value = line.partition(":")
        outcome.headers[key.strip().lower()] = value.strip()
    return rest


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    """The body of a chunked message, and whether its last chunk arrived."""
    out = bytearray()
    while True:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            return bytes(out), False
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            return bytes(out), False
        if size == 0:
            return bytes(out), True
        if len(rest) < size + 2:
            out += rest[:size]
            return bytes(out), False
        out += rest[:size]
        data = rest[size + 2 :]


def request(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    leave: str = "reads_all",
    read_bytes: int = 256 * 1024,
    timeout: float = 15.0,
    rcvbuf: int | None = None,
) -> Outcome:
    """Send one request and behave as ``leave`` says (one of :data:`CLIENTS`).

    * ``reads_all``: read until the server closes the connection;
    * ``leaves_before_body``: wait until the response starts arriving, read nothing, reset;
    * ``leaves_mid_body``: read the headers and ``read_bytes`` of body, then reset.
    """
    if leave not in CLIENTS:
        raise ValueError(f"unknown client behaviour {leave!r}")
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    outcome = Outcome()
    try:
        sock.connect((HOST, port))
        sock.sendall(_request(method, path, port, headers))
        if leave == "leaves_before_body":
            readable, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                raise TimeoutError(f"no answer to {method} {path} within {timeout} s")
            return outcome
        data = bytearray()
        head_done = False
        body_seen = 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method} {path} still going after {timeout} s")
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                outcome.reset = True
                break
            if not chunk:
                break
            data += chunk
            if not head_done and b"\r\n\r\n" in data:
                head_done = True
                body_seen = len(_parse_head(bytes(data), Outcome()))
            elif head_done:
                body_seen += len(chunk)
            if leave == "leaves_mid_body" and head_done and body_seen >= read_bytes:
                break
        if b"\r\n\r\n" in data:
            body = _parse_head(bytes(data), outcome)
            if outcome.headers.get("transfer-encoding", "").lower() == "chunked":
                body, ended = _dechunk(body)
            else:
                length = outcome.headers.get("content-length")
                ended = length is None or (method == "HEAD") or len(body) >= int(length)
            outcome.body = body
            outcome.complete = ended and not outcome.reset
        return outcome
    finally:
        _reset(sock)
