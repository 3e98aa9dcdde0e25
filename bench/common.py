"""Shared pieces of the benchmark suite.

* :class:`Section` and :class:`Target`: what each measurement module returns, so that
  ``python -m bench`` can print one combined table and draw one chart;
* :class:`GunicornServer`: one gunicorn master with one worker on an ephemeral loopback port,
  always reaped, with the worker's :class:`psutil.Process` for CPU and memory readings;
* :func:`download`: a raw-socket HTTP/1.1 GET that reads into a reused buffer, so that the
  client is never the bottleneck of a 1 GiB transfer;
* :func:`big_file`: a temporary file of real (non-sparse) data, written, synced and read back
  once so that every variant is served from a warm page cache;
* :func:`machine`: the machine and the versions the figures were measured on.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil

from cleanup_middleware import cleanup

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
GIB = 1 << 30


@dataclass
class Target:
    """One row of the combined table: a figure, its target and whether it was met."""

    figure: str
    measured: str
    target: str
    passed: bool


@dataclass
class Section:
    """The result of one measurement module."""

    key: str
    title: str
    #: Column names and rows of the module's own detail table.
    columns: list[str]
    rows: list[list[str]]
    targets: list[Target]
    #: Raw figures for results.json and the chart.
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    """Render a GitHub-flavoured Markdown table (also readable as plain text)."""
    lines = [columns, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    lines.insert(1, ["-" * w for w in widths])
    return "\n".join(
        "| " + " | ".join(line[i].ljust(w) for i, w in enumerate(widths)) + " |" for line in lines
    )


def section_text(section: Section) -> str:
    """The detail table and notes of one section, as printed and written to results.md."""
    parts = [f"### {section.title}", "", markdown_table(section.columns, section.rows)]
    if section.notes:
        parts += ["", *section.notes]
    return "\n".join(parts)


def targets_table(sections: list[Section]) -> str:
    """The combined table: every target of every section with PASS or MISS."""
    rows = [
        [s.key, t.figure, t.measured, t.target, "PASS" if t.passed else "MISS"]
        for s in sections
        for t in s.targets
    ]
    return markdown_table(["bench", "figure", "measured", "target", "result"], rows)


def standalone(run: Callable[[bool], Section]) -> None:
    """Entry point of a module run alone: ``python -m bench.<module> [--quick]``."""
    main = sys.modules["__main__"]
    parser = argparse.ArgumentParser(
        prog=f"python -m {main.__spec__.name}" if main.__spec__ else None,
        description=(main.__doc__ or "").split("\n")[0],
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    section = run(parser.parse_args().quick)
    print()
    print(section_text(section))
    print()
    print(targets_table([section]))


def machine() -> dict[str, str]:
    """The machine and the versions the figures were measured on."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "memory": f"{psutil.virtual_memory().total / GIB:.0f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "gunicorn": version("gunicorn"),
        "flask": version("flask"),
        "werkzeug": version("werkzeug"),
        "cleanup-middleware": version("cleanup-middleware"),
        # The optional C base of ResponseCleanup, or the pure-Python one (docs/performance.md).
        "ResponseCleanup base": "C (_speedups)" if cleanup.SPEEDUPS else "pure Python",
    }


class OtherLoad:
    """How much CPU other processes used while a measurement ran: the machine's noise.

    System-wide busy CPU time (psutil) minus this process's and its reaped children's
    (``getrusage``), over the interval between :meth:`start` and :meth:`stop`, as a fraction
    of all cores. 0 on an idle machine; the gunicorn servers are children, reaped by then.
    """

    def __init__(self) -> None:
        self.fraction = 0.0
        self._start = (0.0, 0.0, 0.0)

    @staticmethod
    def _now() -> tuple[float, float, float]:
        times = psutil.cpu_times()
        idle = ("idle", "iowait", "guest", "guest_nice")  # guest time is counted in user too
        busy = sum(times) - sum(getattr(times, name, 0.0) for name in idle)
        own = sum(
            usage.ru_utime + usage.ru_stime
            for usage in (
                resource.getrusage(resource.RUSAGE_SELF),
                resource.getrusage(resource.RUSAGE_CHILDREN),
            )
        )
        return time.monotonic(), busy, own

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> float:
        """The fraction of the machine's CPU that other processes used since :meth:`start`."""
        end = self._now()
        wall, busy, own = (e - s for e, s in zip(end, self._start))  # noqa: B905 - py39
        cores = len(os.sched_getaffinity(0))
        self.fraction = max(0.0, busy - own) / (wall * cores) if wall > 0 else 0.0
        return self.fraction


def size_text(size: int) -> str:
    """``size`` bytes as "256 MiB" or "1 GiB"."""
    return f"{size // MIB} MiB" if size < GIB else f"{size // GIB} GiB"


