# Every target sets itself up: a virtual environment in .venv, installed from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-matrix dist lint bench bench-quick soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint,bench,matrix]'
	touch $(STAMP)

# The main job: gunicorn serves examples/flask_download.py through the middleware.
demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest

# The suite on every claimed Python from the wheel, and on the declared floors: see noxfile.py.
test-matrix: $(STAMP)
	$(BIN)/nox --sessions tests floors

# The sdist and the wheel, built into dist/ and checked (noxfile.py, session dist).
dist: $(STAMP)
	$(BIN)/nox --sessions dist

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

soak: $(STAMP)
	$(BIN)/python -m pytest tests/test_load.py --soak -p no:randomly

clean:
	rm -rf $(VENV) .nox build dist *.egg-info
