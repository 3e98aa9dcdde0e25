"""Load: many concurrent requests against gunicorn gthread, some clients aborting mid-body.

Each request registers one hook that records its request id (``tests/apps/load_app.py``). After
the run: hooks recorded == requests sent, every id exactly once, no hook ever ran while its
thread served another request, every temporary file deleted (by its own hook, while it still
existed), and the server still answers.

``make test`` runs a bounded version (400 requests at concurrency 16); ``make soak`` runs
``pytest tests/test_load.py --soak``: 5,000 requests at concurrency 32. Either way 10 % of the
clients read the headers and a little of the body, then reset the connection. The figures
(duration, requests per second, how many aborts the server noticed) are printed.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from apps.fault_client import Outcome, request
from serverkit import RECORD_DIR_ENV, Server, read_records, run_server

APP = "load_app:application"
TMP_DIR_ENV = "CLEANUP_TMP_DIR"  # load_app.TMP_DIR_ENV
RELEASE_ENV = "LOAD_RELEASE"  # load_app.RELEASE_ENV
SMALL = 48 * 1024 + 5  # what the reading clients download
HUGE = 256 * 1024 * 1024  # what the aborting clients ask for: sparse, never fully sent


@dataclass(frozen=True)
class LoadPlan:
    requests: int
    concurrency: int
    abort_every: int = 10  # one client in ten aborts mid-body


BOUNDED = LoadPlan(requests=400, concurrency=16)
SOAK = LoadPlan(requests=5_000, concurrency=32)


@dataclass
class Site:
    server: Server
    records: Path
    files: Path
    release: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("load")
    records, files = base / "records", base / "files"
    records.mkdir()
    files.mkdir()
    release = base / "release"
    env = {RECORD_DIR_ENV: str(records), TMP_DIR_ENV: str(files), RELEASE_ENV: str(release)}
    with run_server("gunicorn-gthread", APP, env=env, log_dir=base) as server:
        yield Site(server, records, files, release)


def _one(port: int, rid: str, route: str, abort: bool) -> tuple[str, Outcome]:
    if abort:
        outcome = request(
            port, f"/load/{route}?rid={rid}&size={HUGE}", leave="leaves_mid_body", read_bytes=4096
        )
    else:
        outcome = request(port, f"/load/{route}?rid={rid}&size={SMALL}")
    return rid, outcome


def _wait_for(site: Site, count: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        ran = [r for r in read_records(site.records) if r["event"] == "ran"]
        if len(ran) >= count or time.monotonic() > deadline or not site.server.alive():
            return ran
        time.sleep(0.05)


def run_load(site: Site, plan: LoadPlan, capsys: pytest.CaptureFixture[str]) -> None:
    port = site.server.port
    before = len([r for r in read_records(site.records) if r["event"] == "ran"])
    jobs = []
    for i in range(plan.requests):
        rid = f"{i:05d}-{uuid.uuid4().hex[:8]}"
        jobs.append((rid, "file" if i % 2 else "stream", i % plan.abort_every == 0))
    aborted = {rid for rid, _, abort in jobs if abort}

    start = time.monotonic()
    with ThreadPoolExecutor(plan.concurrency) as pool:
        results = dict(pool.map(lambda job: _one(port, *job), jobs))
    elapsed = time.monotonic() - start

    # Every reading client got its own body, whole.
    for rid, _, abort in jobs:
        outcome = results[rid]
        if not abort:
            assert (outcome.status, outcome.complete) == (200, True), (rid, outcome.status)
            assert outcome.body.startswith(f"{rid}\n".encode()), rid
            assert len(outcome.body) == SMALL, rid

    ran = _wait_for(site, before + plan.requests, timeout=60)[before:]
    sent = {rid for rid, _, _ in jobs}
    counts = Counter(r["rid"] for r in ran)
    assert len(ran) == plan.requests, f"{len(ran)} hooks recorded for {plan.requests} requests"
    assert set(counts) == sent, f"unknown ids: {set(counts) - sent}; missing: {sent - set(counts)}"
    assert [rid for rid, n in counts.items() if n != 1] == [], "hooks that ran more than once"
    foreign = [r for r in ran if r["current"] != r["rid"]]
    assert foreign == [], f"hooks ran while their thread served another request: {foreign[:5]}"
    assert all(r["existed"] for r in ran), "a file was gone before its own hook deleted it"
    assert os.listdir(site.files) == [], "temporary files left behind"
    ping = request(port, "/ping")
    assert (ping.status, ping.body) == (200, b"pong"), site.server.describe()
    assert site.server.alive(), site.server.describe()

    noticed = sum(1 for r in ran if r["rid"] in aborted and r["failure"])
    with capsys.disabled():
        print(
            f"\nload: {plan.requests} requests at concurrency {plan.concurrency} against "
            f"gunicorn gthread in {elapsed:.2f} s ({plan.requests / elapsed:.0f} requests/s); "
            f"{len(aborted)} clients aborted mid-body, {noticed} of them seen as failures by "
            f"the hooks; {len(ran)} hooks recorded, each id once, none for another request; "
            f"{len(os.listdir(site.files))} temporary files left"
        )


def test_bounded_load(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    run_load(site, BOUNDED, capsys)


@pytest.mark.timeout(600)
def test_soak(
    site: Site, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    if not request.config.getoption("--soak"):
        pytest.skip("the soak runs with --soak (make soak)")
    run_load(site, SOAK, capsys)


def test_slow_hook_does_not_hold_up_other_requests(site: Site) -> None:
    # One request's hook blocks a gthread worker thread; the other threads keep serving, and
    # their hooks run, while it waits.
    slow = f"slow-{uuid.uuid4().hex[:8]}"
    done = threading.Event()

    def slow_request() -> None:
        try:
            request(site.server.port, f"/load/slow?rid={slow}")
        finally:
            done.set()

    thread = threading.Thread(target=slow_request)
    thread.start()
    try:
        fast = [f"fast-{i}-{uuid.uuid4().hex[:8]}" for i in range(20)]
        for rid in fast:
            _, outcome = _one(site.server.port, rid, "stream", abort=False)
            assert outcome.status == 200
        deadline = time.monotonic() + 30
        while True:
            ran = {r["rid"] for r in read_records(site.records) if r["event"] == "ran"}
            if set(fast) <= ran or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert set(fast) <= ran, "other requests' hooks did not run while one hook was slow"
        assert slow not in ran, "the slow hook finished before it was released"
    finally:
        site.release.touch()
        thread.join(30)
    assert done.is_set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(r.get("rid") == slow for r in read_records(site.records)):
            break
        time.sleep(0.02)
    [slow_record] = [r for r in read_records(site.records) if r.get("rid") == slow]
    assert slow_record["current"] == slow
    site.release.unlink()
