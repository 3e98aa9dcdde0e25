"""Run another project's test suite without and with the library adopted, and compare.

Adopting the library must change no test's outcome. Flask's sdist carries both Flask's own
test suite (``tests/``) and its tutorial app with its tests (``examples/tutorial/``, flaskr), so
one download gives both. Each suite runs twice, in a subprocess, under its own pytest settings
(``filterwarnings = ["error"]`` for both):

* without: the library's pytest plugin disabled (``-p no:cleanup_middleware``), no ``init_app``;
* adopted: the plugin active (as the install makes it) and ``init_app`` on every Flask app
  (``-p flask_init_app``, the documented line).

``python tests/adoption/suite.py {flask,flaskr} CACHE_DIR`` prints both results and exits
non-zero if any test's outcome differs (``make test-matrix`` runs the Flask suite this way);
``tests/test_adoption.py`` runs flaskr's.
"""

from __future__ import annotations

import collections
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLASK_VERSION = "3.1.3"
# Where each suite is in the sdist, and the extra arguments for pytest there.
SUITES = {"flask": ("", ["tests"]), "flaskr": ("examples/tutorial", [])}
# Neither run may take longer (Flask's suite takes about 10 s on a quiet machine).
TIMEOUT = 600


class DownloadError(Exception):
    """The sdist could not be fetched (no network, say)."""


def flask_sdist(cache: Path, version: str = FLASK_VERSION) -> Path:
    """Flask's source tree at ``version``, unpacked in ``cache`` (downloaded once)."""
    tree = cache / f"flask-{version}"
    if (tree / "PKG-INFO").exists():
        return tree
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"flask-{version}.tar.gz"
    if not archive.exists():
        download_flask = ["download", "--no-deps", "--no-binary", ":all:", f"flask=={version}"]
        download = subprocess.run(
            [sys.executable, "-m", "pip", *download_flask, "--dest", str(cache)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if download.returncode != 0 or not archive.exists():
            lines = (download.stderr or download.stdout).strip().splitlines()
            raise DownloadError(lines[-1] if lines else f"pip exited {download.returncode}")
    with tarfile.open(archive) as sdist:
        sdist.extractall(cache, filter="data")
    return tree


def run_pytest(
    cwd: Path, args: list[str], pythonpath: list[Path], env: dict[str, str] | None = None
) -> tuple[dict[str, str], str]:
    """Run pytest on ``args`` in ``cwd``, in a subprocess; each test's outcome, and the output.

    ``pythonpath`` comes before this directory (the shim and the outcome plugin); the outer
    run's ``PYTEST_ADDOPTS`` and ``DJANGO_SETTINGS_MODULE`` are not the project's.
    """
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = Path(tmp) / "outcomes.json"
        environ = dict(os.environ, ADOPTION_OUTCOMES=str(outcomes), **(env or {}))
        environ["PYTHONPATH"] = os.pathsep.join(str(path) for path in [*pythonpath, HERE])
        environ.pop("PYTEST_ADDOPTS", None)
        environ.pop("DJANGO_SETTINGS_MODULE", None)
        command = [sys.executable, "-m", "pytest", "-p", "outcomes", "-p", "no:cacheprovider"]
        command += [f"--basetemp={tmp}/basetemp", *args]
        done = subprocess.run(
            command,
            cwd=cwd,
            env=environ,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        if not outcomes.exists():
            raise RuntimeError(f"{' '.join(command)} in {cwd} wrote no outcomes:\n{done.stderr}")
        result: dict[str, str] = json.loads(outcomes.read_text(encoding="utf-8"))
    return result, done.stdout


def run(tree: Path, suite: str, adopted: bool) -> dict[str, str]:
    """Run ``suite`` of the Flask tree once; return each test's outcome."""
    where, args = SUITES[suite]
    cwd = tree / where
    plugins = ["-p", "flask_init_app"] if adopted else ["-p", "no:cleanup_middleware"]
    # The tutorial's package is imported from its directory, as its README's editable install
    # does.
    outcomes, _ = run_pytest(cwd, [*plugins, *args], [cwd])
    return outcomes


def summary(outcomes: dict[str, str]) -> str:
    counts = collections.Counter(outcomes.values())
    return ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "error", "skipped"))


def differences(without: dict[str, str], adopted: dict[str, str]) -> list[str]:
    """Each test whose outcome adopting the library changed, as ``nodeid: before -> after``."""
    return [
        f"{test}: {without.get(test, 'absent')} -> {adopted.get(test, 'absent')}"
        for test in sorted(without.keys() | adopted.keys())
        if without.get(test) != adopted.get(test)
    ]


def main() -> int:
    suite, cache = sys.argv[1], Path(sys.argv[2])
    installed = importlib.metadata.version("flask")
    if installed != FLASK_VERSION:
        sys.exit(f"Flask {installed} is installed; the suite is {FLASK_VERSION}'s: install that")
    tree = flask_sdist(cache)
    without = run(tree, suite, adopted=False)
    adopted = run(tree, suite, adopted=True)
    print(f"{suite} {FLASK_VERSION} without the library: {summary(without)}")
    print(f"{suite} {FLASK_VERSION} adopted:             {summary(adopted)}")
    changed = differences(without, adopted)
    for line in changed:
        print(f"changed: {line}")
    return 1 if changed or not without else 0


if __name__ == "__main__":
    sys.exit(main())
