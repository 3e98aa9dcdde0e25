"""Benchmark 5: 200 ms of work after each response, with ``defer``, with ``add_cleanup``, or none.

The work (:func:`bench.apps.after_response_work`) waits 200 ms, as an upload or a remote call
does, so it competes for no CPU: what is measured is whom it holds up. ``bench.apps:after_response``
serves every variant from one worker: ``/nothing``, ``/cleanup`` (``add_cleanup``), ``/defer``
(``defer``, the default pool: 4 threads, a queue of 256) and ``/defer-small-queue`` (``defer``
into a pool whose queue holds 8, so that a burst overflows it and the full-queue policy, run
inline at close, shows).

* **gthread, next keep-alive request**: one gunicorn gthread worker (4 threads). On a new
  keep-alive connection the client requests the variant's path, reads the whole response, and
  at once sends ``/nothing`` on the same connection: the figure is the time from sending that
  second request to its complete response, median over the rounds (variants in rotating
  order). Gunicorn reads a connection's next request only once the previous response was
  closed, hooks included.
* **sync, requests/s**: one gunicorn sync worker; bursts of :data:`SYNC_BURST` requests from
  4 client threads, a new connection per request (:func:`bench.throughput.load`), no work and
  ``defer`` alternating over rounds in rotating order (judged by the median of the per-round
  ratios, as benchmark 4 is), each burst waiting for the previous one's work; then one burst of
  ``/cleanup`` (a smaller one: 5 requests/s) and one of ``/defer-small-queue``. ``/defer``'s
  burst fits the default queue, so its work runs after the burst: the time until all of it
  finished (``/done`` counts) is shown too.
* **memory**: in-process, 10,000 requests each defer one function with one argument into a
  :class:`~cleanup_middleware.deferred.DeferredPool` whose one thread is held busy, so all of
  them wait in its queue; :mod:`tracemalloc` gives the memory they hold, per item. Then they
  run, and every one must have.

Run alone: ``python -m bench.deferred [--quick]`` (quick: fewer rounds and smaller bursts).
"""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
from typing import TYPE_CHECKING, Any

from cleanup_middleware import CleanupMiddleware, defer
from cleanup_middleware.deferred import DeferredPool

from . import apps
from .common import GunicornServer, Section, median, rotated, standalone, workdir
from .inprocess import ENVIRON, serve
from .throughput import load

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from matplotlib.axes import Axes

VARIANTS = {
    "nothing": "no work after the response",
    "cleanup": "add_cleanup(environ, work)",
    "defer": "defer(environ, work), default pool",
    "defer-small-queue": f"defer(environ, work), a queue of {apps.SMALL_QUEUE}",
}
KEEPALIVE_VARIANTS = ["nothing", "cleanup", "defer"]
QUEUED_ITEMS = 10_000
# Requests per sync burst: /defer's 40 functions of 200 ms (2 s on the default pool's four
# threads) fit its queue of 256, so none runs inline, and a round waits little for them.
SYNC_BURST = 40
GTHREAD = ("--worker-class", "gthread", "--threads", "4")


def read_response(sock: socket.socket, buf: bytearray) -> bytes:
    """Read one HTTP/1.1 response with a Content-Length from ``sock``; return its body."""
    data = b""
    while b"\r\n\r\n" not in data:
        n = sock.recv_into(buf)
        if not n:
            raise RuntimeError(f"connection closed mid-response: {data!r}")
        data += bytes(buf[:n])
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"unexpected response: {head!r}")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        n = sock.recv_into(buf)
        if not n:
            raise RuntimeError("connection closed mid-body")
        body += bytes(buf[:n])
    return body