def median(values: list[float]) -> float:
    """The median (the middle value, or the mean of the two middle values)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def median_interval(values: list[float]) -> tuple[float, float]:
    """An approximate 95% confidence interval of the median, from the order statistics.

    Distribution-free: the values of rank (n - 1.96 sqrt(n)) / 2 from either end.
    """
    ordered = sorted(values)
    k = max(0, int((len(ordered) - 1.96 * len(ordered) ** 0.5) / 2))
    return ordered[k], ordered[-1 - k]


def rotated(items: list[Any], by: int) -> list[Any]:
    """``items`` rotated left by ``by``: the order of variants in round ``by``."""
    by %= len(items)
    return items[by:] + items[:by]


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of ``proc`` so far (user plus system).

    Read from ``/proc/<pid>/schedstat`` (nanoseconds) where there is one, else from psutil
    (clock ticks, 10 ms: too coarse for short runs).
    """
    try:
        with open(f"/proc/{proc.pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except OSError:
        times = proc.cpu_times()
        return times.user + times.system


@contextlib.contextmanager
def big_file(size: int, directory: str) -> Iterator[str]:
    """A file of ``size`` bytes of real data in ``directory``, in the page cache, then deleted.

    The data is a random 1 MiB block written over and over: every page is allocated on disk
    (not sparse), and the file is synced (so no writeback runs during the measurements) and
    read back once (so every variant reads it from the page cache).
    """
    path = os.path.join(directory, "big.bin")
    block = os.urandom(MIB)
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(block)
        f.write(block[: size % MIB])
        f.flush()
        os.fsync(f.fileno())
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(4 * MIB)
        while f.readinto(buf):
            pass
    try:
        yield path
    finally:
        os.unlink(path)


@dataclass
class Download:
    """What :func:`download` saw: the status line, the body size and the elapsed time."""

    status: str
    body_bytes: int
    seconds: float


def download(
    port: int,
    target: str,
    buf: bytearray,
    on_chunk: Callable[[int], None] | None = None,
    timeout: float = 120.0,
) -> Download:
    """GET ``target`` from 127.0.0.1:``port`` with ``Connection: close`` and read to EOF.

    The body is read with ``recv_into`` into ``buf`` and thrown away, so the client costs a
    system call per buffer and nothing per byte. ``on_chunk(total_bytes_so_far)`` is called
    after every read when given. EOF also means the sync worker has finished the request,
    ``close()`` of the body included (gunicorn closes the body before the connection).
    """
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    view = memoryview(buf)
    head = b""
    total = 0
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        while n := sock.recv_into(view):
            if len(head) < 4096 and b"\r\n\r\n" not in head:
                head += bytes(view[:n])
            total += n
            if on_chunk is not None:
                on_chunk(total)
    seconds = time.perf_counter() - start
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    header_len = head.find(b"\r\n\r\n") + 4 if b"\r\n\r\n" in head else total
    return Download(status, total - header_len, seconds)


class GunicornServer:
    """``gunicorn <app>`` with one worker on an ephemeral 127.0.0.1 port, reaped on exit.

    The listening socket is created here and handed over as ``fd://N``, so the port is known
    without a race. ``worker_args`` choose the worker class (sync unless given). ``env`` is
    added to the server's environment (the apps in :mod:`bench.apps` read their settings from
    it). On entry the server has answered ``/ping`` and :attr:`worker` is its one worker
    process.
    """

    def __init__(
        self,
        name: str,
        app: str,
        log_dir: str,
        env: dict[str, str] | None = None,
        config: str | None = None,
        worker_args: tuple[str, ...] = ("--worker-class", "sync"),
    ) -> None:
        self.app = app
        self.env = env or {}
        self.config = config
        self.worker_args = worker_args
        self.log_path = os.path.join(log_dir, f"gunicorn-{name}.log")
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker: psutil.Process | None = None

    def start(self) -> None:
        """Start the master; :meth:`wait_ready` then waits for the worker."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen(1024)
            self.port = sock.getsockname()[1]
            fd = sock.fileno()
            cmd = [sys.executable, "-m", "gunicorn", "--bind", f"fd://{fd}", "--workers", "1"]
            cmd += [*self.worker_args, "--timeout", "300"]
            cmd += ["--graceful-timeout", "5", "--log-level", "warning"]
            if self.config:
                cmd += ["--config", self.config]
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [*cmd, self.app],
                    cwd=ROOT,
                    env={**os.environ, **self.env},
                    pass_fds=(fd,),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until ``/ping`` answers 200 and the one worker is known."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        buf = bytearray(4096)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn {self.app} exited:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if download(self.port, "/ping", buf, timeout=5).status.endswith(" 200 OK"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn {self.app} did not answer:\n{self.log_tail()}")
            time.sleep(0.05)
        workers = psutil.Process(self.proc.pid).children()
        if len(workers) != 1:
            raise RuntimeError(f"gunicorn {self.app}: expected one worker, found {workers}")
        self.worker = workers[0]

    def log_tail(self) -> str:
        """The end of the server's log (it lives in a temporary directory)."""
        with open(self.log_path, errors="replace") as f:
            return f.read()[-3000:]

    def stop(self) -> None:
        """Stop the master (which stops its worker) and reap both; kill them if they hang."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self.worker is not None:
            # The master stops its worker; make sure, by the worker's own pid.
            with contextlib.suppress(psutil.NoSuchProcess):
                try:
                    self.worker.wait(timeout=5)
                except psutil.TimeoutExpired:
                    self.worker.kill()
        self.proc = None

    def __enter__(self) -> GunicornServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def workdir() -> Iterator[str]:
    """A temporary directory for big files, markers and server logs, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="cleanup-bench-") as path:
        yield path
