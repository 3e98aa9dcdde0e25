# Every target sets itself up: a virtual environment in .venv, installed from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The servers that compile against system packages (see .ci/run): bjoern (libev-dev) and, in a
# virtual environment of Debian's own Python that Apache's user can read, mod_wsgi (apache2,
# apache2-dev); meinheld without its greenlet<0.5 pin, which does not build on Python 3.10+.
APACHE_PYTHON ?= /usr/bin/python3
APACHE_VENV := .venv-apache
SERVERS_STAMP := $(VENV)/.servers-installed
# gunicorn's eventlet worker, which gunicorn 26 removed, in a virtual environment of its own.
EVENTLET_VENV := .venv-eventlet

.PHONY: demo test test-servers test-matrix dist lint bench bench-quick soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# setup.py and the C source too: the editable install builds the C base in place.
$(STAMP): $(BIN)/python pyproject.toml setup.py cleanup_middleware/_speedups.c
	$(BIN)/pip install --quiet -e '.[test,lint,bench,matrix]'
	touch $(STAMP)

# The demo installs only what it runs: the package with its flask and gunicorn extras.
DEMO_STAMP := $(VENV)/.demo-installed
$(DEMO_STAMP): $(BIN)/python pyproject.toml setup.py cleanup_middleware/_speedups.c
	$(BIN)/pip install --quiet -e '.[flask,gunicorn]'
	touch $(DEMO_STAMP)

# The main job: gunicorn serves examples/flask_download.py through the middleware.
demo: $(DEMO_STAMP)
	$(BIN)/python examples/demo.py

# The core tests once more on the pure-Python base of ResponseCleanup (the first run has the C
# base, where it built: see docs/performance.md).
CORE_TESTS := tests/test_semantics.py tests/test_hardening.py tests/test_bodies.py \
	tests/test_properties.py tests/test_leaks.py tests/test_observers.py tests/test_outcomes.py

test: $(STAMP)
	$(BIN)/python -m pytest -m "not servers"
	CLEANUP_MIDDLEWARE_PURE_PYTHON=1 $(BIN)/python -m pytest $(CORE_TESTS)

$(SERVERS_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[servers]'
	$(BIN)/pip install --quiet --no-deps 'meinheld==1.0.2'
	touch $(SERVERS_STAMP)

# --no-cache-dir: a mod_wsgi wheel cached from another Python of the same version links that one.
$(APACHE_VENV)/.installed: pyproject.toml
	$(APACHE_PYTHON) -m venv $(APACHE_VENV)
	$(APACHE_VENV)/bin/pip install --quiet --no-cache-dir -e '.[apache]'
	touch $(APACHE_VENV)/.installed

$(EVENTLET_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(EVENTLET_VENV)
	$(EVENTLET_VENV)/bin/pip install --quiet -e '.[test-eventlet]'
	touch $(EVENTLET_VENV)/.installed

# Every server: sendfile() and memory under strace, and the fault matrix.
test-servers: $(SERVERS_STAMP) $(APACHE_VENV)/.installed $(EVENTLET_VENV)/.installed
	$(BIN)/python -m pytest -s -m servers tests/test_server_sendfile.py
	$(BIN)/python -m pytest tests/test_fault_matrix.py

# The suite on every claimed Python from the wheel, on the declared floors, and Flask's own suite
# adopted: see noxfile.py.
test-matrix: $(STAMP)
	$(BIN)/nox --sessions tests floors flask_suite

# The sdist and the wheel, built into dist/ and checked (noxfile.py, session dist).
dist: $(STAMP)
	$(BIN)/nox --sessions dist

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest cleanup_middleware._speedups

bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

soak: $(STAMP)
	$(BIN)/python -m pytest tests/test_load.py --soak -p no:randomly

clean:
	rm -rf $(VENV) $(APACHE_VENV) $(EVENTLET_VENV) .nox build dist *.egg-info