def next_request_seconds(port: int, path: str) -> float:
    """On a new keep-alive connection: ``path``, then the time ``/nothing`` takes after it."""
    buf = bytearray(4096)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        read_response(sock, buf)
        start = time.perf_counter()
        sock.sendall(b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        read_response(sock, buf)
        return time.perf_counter() - start


def finished_count(port: int) -> int:
    """How many deferred or hook functions the worker has finished (``/done``)."""
    buf = bytearray(4096)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /done HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return int(read_response(sock, buf))


def wait_finished(port: int, count: int, timeout: float) -> None:
    """Wait until ``/done`` reaches ``count``, polling; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while finished_count(port) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the after-response work did not reach {count} in {timeout} s")
        time.sleep(0.05)


def keepalive(quick: bool, tmp: str) -> dict[str, list[float]]:
    """Seconds of the next keep-alive request after each variant, per round (gthread)."""
    rounds = 7 if quick else 31
    seconds: dict[str, list[float]] = {name: [] for name in KEEPALIVE_VARIANTS}
    app = "bench.apps:after_response"
    with GunicornServer("deferred-gthread", app, tmp, worker_args=GTHREAD) as srv:
        for name in KEEPALIVE_VARIANTS:
            next_request_seconds(srv.port, f"/{name}")  # warm-up: threads, pool, imports
        for r in range(rounds):
            for name in rotated(KEEPALIVE_VARIANTS, r):
                seconds[name].append(next_request_seconds(srv.port, f"/{name}"))
    return seconds


def burst(srv: GunicornServer, name: str, requests: int) -> dict[str, float]:
    """One burst of ``/name``: requests/s, and seconds until its after-response work finished."""
    finished = finished_count(srv.port)
    start = time.perf_counter()
    seconds, failures = load(srv.port, f"/{name}", requests)
    if failures:
        raise RuntimeError(f"{failures} of {requests} requests to /{name} failed")
    expected = finished + (requests if name != "nothing" else 0)
    wait_finished(srv.port, expected, 60 + requests * apps.WORK_SECONDS)
    return {"rps": requests / seconds, "work_done_s": time.perf_counter() - start}


def sync_throughput(quick: bool, tmp: str) -> dict[str, Any]:
    """Sync worker bursts: nothing and defer alternating over rounds, then one of each other."""
    rounds = 3 if quick else 11
    paired: dict[str, list[dict[str, float]]] = {"nothing": [], "defer": []}
    with GunicornServer("deferred-sync", "bench.apps:after_response", tmp) as srv:
        load(srv.port, "/nothing", 200)  # warm-up
        for r in range(rounds):
            for name in rotated(list(paired), r):
                paired[name].append(burst(srv, name, SYNC_BURST))
        single = {
            "cleanup": burst(srv, "cleanup", 8 if quick else 24),
            "defer-small-queue": burst(srv, "defer-small-queue", SYNC_BURST),
        }
    ratios = [d["rps"] / n["rps"] for d, n in zip(paired["defer"], paired["nothing"])]  # noqa: B905 - py39
    return {
        "rounds": rounds,
        "paired": paired,
        "single": single,
        "defer_ratio": median(ratios),
        "defer_ratios": ratios,
    }


def _deferring_view(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    defer(environ, _count_item, environ["bench.item"])
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


_items_run: list[int] = []


def _count_item(item: int) -> None:
    _items_run.append(item)


def queued_memory() -> dict[str, float]:
    """Memory held by :data:`QUEUED_ITEMS` deferred functions waiting in a pool's queue."""
    # Room for the warm-up request's function too, so that nothing runs inline.
    pool = DeferredPool(max_workers=1, max_queued=QUEUED_ITEMS + 1, name="bench-queued")
    app = CleanupMiddleware(_deferring_view, executor=pool)
    release, busy = threading.Event(), threading.Event()
    pool.submit(lambda: (busy.set(), release.wait(60)))
    if not busy.wait(10):
        raise RuntimeError("the pool's thread did not start")
    _items_run.clear()
    serve(app, {**ENVIRON, "bench.item": -1})  # warm-up: the first request's allocations
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for item in range(QUEUED_ITEMS):
            serve(app, {**ENVIRON, "bench.item": 1_000 + item})
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        release.set()
        pool.shutdown(wait=True)
    if len(_items_run) != QUEUED_ITEMS + 1:
        raise RuntimeError(f"{len(_items_run)} of {QUEUED_ITEMS + 1} deferred functions ran")
    return {"items": QUEUED_ITEMS, "bytes": held, "bytes_per_item": held / QUEUED_ITEMS}


def run(quick: bool) -> Section:
    """The three measurements; ratios against doing nothing after the response."""
    with workdir() as tmp:
        print("deferred: gthread keep-alive rounds ...", flush=True)
        next_request = keepalive(quick, tmp)
        print("deferred: sync worker bursts ...", flush=True)
        bursts = sync_throughput(quick, tmp)
    print("deferred: 10,000 queued items ...", flush=True)
    memory = queued_memory()
    latency = {name: median(values) for name, values in next_request.items()}
    rows = [
        [
            "gthread: next keep-alive request, median ms",
            VARIANTS[name],
            f"{latency[name] * 1e3:.1f}",
            f"{latency[name] / latency['nothing']:.2f}",
        ]
        for name in KEEPALIVE_VARIANTS
    ]
    nothing_rps = median([x["rps"] for x in bursts["paired"]["nothing"]])
    sync = {
        "nothing": (nothing_rps, 0.0, 1.0),
        "defer": (
            median([x["rps"] for x in bursts["paired"]["defer"]]),
            median([x["work_done_s"] for x in bursts["paired"]["defer"]]),
            bursts["defer_ratio"],
        ),
    }
    for name, result in bursts["single"].items():
        sync[name] = (result["rps"], result["work_done_s"], result["rps"] / nothing_rps)
    rows += [
        [
            "sync: requests/s over a burst (s until its work was done)",
            VARIANTS[name],
            f"{rps:.1f}" + (f" ({done:.1f} s)" if name != "nothing" else ""),
            f"{ratio:.2f}",
        ]
        for name, (rps, done, ratio) in sync.items()
    ]
    rows.append(
        [
            f"memory: {QUEUED_ITEMS:,} deferred functions waiting in the queue",
            "defer(environ, work, item), a pool with one busy thread",
            f"{memory['bytes'] / 1024:.0f} KiB ({memory['bytes_per_item']:.0f} B each)",
            "",
        ]
    )
    rounds = len(next_request["nothing"])
    sync_rounds = bursts["rounds"]
    return Section(
        key="deferred",
        title="5. 200 ms of work after each response: defer vs add_cleanup vs none",
        columns=["measurement", "variant", "figure", "/ nothing"],
        rows=rows,
        targets=[],
        data={
            "next_request_s": next_request,
            "next_request_median_s": latency,
            "sync_bursts": bursts,
            "queued_memory": memory,
        },
        notes=[
            f"{'quick: ' if quick else ''}{rounds} keep-alive rounds per variant (gthread, "
            f"4 threads); sync bursts of {SYNC_BURST} requests from 4 client threads, a new "
            f"connection per request, {sync_rounds} rounds of no work and defer in rotating "
            "order (defer's '/ nothing' is the median of the per-round ratios), then one burst "
            f"each of add_cleanup (fewer requests: 5 a second) and the queue of "
            f"{apps.SMALL_QUEUE}. "
            f"The work is {apps.WORK_SECONDS * 1e3:.0f} ms of waiting (time.sleep), not CPU. "
            "'/ nothing': the variant's figure over the same figure with no work. The sync "
            "figure in parentheses is the time from the start of the burst until the worker "
            "finished all of its after-response work; with the small queue the overflow ran "
            "inline at close. Memory: tracemalloc, after one warm-up request, while the "
            "pool's one thread is held busy.",
        ],
    )


def plot(ax: Axes, data: dict[str, Any]) -> None:
    """Median next keep-alive request per variant (gthread), log scale."""
    latency = data["next_request_median_s"]
    names = list(latency)
    ax.bar(names, [latency[name] * 1e3 for name in names])
    ax.set_yscale("log")
    ax.set_ylabel("next keep-alive request, ms (median)")
    ax.set_title("5. 200 ms after each response: gthread's next request")


if __name__ == "__main__":
    standalone(run)
