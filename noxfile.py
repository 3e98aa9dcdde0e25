"""The test matrix and the release archives, each made in a fresh environment.

``make test`` runs the suite where the developer works: one Python, the newest packages, the
project installed editable. A user has none of that, so ``make test-matrix`` runs:

* ``tests-3.X``: the whole suite on every CPython that ``pyproject.toml`` claims (its
  ``Programming Language :: Python :: 3.X`` classifiers), the project installed from its wheel
  as a user installs it, with the newest dependencies. A claimed Python that this machine lacks
  fails the run rather than being skipped.
* ``floors-3.X``: the same on the lowest and the highest claimed Python with every dependency
  at the lowest version that ``pyproject.toml`` allows, resolved from the file itself by uv
  (``--resolution lowest-direct``), so the declared floors are what is tested.
* ``flask_suite``: Flask's own test suite, from its sdist at a pinned version, run without the
  library and adopted (``init_app`` on every app, the pytest plugin active): every test must
  have the same outcome (``tests/adoption/suite.py``).

``make dist`` runs ``dist``: it builds the sdist and, from it, the wheel, and fails on a warning
from the build backend, on ``twine check --strict``, when an archive lacks the licence file, the
sdist the C source or the wheel the compiled C base, or when the sdist carries tests.

Interpreters are looked for on ``PATH``, then in pyenv's ``versions/`` directory (``$PYENV_ROOT``
or ``~/.pyenv``): a pyenv shim runs only the versions that pyenv has selected.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import nox

nox.needs_version = ">=2025.5.1"
nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests", "floors", "flask_suite"]
nox.options.error_on_missing_interpreters = True
# The interpreters to test are the machine's; a download would hide a missing one.
nox.options.download_python = "never"

ROOT = Path(__file__).resolve().parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)
DIST = ROOT / "dist"

# Prints where cleanup_middleware was imported from, failing unless it is the environment's own
# copy, and the versions installed, so that a run's log says what it tested.
SHOW_INSTALLED = """
import importlib.metadata, pathlib, sys
import cleanup_middleware
where = pathlib.Path(cleanup_middleware.__file__).resolve()
if not where.is_relative_to(pathlib.Path(sys.prefix).resolve()):
    sys.exit(f"cleanup_middleware imported from {where}, not from the environment {sys.prefix}")
print("cleanup_middleware from", where.parent)
from cleanup_middleware import cleanup
print("ResponseCleanup's base:", cleanup.ResponseCleanup.__mro__[1])
installed = importlib.metadata.distributions()
print(" ".join(sorted(f"{dist.metadata['Name'].lower()}=={dist.version}" for dist in installed)))
"""

# Run once more on the pure-Python base (as in the Makefile's CORE_TESTS).
CORE_TESTS = [
    "test_semantics.py",
    "test_hardening.py",
    "test_bodies.py",
    "test_properties.py",
    "test_leaks.py",
    "test_observers.py",
    "test_outcomes.py",
]

# What may not appear in the build's output: a warning of the backend (build prints them as
# "WARNING message"), a Python warning category, a deprecation. (distutils' lower-case
# "warning:" notes, such as byte-compiling being off, are not about the project.)
BUILD_WARNING = re.compile(r"WARNING|Warning\b|[Dd]eprecat")


def _runs(executable: str | None) -> bool:
    """Whether ``executable`` exists and runs (a pyenv shim of an unselected version does not)."""
    if executable is None:
        return False
    return subprocess.run([executable, "-c", ""], capture_output=True, check=False).returncode == 0


def _pyenv_bin(version: str) -> Path | None:
    """The ``bin`` directory of pyenv's newest CPython ``version`` (``"3.12"``), if installed."""
    versions = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    patches = {
        int(directory.name.removeprefix(f"{version}.")): directory / "bin"
        for directory in versions.glob(f"{version}.*")
        if directory.name.removeprefix(f"{version}.").isdigit()
    }
    return patches[max(patches)] if patches else None


def _add_pyenv_interpreters() -> None:
    """Put pyenv's interpreter first on ``PATH`` for each claimed version that ``PATH`` lacks."""
    for version in PYTHONS:
        if not _runs(shutil.which(f"python{version}")):
            bin_dir = _pyenv_bin(version)
            if bin_dir is not None:
                os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


_add_pyenv_interpreters()
_wheels: dict[str, Path] = {}


def _wheel(session: nox.Session) -> Path:
    """The project's wheel for the session's Python (its C extension is built for that one),
    built once per nox run by uv from nox's own environment (the matrix extra has uv), so that
    no test environment holds more than the project's requirements."""
    python = Path(session.bin) / "python"
    version = session.run(
        str(python), "-c", "import sys; print(sys.implementation.cache_tag)", silent=True
    )
    assert isinstance(version, str)
    tag = version.strip()
    if tag not in _wheels:
        out = ROOT / ".nox" / "_wheel" / tag
        shutil.rmtree(out, ignore_errors=True)
        session.run(
            sys.executable,
            "-m",
            "uv",
            "build",
            "--wheel",
            "--python",
            str(python),
            "--out-dir",
            str(out),
            str(ROOT),
            external=True,
        )
        [_wheels[tag]] = out.glob("*.whl")
    return _wheels[tag]


