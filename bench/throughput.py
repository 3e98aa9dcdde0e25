"""Benchmark 4: end to end, Flask hello world under gunicorn with and without the middleware.

One gunicorn server, one sync worker, serving ``bench.apps:hello``: Flask's hello world at
``/without``, the same app after ``cleanup_middleware.flask.init_app`` at ``/with``, and another
plain one at ``/control``, the A/A control, measured against ``/without`` as ``/with`` is: its
ratio shows what the noise alone makes of a ratio. All live in the same worker process, so they
share its memory layout, hash seed and CPU placement and only the middleware differs. A load
generator in this process (:func:`load`: threads with raw sockets, a bounded number of requests)
sends one path per run, the three of a round back to back in rotating order, over many short
rounds. The figure is the median over the rounds of the with / without ratio within each round:
the runs of a round see the same load from other processes, which comes and goes over
seconds. (The ratio of the median requests/s is shown too, but that load splits the rounds into
a quiet and a busy cluster and each median can land in either.) The worker's CPU time per
request is reported too: it is what the middleware costs, and it is less noisy than requests/s
on a shared machine.

Why one sync worker: on a 2-core machine it leaves one core to the load generator, and a
single-threaded worker has no thread hand-off or GIL contention that would add noise of its own.
gunicorn's sync worker closes the connection after each response, so every request is a new
connection; that fixed cost is the same for both paths. gunicorn closes gracefully: it waits for
the client's FIN after sending the response. The client therefore half-closes its side right
after sending the request, so the worker never waits for the client to be scheduled and the
figure is the server's.

The same apps are also timed in-process (no server, no sockets), alternating, the figure the
minimum over rounds: what ``init_app`` adds to a Flask request, as a fraction of the bare
request, is the in-process target; held against the worker's CPU time per request, it says what
ratio a CPU-bound worker would show.

Run alone: ``python -m bench.throughput [--quick]`` (quick: 61 rounds of 150 requests per path
instead of 251 rounds of 200).
"""

from __future__ import annotations

import gc
import itertools
import socket
import threading
import time
import timeit
from typing import TYPE_CHECKING, Any

from . import apps
from .common import (
    GunicornServer,
    Section,
    Target,
    cpu_seconds,
    markdown_table,
    median,
    median_interval,
    rotated,
    standalone,
    workdir,
)
from .inprocess import ENVIRON, PROFILE_COLUMNS, profile, serve

if TYPE_CHECKING:
    from matplotlib.axes import Axes

VARIANTS = {"without": "plain Flask", "with": "init_app(app)", "control": "plain Flask, again"}
OK = b"HTTP/1.1 200 "
CONCURRENCY = 4


def load(port: int, path: str, requests: int, concurrency: int = CONCURRENCY) -> tuple[float, int]:
    """Send ``requests`` GETs of ``path`` from ``concurrency`` threads; return (seconds, failures).

    Each request is a new connection, half-closed after the request is sent (see the module
    docstring), read to EOF into a reused buffer; a response is a failure unless its status is
    200.
    """
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    counter = itertools.count()
    failures = [0] * concurrency

    def client(i: int) -> None:
        buf = bytearray(4096)
        view = memoryview(buf)
        while next(counter) < requests:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(request)
                    sock.shutdown(socket.SHUT_WR)
                    n = sock.recv_into(view)
                    ok = n >= len(OK) and view[: len(OK)] == OK
                    while sock.recv_into(view):
                        pass
                    if not ok:
                        failures[i] += 1
            except OSError:
                failures[i] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60 + requests / 100)
    seconds = time.perf_counter() - start
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("load generator did not finish in time")
    return seconds, sum(failures)


def one_round(server: GunicornServer, path: str, requests: int) -> dict[str, float]:
    """One bounded load run of ``path``: requests/s and worker CPU per request."""
    assert server.worker is not None
    cpu_before = cpu_seconds(server.worker)
    seconds, failures = load(server.port, path, requests)
    cpu = cpu_seconds(server.worker) - cpu_before
    if failures:
        raise RuntimeError(f"{failures} of {requests} requests failed")
    return {"rps": requests / seconds, "cpu_us": cpu / requests * 1e6}


def in_process(quick: bool) -> dict[str, float]:
    """µs per request of the same apps called in-process (no server), min over rounds.

    The noise-free part of the comparison: what the middleware adds to a Flask request.
    """
    rounds, number = (15, 500) if quick else (25, 2_000)
    timers = {
        name: timeit.Timer(
            "serve(app, environ)",
            setup="gc.enable()",
            globals={
                "serve": serve,
                "app": apps.hello,
                "environ": {**ENVIRON, "PATH_INFO": f"/{name}"},
                "gc": gc,
            },
        )
        for name in VARIANTS
    }
    best = dict.fromkeys(VARIANTS, float("inf"))
    for r in range(rounds):
        for name in rotated(list(VARIANTS), r):
            best[name] = min(best[name], timers[name].timeit(number) / number * 1e6)
    return best


