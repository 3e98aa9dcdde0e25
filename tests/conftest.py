"""Shared pytest configuration: only options here, so every test module can rely on it."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the long load test (5,000 requests against gunicorn gthread); see `make soak`",
    )
