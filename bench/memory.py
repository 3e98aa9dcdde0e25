"""Benchmark 3: memory: worker RSS while streaming a big file through ours; in-process growth.

* Streaming: a gunicorn sync worker serves ``bench.apps:ours_raw`` (a raw WSGI app behind
  ``CleanupMiddleware``, one ``add_cleanup`` per request). After two small warm-up requests the
  worker's RSS is read, then the whole file is downloaded as a ``wsgi.file_wrapper`` body
  (``sendfile()``) and then as a generator body (64 KiB chunks), reading the worker's RSS
  after each and sampling it every 64 MiB during each (the peak).
* In-process: 100,000 requests through ``CleanupMiddleware`` with the harness of
  :mod:`bench.inprocess`, cycling a list body with ``add_cleanup``, a generator body with
  ``enter_context`` and ``add_cleanup``, and a ``wsgi.file_wrapper`` body with ``add_cleanup``.
  :mod:`tracemalloc` measures the memory still allocated after them (after a warm-up and a
  garbage collection) against before; every hook must have run.

Run alone: ``python -m bench.memory [--quick]`` (quick: 256 MiB and 20,000 requests).
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import os
import tracemalloc
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from cleanup_middleware import CleanupMiddleware, add_cleanup, enter_context

from .common import (
    GIB,
    MIB,
    GunicornServer,
    Section,
    Target,
    big_file,
    download,
    size_text,
    standalone,
    workdir,
)
from .inprocess import ENVIRON, serve

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from matplotlib.axes import Axes

GROWTH_LIMIT = 5 * MIB
TRACEMALLOC_LIMIT = 64 * 1024


def stream(server: GunicornServer, path: str, size: int, markers: str) -> dict[str, Any]:
    """Download ``path`` (the whole file); worker RSS before, peak (sampled) and after."""
    assert server.worker is not None
    worker = server.worker
    marker = os.path.join(markers, path.strip("/"))
    open(marker, "wb").close()
    before = worker.memory_info().rss
    peak = before
    next_sample = 0

    def sample(total: int) -> None:
        nonlocal peak, next_sample
        if total >= next_sample:
            peak = max(peak, worker.memory_info().rss)
            next_sample = total + 64 * MIB

    got = download(server.port, f"{path}?hook={path.strip('/')}", bytearray(MIB), sample)
    if not got.status.endswith(" 200 OK") or got.body_bytes != size:
        raise RuntimeError(f"{path}: {got.status!r}, {got.body_bytes} of {size} bytes")
    after = worker.memory_info().rss
    hook_ran = not os.path.exists(marker)
    if not hook_ran:
        os.unlink(marker)
    return {"before": before, "peak": max(peak, after), "after": after, "hook_ran": hook_ran}


def streaming(size: int) -> dict[str, dict[str, Any]]:
    """RSS of a gunicorn worker streaming ``size`` bytes through ours, file and generator body."""
    with workdir() as tmp:
        markers = os.path.join(tmp, "markers")
        os.mkdir(markers)
        print(f"memory: writing a {size // MIB} MiB file ...", flush=True)
        with big_file(size, tmp) as path:
            env = {"BENCH_FILE": path, "BENCH_MARKERS": markers}
            with GunicornServer("ours_raw", "bench.apps:ours_raw", tmp, env) as server:
                buf = bytearray(MIB)
                for warm in ("/file", "/gen"):
                    download(server.port, f"{warm}?size={MIB}", buf)
                print("memory: streaming through ours ...", flush=True)
                return {
                    "file body": stream(server, "/file", size, markers),
                    "generator body": stream(server, "/gen", size, markers),
                }


def list_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    add_cleanup(environ, next, environ["bench.hooks"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, ", b"World!"]


def generator_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    enter_context(environ, contextlib.nullcontext())
    add_cleanup(environ, next, environ["bench.hooks"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return chunks()


def chunks() -> Iterator[bytes]:
    yield b"Hello, "
    yield b"World!"


def file_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    add_cleanup(environ, next, environ["bench.hooks"])
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](io.BytesIO(b"x" * 100), 64)  # type: ignore[no-any-return]


def in_process(requests: int) -> dict[str, Any]:
    """Traced memory still allocated after ``requests`` requests with hooks, and hooks run."""
    apps = [CleanupMiddleware(app) for app in (list_app, generator_app, file_app)]
    hooks = itertools.count()
    environ = {**ENVIRON, "bench.hooks": hooks}
    for app in apps * 1000:  # warm-up: caches, freelists
        serve(app, environ)
    first_hook = next(hooks) + 1
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for app in itertools.islice(itertools.cycle(apps), requests):
            serve(app, environ)
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ran = next(hooks) - first_hook
    return {"requests": requests, "growth": after - before, "peak": peak - before, "hooks_ran": ran}


def run(quick: bool) -> Section:
    """Measure both and judge them against the targets."""
    size, requests = (256 * MIB, 20_000) if quick else (GIB, 100_000)
    streamed = streaming(size)
    print(f"memory: {requests:,} in-process requests under tracemalloc ...", flush=True)
    traced = in_process(requests)
    size_name = size_text(size)
    rows = [
        [
            f"stream {size_name}, {body}",
            f"{m['before'] / MIB:.1f} MiB",
            f"{(m['peak'] - m['before']) / MIB:+.2f} MiB",
            f"{(m['after'] - m['before']) / MIB:+.2f} MiB",
            "yes" if m["hook_ran"] else "NO",
        ]
        for body, m in streamed.items()
    ]
    rows.append(
        [
            f"{requests:,} requests in-process (tracemalloc)",
            "",
            f"{traced['peak'] / 1024:+.1f} KiB",
            f"{traced['growth'] / 1024:+.1f} KiB",
            f"{traced['hooks_ran']:,} of {requests:,}",
        ]
    )
    targets = []
    for body, m in streamed.items():
        peak, after = m["peak"] - m["before"], m["after"] - m["before"]
        targets.append(
            Target(
                f"worker RSS growth streaming {size_name}, {body}",
                f"{after / MIB:+.2f} MiB (peak {peak / MIB:+.2f})",
                "<= 5 MiB, hook ran",
                peak <= GROWTH_LIMIT and m["hook_ran"],
            )
        )
    targets.append(
        Target(
            f"traced memory growth over {requests:,} requests with hooks",
            f"{traced['growth'] / 1024:+.1f} KiB ({traced['growth'] / requests:.2f} B/request)",
            "none (< 64 KiB), every hook ran",
            traced["growth"] < TRACEMALLOC_LIMIT and traced["hooks_ran"] == requests,
        )
    )
    return Section(
        key="memory",
        title="3. Memory: gunicorn worker RSS while streaming through ours; in-process growth",
        columns=["measurement", "RSS before", "peak growth", "growth after", "hooks ran"],
        rows=rows,
        targets=targets,
        data={"streaming": streamed, "in_process": traced},
        notes=[
            f"{'quick: ' if quick else ''}RSS of the gunicorn sync worker (psutil), sampled every "
            "64 MiB during the download for the peak; the target is judged on the peak. "
            "In-process: tracemalloc, after a warm-up and gc.collect()."
        ],
    )


def plot(ax: Axes, data: dict[str, Any]) -> None:
    """Bar chart: worker RSS growth (peak and after) per streamed body, against the 5 MiB limit."""
    streamed = data["streaming"]
    names = list(streamed)
    x = range(len(names))
    for offset, key in ((-0.2, "peak"), (0.2, "after")):
        growth = [(streamed[n][key] - streamed[n]["before"]) / MIB for n in names]
        bars = ax.bar([i + offset for i in x], growth, 0.4, label=f"growth, {key}")
        ax.bar_label(bars, [f"{g:+.2f} MiB" for g in growth], fontsize="small")
    ax.axhline(GROWTH_LIMIT / MIB, color="red", linestyle="--", label="target: at most 5 MiB")
    ax.set_ylim(-0.5, GROWTH_LIMIT / MIB + 1)
    ax.set_xticks(list(x), names)
    ax.set_ylabel("gunicorn worker RSS growth (MiB)")
    traced = data["in_process"]
    ax.set_title(
        f"3. Memory streaming through ours; {traced['requests']:,} in-process requests: "
        f"{traced['growth'] / 1024:+.1f} KiB",
        fontsize="medium",
    )
    ax.legend(fontsize="small")


if __name__ == "__main__":
    standalone(run)
