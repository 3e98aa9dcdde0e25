"""Benchmark 2: in-process cost of the middleware over a bare WSGI app, per request and per chunk.

A harness "server" (:func:`serve`) copies a template environ, calls the app, iterates the body
and calls ``close()`` if there is one, as a WSGI server does, minus the socket. Two raw apps
are measured: one answering one chunk and one answering 1,000 chunks (a list, so that the
app's own iteration is as cheap as it gets and any per-chunk cost of a wrapper shows). Each
runs bare and behind four wrappers:

* ``closing-iterator``: werkzeug's ``ClosingIterator`` with one callback;
* ``generator``: a generator wrapper (the shape OpenTelemetry's WSGI middleware uses) that
  closes the body and calls one callback in its ``finally``;
* ``ours``: ``CleanupMiddleware`` with no hook registered;
* ``ours+hook``: ``CleanupMiddleware``, and the app calls ``add_cleanup(environ, fn)`` once.

Every variant is timed with :mod:`timeit` (garbage collector on, as in a server), in rounds
that run all variants in rotating order; the figure is the minimum over rounds (noise only
ever adds time). Overhead = variant minus bare; per-chunk cost = (overhead at 1,000 chunks
minus overhead at one chunk) / 999.

Run alone: ``python -m bench.inprocess [--quick]``.
"""

from __future__ import annotations

import cProfile
import gc
import io
import json
import os
import pstats
import subprocess
import sys
import timeit
import wsgiref.util
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from werkzeug.wsgi import ClosingIterator

import cleanup_middleware
from cleanup_middleware import CleanupMiddleware, add_cleanup
from cleanup_middleware.cleanup import PURE_PYTHON_ENV_VAR, SPEEDUPS

from .common import Section, Target, markdown_table, rotated, standalone

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from matplotlib.axes import Axes

HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "13")]
CHUNKS = [b"x" * 64] * 1000

#: The environ gunicorn builds for ``GET /`` (the same 24 keys); :func:`serve` copies it.
ENVIRON: dict[str, Any] = {
    "HTTP_CONNECTION": "close",
    "HTTP_HOST": "127.0.0.1:8000",
    "PATH_INFO": "/",
    "QUERY_STRING": "",
    "RAW_URI": "/",
    "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_PORT": "50000",
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "SERVER_SOFTWARE": "gunicorn",
    "gunicorn.socket": None,
    "wsgi.early_hints": lambda headers: None,
    "wsgi.errors": sys.stderr,
    "wsgi.file_wrapper": wsgiref.util.FileWrapper,
    "wsgi.input": io.BytesIO(),
    "wsgi.input_terminated": True,
    "wsgi.multiprocess": False,
    "wsgi.multithread": False,
    "wsgi.run_once": False,
    "wsgi.url_scheme": "http",
    "wsgi.version": (1, 0),
}

VARIANTS = ["bare", "closing-iterator", "generator", "ours", "ours+hook"]
BODIES = {"1 chunk": 1, "1000 chunks": 1000}


def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
    """The harness's ``start_response``: the app's answer goes nowhere."""


def serve(app: WSGIApplication, environ: WSGIEnvironment) -> None:
    """Handle one request as a WSGI server does: call, iterate the body, close it."""
    body = app(environ.copy(), start_response)  # type: ignore[arg-type]
    for _chunk in body:
        pass
    close = getattr(body, "close", None)
    if close is not None:
        close()


def noop() -> None:
    """The cleanup callback every wrapper runs once per request."""


