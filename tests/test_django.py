"""``cleanup_middleware.django.CleanupMiddleware``: a Django project's tests, adopted.

A small Django project (``tests/adoption/django_project``, no database) is tested as Django
projects are, with its test ``Client``, under pytest with ``filterwarnings = ["error"]``, in a
subprocess:

* its ordinary tests give the same results without the library and adopted (the middleware
  first in ``MIDDLEWARE``, the pytest plugin active);
* views that call ``add_cleanup(request.environ, ...)`` work under the test ``Client``, a
  ``RequestFactory`` request sent through the handler, and Django's WSGI handler without the
  WSGI wrapper (file wrapper kept), and with the wrapper each hook runs once; without the
  middleware they raise.

Under gunicorn, the Django example (``examples/django_download``, the wrapper in ``wsgi.py``
and the middleware in its settings) is tested by ``tests/test_frameworks.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from adoption.suite import differences, run_pytest

PROJECT = Path(__file__).resolve().parent / "adoption" / "django_project"


def run_project_tests(tests: str, adopted: bool) -> dict[str, str]:
    """Run the project's ``tests`` module; each test's outcome."""
    plugin = [] if adopted else ["-p", "no:cleanup_middleware"]
    env = {"CLEANUP_ADOPTED": str(int(adopted))}
    outcomes, _ = run_pytest(PROJECT, [*plugin, tests], [PROJECT], env)
    return outcomes


def test_a_django_projects_tests_give_the_same_results_adopted() -> None:
    without = run_project_tests("project_tests.py", adopted=False)
    adopted = run_project_tests("project_tests.py", adopted=True)
    assert len(without) == 10 and set(without.values()) == {"passed"}, without
    assert differences(without, adopted) == []


def test_views_that_register_hooks_work_under_djangos_test_tools() -> None:
    outcomes = run_project_tests("hook_tests.py", adopted=True)
    assert len(outcomes) == 6 and set(outcomes.values()) == {"passed"}, outcomes


def test_without_the_middleware_those_views_raise() -> None:
    # The control: the test client's requests never pass through the WSGI wrapper.
    outcomes = run_project_tests("hook_tests.py", adopted=False)
    assert list(outcomes.values()).count("passed") == 1, outcomes  # the wrapped one


def test_importing_it_without_django_names_the_extra() -> None:
    code = "import sys; sys.modules['django'] = None; import cleanup_middleware.django"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 1
    assert "pip install 'cleanup-middleware[django]'" in result.stderr, result.stderr
