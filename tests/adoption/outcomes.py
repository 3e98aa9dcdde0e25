"""A pytest plugin that writes each test's outcome to the JSON file ``$ADOPTION_OUTCOMES``.

Loaded with ``-p outcomes`` into another project's test run, so that two runs of its suite
(without and with the library) can be compared test by test. A test's outcome is the worst of
its phases: ``error`` (setup or teardown failed), ``failed``, ``skipped``, else ``passed``.
"""

from __future__ import annotations

import json
import os

import pytest

_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    outcome = report.outcome
    if outcome == "failed" and report.when != "call":
        outcome = "error"
    earlier = _outcomes.get(report.nodeid, "passed")
    _outcomes[report.nodeid] = max(earlier, outcome, key=_RANK.__getitem__)


def pytest_sessionfinish(session: pytest.Session) -> None:
    with open(os.environ["ADOPTION_OUTCOMES"], "w", encoding="utf-8") as file:
        json.dump(_outcomes, file, indent=1, sort_keys=True)