def one_chunk(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", HEADERS)
    return [b"Hello, World!"]


def thousand_chunks(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", HEADERS)
    return CHUNKS


def one_chunk_hook(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    add_cleanup(environ, noop)
    start_response("200 OK", HEADERS)
    return [b"Hello, World!"]


def thousand_chunks_hook(
    environ: WSGIEnvironment, start_response: StartResponse
) -> Iterable[bytes]:
    add_cleanup(environ, noop)
    start_response("200 OK", HEADERS)
    return CHUNKS


def closing_iterator(app: WSGIApplication) -> WSGIApplication:
    """A plain werkzeug ``ClosingIterator`` middleware with one callback."""

    def middleware(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return ClosingIterator(app(environ, start_response), noop)

    return middleware


def generator_wrapper(app: WSGIApplication) -> WSGIApplication:
    """A generator middleware that closes the body and runs one callback when it finishes."""

    def iterate(body: Iterable[bytes]) -> Iterator[bytes]:
        try:
            yield from body
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            noop()

    def middleware(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return iterate(app(environ, start_response))

    return middleware


def variants(chunks: int) -> dict[str, WSGIApplication]:
    """The five applications measured for a body of ``chunks`` chunks."""
    app, app_hook = (
        (one_chunk, one_chunk_hook) if chunks == 1 else (thousand_chunks, thousand_chunks_hook)
    )
    return {
        "bare": app,
        "closing-iterator": closing_iterator(app),
        "generator": generator_wrapper(app),
        "ours": CleanupMiddleware(app),
        "ours+hook": CleanupMiddleware(app_hook),
    }


def measure(quick: bool, bodies: tuple[str, ...] = tuple(BODIES)) -> dict[str, dict[str, float]]:
    """ns/request, the minimum over rounds, per body (of ``bodies``) and variant."""
    rounds = 7 if quick else 15
    numbers = (
        {"1 chunk": 20_000, "1000 chunks": 1_000}
        if quick
        else {"1 chunk": 50_000, "1000 chunks": 2000}
    )
    timers = {
        (body, name): timeit.Timer(
            "serve(app, environ)",
            setup="gc.enable()",
            globals={"serve": serve, "app": app, "environ": ENVIRON, "gc": gc},
        )
        for body in bodies
        for name, app in variants(BODIES[body]).items()
    }
    best: dict[tuple[str, str], float] = {key: float("inf") for key in timers}
    keys = list(timers)
    for timer in timers.values():
        timer.timeit(100)  # warm-up
    for r in range(rounds):
        for key in rotated(keys, r):
            number = numbers[key[0]]
            best[key] = min(best[key], timers[key].timeit(number) / number * 1e9)
    return {body: {name: best[body, name] for name in VARIANTS} for body in bodies}


def pure_python_ns(quick: bool) -> dict[str, float]:
    """:func:`measure` of the one-chunk body in a child interpreter on the pure-Python base,
    which a build without a C compiler gets."""
    code = (
        "import json, sys\n"
        "from bench.inprocess import measure\n"
        "print(json.dumps(measure(sys.argv[1] == 'quick', ('1 chunk',))['1 chunk']))\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, "quick" if quick else "full"],
        env={**os.environ, PURE_PYTHON_ENV_VAR: "1"},
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    ns: dict[str, float] = json.loads(child.stdout)
    return ns


def hooks_app(count: int) -> WSGIApplication:
    """Ours, the app registering ``count`` hooks per request."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        for _ in range(count):
            add_cleanup(environ, noop)
        start_response("200 OK", HEADERS)
        return [b"Hello, World!"]

    return CleanupMiddleware(app)


def instrumented_cost(quick: bool) -> dict[str, float]:
    """ns per hook and per response that ``cleanup_middleware.otel`` adds, with the SDK.

    Requests with 1 and with 11 hooks, not instrumented and instrumented (the SDK's
    ``MeterProvider`` with an in-memory reader, its ``TracerProvider`` with no exporter); per
    hook = (11 hooks - 1 hook) / 10, per response = 1 hook - per hook; min over rounds.
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from cleanup_middleware import otel

    apps = {count: hooks_app(count) for count in (1, 11)}
    number, rounds = (5_000, 5) if quick else (20_000, 9)
    best: dict[tuple[bool, int], float] = {}
    meters, tracers = MeterProvider(metric_readers=[InMemoryMetricReader()]), TracerProvider()
    for r in range(rounds):
        for instrumented in rotated([False, True], r):
            if instrumented:
                otel.instrument(meters, tracers)
            try:
                for count, app in apps.items():
                    timer = timeit.Timer(lambda app=app: serve(app, ENVIRON))  # type: ignore[misc]
                    ns = timer.timeit(number) / number * 1e9
                    key = (instrumented, count)
                    best[key] = min(best.get(key, float("inf")), ns)
            finally:
                otel.uninstrument()
    per_hook = {i: (best[i, 11] - best[i, 1]) / 10 for i in (False, True)}
    return {
        "hook_ns": per_hook[False],
        "timing_per_hook_ns": per_hook[True] - per_hook[False],
        "per_response_ns": (best[True, 1] - per_hook[True]) - (best[False, 1] - per_hook[False]),
    }


def profile(app: WSGIApplication, environ: WSGIEnvironment, n: int) -> list[list[str]]:
    """Where the package's time goes: cProfile of ``n`` requests to ``app`` through :func:`serve`.

    Returns table rows (function, calls per request, own time in ns per request) for the
    package's functions, and for builtins the part of their time spent in calls from the
    package, most expensive first. The profiler inflates every call: compare the sizes.
    """
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        serve(app, environ)
    profiler.disable()
    package = os.path.dirname(cleanup_middleware.__file__)
    found = []
    for (filename, line, func), (_, calls, own, _, callers) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        if filename.startswith(package):
            name = f"{os.path.basename(filename)}:{line} {func}"
        elif filename == "~":
            # A builtin: count only the calls made by the package.
            mine = [v for (caller, *_), v in callers.items() if caller.startswith(package)]
            if not mine:
                continue
            calls = sum(v[1] for v in mine)
            own = sum(v[2] for v in mine)
            name = func
        else:
            continue  # the harness, the app and its hook
        found.append((name, calls / n, own / n * 1e9))
    found.sort(key=lambda row: -row[2])
    return [[name, f"{calls:.0f}", f"{ns:.0f}"] for name, calls, ns in found]


PROFILE_COLUMNS = ["function", "calls/request", "ns/request (profiled)"]


def run(quick: bool) -> Section:
    """Measure and judge: ours+hook overhead vs ClosingIterator's, and the per-chunk cost."""
    print("in-process: timing 5 variants x 2 bodies ...", flush=True)
    ns = measure(quick)
    one, many = ns["1 chunk"], ns["1000 chunks"]
    overhead = {body: {v: ns[body][v] - ns[body]["bare"] for v in VARIANTS} for body in BODIES}
    per_chunk = {v: (overhead["1000 chunks"][v] - overhead["1 chunk"][v]) / 999 for v in VARIANTS}
    ci_over = overhead["1 chunk"]["closing-iterator"]
    rows = [
        [
            v,
            f"{one[v]:.0f}",
            f"{overhead['1 chunk'][v]:+.0f}",
            f"{overhead['1 chunk'][v] / ci_over:.2f}" if v != "bare" else "",
            f"{many[v]:.0f}",
            f"{overhead['1000 chunks'][v]:+.0f}",
            f"{per_chunk[v]:+.2f}" if v != "bare" else "",
        ]
        for v in VARIANTS
    ]
    ratio = overhead["1 chunk"]["ours+hook"] / ci_over
    ratio_1000 = overhead["1000 chunks"]["ours+hook"] / overhead["1000 chunks"]["closing-iterator"]
    ours_chunk = per_chunk["ours+hook"]
    base = "C base" if SPEEDUPS else "pure-Python base"
    print("in-process: the same on the pure-Python base ...", flush=True)
    pure = pure_python_ns(quick)
    pure_over = {v: pure[v] - pure["bare"] for v in ("ours+hook", "closing-iterator")}
    pure_ratio = pure_over["ours+hook"] / pure_over["closing-iterator"]
    targets = [
        Target(
            f"ours+hook overhead / ClosingIterator overhead, 1 chunk ({base})",
            f"{ratio:.2f} ({overhead['1 chunk']['ours+hook']:.0f} / {ci_over:.0f} ns)",
            "<= 0.50 (aim 0.40)",
            ratio <= 0.5,
        ),
        Target(
            "the same on the pure-Python base (no C compiler at install)",
            f"{pure_ratio:.2f} ({pure_over['ours+hook']:.0f} / "
            f"{pure_over['closing-iterator']:.0f} ns)",
            "<= 0.50",
            pure_ratio <= 0.5,
        ),
        Target(
            "ours+hook overhead / ClosingIterator overhead, 1000 chunks",
            f"{ratio_1000:.3f}",
            "<= 0.50",
            ratio_1000 <= 0.5,
        ),
        Target(
            "ours+hook cost per body chunk",
            f"{ours_chunk:+.2f} ns (ClosingIterator {per_chunk['closing-iterator']:.1f} ns)",
            "none (< 1 ns, timer noise)",
            abs(ours_chunk) < 1.0,
        ),
    ]
    print("in-process: timing hooks with cleanup_middleware.otel instrumented ...", flush=True)
    otel_ns = instrumented_cost(quick)
    print("in-process: profiling ours+hook ...", flush=True)
    profiled = profile(CleanupMiddleware(one_chunk_hook), ENVIRON, 20_000 if quick else 100_000)
    mode = "quick: " if quick else ""
    return Section(
        key="inprocess",
        title="2. In-process overhead over a bare WSGI app (ns/request, min of rounds)",
        columns=[
            "variant",
            "1 chunk ns",
            "overhead",
            "vs ClosingIterator",
            "1000 chunks ns",
            "overhead",
            "per chunk ns",
        ],
        rows=rows,
        targets=targets,
        data={
            "ns_per_request": ns,
            "overhead_ns": overhead,
            "per_chunk_ns": per_chunk,
            "profile_ns": {name: float(ns) for name, _, ns in profiled},
            "otel_ns": otel_ns,
            "pure_python_ns": pure,
        },
        notes=[
            f"{mode}timeit, GC on, variants interleaved in rotating order, min over rounds; "
            "overhead = variant - bare; per chunk = (overhead at 1000 - overhead at 1) / 999.",
            "",
            "Instrumented with cleanup_middleware.otel (the SDK: a MeterProvider with an "
            "in-memory reader, a TracerProvider with no exporter): timing one hook adds "
            f"{otel_ns['timing_per_hook_ns']:,.0f} ns (its histogram point included) beside the "
            f"hook's own {otel_ns['hook_ns']:,.0f} ns (add_cleanup and the run, not instrumented); "
            f"the span adds {otel_ns['per_response_ns']:,.0f} ns per response with hooks. "
            "Requests with 1 and 11 hooks, min over rounds.",
            "",
            "Where the ours+hook time goes: cProfile of the 1-chunk request, the package's "
            "functions and the builtins they call (own time; the profiler inflates every "
            "call, so compare sizes, not totals):",
            "",
            markdown_table(PROFILE_COLUMNS, profiled),
        ],
    )


def plot(ax: Axes, data: dict[str, Any]) -> None:
    """Bar chart, log scale: ns added over bare per variant, 1-chunk and 1000-chunk bodies."""
    names = VARIANTS[1:]
    x = range(len(names))
    for offset, body in ((-0.2, "1 chunk"), (0.2, "1000 chunks")):
        # A log scale cannot show zero or less: what is below 1 ns is drawn at 1 ns.
        added = [max(data["overhead_ns"][body][n], 1.0) for n in names]
        bars = ax.bar([i + offset for i in x], added, 0.4, label=f"{body} body")
        ax.bar_label(bars, [f"{v:,.0f}" for v in added], fontsize="x-small")
    ax.set_xticks(list(x), names)
    ax.set_yscale("log")
    ax.set_ylabel("ns added per request (min of rounds)")
    ax.set_title("2. In-process overhead over a bare WSGI app")
    ax.legend(fontsize="small")


if __name__ == "__main__":
    standalone(run)