def _pytest(session: nox.Session) -> None:
    # From an empty directory, so that the checkout's cleanup_middleware/ cannot be imported
    # instead of the installed one.
    session.chdir(session.create_tmp())
    session.run("python", "-c", SHOW_INSTALLED)
    pytest = ["python", "-m", "pytest", f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml")]
    pytest += ["-p", "no:cacheprovider"]
    # As make test: the servers that compile against system packages are make test-servers'.
    session.run(*pytest, "-m", "not servers", str(ROOT / "tests"), *session.posargs)
    if not session.posargs:
        # As make test: the core tests once more on the pure-Python base of ResponseCleanup.
        core_tests = [str(ROOT / "tests" / name) for name in CORE_TESTS]
        session.run(*pytest, *core_tests, env={"CLEANUP_MIDDLEWARE_PURE_PYTHON": "1"})


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite, the project installed from its wheel with its test extra."""
    session.install(f"{_wheel(session)}[test]")
    _pytest(session)


@nox.session(python=[PYTHONS[0], PYTHONS[-1]])
def floors(session: nox.Session) -> None:
    """The whole suite with every dependency at the lowest version pyproject.toml allows."""
    session.install(
        "--resolution", "lowest-direct", "-r", str(ROOT / "pyproject.toml"), "--extra", "test"
    )
    session.install("--no-deps", str(_wheel(session)))
    _pytest(session)


@nox.session(python=PYTHONS[-1])
def flask_suite(session: nox.Session) -> None:
    """Flask's own test suite without and with the library adopted: the same outcomes."""
    # The Flask of suite.py's FLASK_VERSION (it checks) and its test dependencies: pytest before
    # 9, which removed what Flask 3.1.3's test_cli imports (_pytest.monkeypatch.notset); pip,
    # which downloads the sdist.
    session.install(f"{_wheel(session)}[flask]", "flask==3.1.3", "pytest<9", "python-dotenv")
    session.install("asgiref", "greenlet", "pip")
    script = ROOT / "tests" / "adoption" / "suite.py"
    session.run("python", str(script), "flask", str(ROOT / ".adoption-cache"))


@nox.session
def dist(session: nox.Session) -> None:
    """Build the sdist and the wheel into dist/ and check them."""
    session.install("build", "twine")
    shutil.rmtree(DIST, ignore_errors=True)
    # Byte-compiling on, as a user's build has it, so that the log shows only real notes.
    log = session.run(
        "python",
        "-m",
        "build",
        "--outdir",
        str(DIST),
        str(ROOT),
        env={"PYTHONDONTWRITEBYTECODE": ""},
        silent=True,
    )
    assert isinstance(log, str)
    warnings = [line for line in log.splitlines() if BUILD_WARNING.search(line)]
    if warnings:
        session.error("the build backend warned:\n" + "\n".join(warnings))
    [sdist] = DIST.glob("*.tar.gz")
    [wheel] = DIST.glob("*.whl")
    session.run("python", "-m", "twine", "check", "--strict", str(sdist), str(wheel))

    with tarfile.open(sdist) as archive:
        # Every member is under the top directory "cleanup_middleware-<version>/".
        sdist_files = {name.partition("/")[2] for name in archive.getnames()}
    with zipfile.ZipFile(wheel) as archive:
        wheel_files = set(archive.namelist())
    problems = []
    if "LICENSE" not in sdist_files:
        problems.append(f"{sdist.name} has no LICENSE")
    if not any(name.endswith(".dist-info/licenses/LICENSE") for name in wheel_files):
        problems.append(f"{wheel.name} has no .dist-info/licenses/LICENSE")
    # The C base is optional for a user's build from the sdist, not for the release's wheel.
    if not any(name.startswith("cleanup_middleware/_speedups.") for name in wheel_files):
        problems.append(f"{wheel.name} lacks the C extension cleanup_middleware._speedups")
    for source in ("cleanup_middleware/_speedups.c", "setup.py"):
        if source not in sdist_files:
            problems.append(f"{sdist.name} has no {source}")
    # The suite needs the whole repository (servers' apps, examples, docs): not shipped.
    shipped_tests = sorted(name for name in sdist_files | wheel_files if name.startswith("tests/"))
    if shipped_tests:
        problems.append(f"tests shipped: {', '.join(shipped_tests)}")
    if problems:
        session.error("; ".join(problems))
    session.log(f"{sdist.name}: {len(sdist_files)} entries; {wheel.name}: {len(wheel_files)}")
