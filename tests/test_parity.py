"""The two bases of ResponseCleanup behave the same wherever a user can see (issue 21).

:class:`~cleanup_middleware.cleanup.ResponseCleanup` has a C base (``_speedups``) and a
pure-Python one, chosen at import by ``CLEANUP_MIDDLEWARE_PURE_PYTHON``. Each check runs in a
fresh interpreter on each base, so that a crash fails the test instead of killing pytest; the C
half skips where the extension is not built or not used.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cleanup_middleware import cleanup

# The value of CLEANUP_MIDDLEWARE_PURE_PYTHON that selects each base.
BASES = {"C": "0", "pure Python": "1"}
NO_C_BASE = (
    "the C base is not built (no compiler at install)"
    if importlib.util.find_spec("cleanup_middleware._speedups") is None
    else "the C base is not used on a free-threaded build without the GIL"
    if cleanup._GIL_DISABLED
    else None
)


# What a user can see, case by case: tests/apps/parity_cases.py prints it as JSON.
PARITY_CASES = Path(__file__).parent / "apps" / "parity_cases.py"


def run_on(base: str, code: str) -> str:
    """Run ``code`` in a fresh interpreter on ``base`` and return its output; fail on a crash."""
    if base == "C" and NO_C_BASE:
        pytest.skip(NO_C_BASE)
    prelude = (
        "from cleanup_middleware import cleanup\n"
        f"assert cleanup.SPEEDUPS is {base == 'C'}, 'not the {base} base'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        env={**os.environ, cleanup.PURE_PYTHON_ENV_VAR: BASES[base]},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"exit status {result.returncode}: {result.stderr[-2000:]}"
    return result.stdout


@pytest.mark.parametrize("base", BASES)
def test_freeing_a_million_responses_chained_through_their_bodies_does_not_crash(
    base: str,
) -> None:
    # Each object's _body is the next one: freeing the head frees them all, one inside the
    # other's deallocation. Without CPython's trashcan the C base overflowed the C stack
    # (issue 18, item 5); the Python subclass always had it.
    output = run_on(
        base,
        """
for cls in (cleanup.ResponseCleanup.__mro__[1], cleanup.ResponseCleanup):
    head = None
    for _ in range(1_000_000):
        response = cls()
        response._body = head
        head = response
    del response, head
    print("freed", cls.__name__)
""",
    )
    base_class = "ResponseCleanupBase" if base == "C" else "_PythonResponseCleanupBase"
    assert output.split("\n") == [f"freed {base_class}", "freed ResponseCleanup", ""]


def test_what_a_user_sees_of_a_response_is_the_same_on_both_bases() -> None:
    # Copies, pickling, the errors of misuse, the garbage-collection net's report, and more:
    # the pure base made a live copy where the C base raised TypeError, for one (issue 21).
    run_cases = (
        f"import runpy, sys\nsys.path.insert(0, {str(PARITY_CASES.parent)!r})\n"
        f"runpy.run_path({str(PARITY_CASES)!r}, run_name='__main__')\n"
    )
    c_base, pure = (json.loads(run_on(base, run_cases)) for base in BASES)
    assert list(c_base) == list(pure)
    assert {case: (c_base[case], pure[case]) for case in c_base if c_base[case] != pure[case]} == {}
    # Both are right, not only the same (the rules themselves are tested in test_hardening.py).
    assert pure["a request"] == "['through a deep copy', 'hook']"
    assert pure["hooks run when the deep copy is collected"] == "[]"