def run(quick: bool) -> Section:
    """Alternate the paths over the rounds; judge the with / without ratio of requests/s."""
    rounds, requests = (61, 150) if quick else (251, 200)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with workdir() as tmp, GunicornServer("hello", "bench.apps:hello", tmp) as server:
        for name in VARIANTS:
            load(server.port, f"/{name}", 500)  # warm-up
        print(f"throughput: {rounds} rounds ...", flush=True)
        for r in range(rounds):
            for name in rotated(list(VARIANTS), r):
                results[name].append(one_round(server, f"/{name}", requests))
    print("throughput: the same apps in-process ...", flush=True)
    local = in_process(quick)
    with_environ = {**ENVIRON, "PATH_INFO": "/with"}
    profiled = profile(apps.hello, with_environ, 5_000 if quick else 20_000)
    rps = {name: median([x["rps"] for x in rs]) for name, rs in results.items()}
    cpu = {name: median([x["cpu_us"] for x in rs]) for name, rs in results.items()}
    ratio = rps["with"] / rps["without"]
    # The runs of a round are back to back, so they share the machine's state of the moment.
    paired = [w["rps"] / wo["rps"] for w, wo in zip(results["with"], results["without"])]  # noqa: B905 - py39
    paired_ratio = median(paired)
    low, high = median_interval(paired)
    control = [c["rps"] / wo["rps"] for c, wo in zip(results["control"], results["without"])]  # noqa: B905 - py39
    control_ratio = median(control)
    control_low, control_high = median_interval(control)
    added = local["with"] - local["without"]
    added_share = added / local["without"]
    # If the worker is CPU-bound, requests/s go as 1 / CPU per request.
    expected = cpu["without"] / (cpu["without"] + added)
    rows = [
        [
            name,
            f"/{name}: {VARIANTS[name]}",
            f"{rps[name]:.0f}",
            "{:.0f} - {:.0f}".format(*quartiles([x["rps"] for x in rs])),
            f"{cpu[name]:.0f}",
            f"{local[name]:.1f}",
        ]
        for name, rs in results.items()
    ]
    return Section(
        key="throughput",
        title="4. Flask hello world under gunicorn (1 sync worker), without and with init_app",
        columns=[
            "middleware",
            "path: app",
            "requests/s (median)",
            "middle half",
            "worker CPU us/request",
            "in-process us/request",
        ],
        rows=rows,
        targets=[
            Target(
                "requests/s with / without the middleware (median of per-round ratios)",
                f"{paired_ratio:.3f} (95% CI {low:.3f}-{high:.3f}; ratio of medians {ratio:.3f}; "
                f"worker CPU/request "
                f"{cpu['with'] / cpu['without']:.3f}x; in-process {added:+.1f} us -> "
                f"{expected:.3f} expected; A/A control {control_ratio:.3f}, "
                f"{control_low:.3f}-{control_high:.3f})",
                ">= 0.99 (aim 0.995)",
                paired_ratio >= 0.99,
            ),
            Target(
                "what init_app adds to an in-process Flask hello world / the bare request",
                f"{added_share:+.3f} ({added:+.2f} us on {local['without']:.1f} us)",
                "<= 0.02 (aim 0.013)",
                added_share <= 0.02,
            ),
        ],
        data={
            "rounds": rounds,
            "requests": requests,
            "rps": rps,
            "ratio_of_medians": ratio,
            "paired_ratios": paired,
            "paired_ratio": paired_ratio,
            "control_ratios": control,
            "control_ratio": control_ratio,
            "in_process_added_share": added_share,
            "cpu_us": cpu,
            "in_process_us": local,
            "expected_ratio": expected,
            "raw": results,
        },
        notes=[
            f"{'quick: ' if quick else ''}{rounds} rounds of {requests:,} requests per path "
            f"({CONCURRENCY} client threads, a new connection per request), one worker serving "
            "all three, alternating in rotating order. The judged figure is the median over the "
            "rounds of with / without within the round (the runs of a round are back to back, "
            "so other processes' load, which comes and goes over seconds, cancels out); the A/A "
            "control is /control / /without, measured the same way. The ratio of the medians is "
            "shown too, but when that load comes and goes the rounds fall in two clusters and "
            "the medians jump between them. 'middle half': the 25th to 75th percentile of the "
            "rounds. Worker CPU from /proc/<pid>/schedstat. "
            "In-process: the same apps called without a server (timeit, min of rounds); "
            "'expected' = worker CPU without / (worker CPU without + in-process difference), "
            "the ratio a CPU-bound worker would show without noise.",
            "",
            "Where the middleware's time goes in the /with request: cProfile, in-process, the "
            "package's functions and the builtins they call (own time; the profiler inflates "
            "every call, so compare sizes, not totals):",
            "",
            markdown_table(PROFILE_COLUMNS, profiled),
        ],
    )


def quartiles(values: list[float]) -> tuple[float, float]:
    """The 25th and 75th percentiles (nearest rank)."""
    ordered = sorted(values)
    return ordered[len(ordered) // 4], ordered[(3 * len(ordered)) // 4]


def plot(ax: Axes, data: dict[str, Any]) -> None:
    """The with / without ratio of every round, its median and the target."""
    paired = data["paired_ratios"]
    ax.scatter(range(1, len(paired) + 1), paired, s=12, alpha=0.6, label="one round")
    ax.axhline(data["paired_ratio"], color="black", label=f"median {data['paired_ratio']:.3f}")
    ax.axhline(0.99, color="red", linestyle="--", label="target 0.99")
    ax.set_xlabel("round")
    ax.set_ylabel("requests/s with / without")
    ax.set_title("4. Flask hello world via gunicorn, with / without the middleware")
    ax.legend(fontsize="small")


if __name__ == "__main__":
    standalone(run)
