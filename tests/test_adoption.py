"""Adopting the library keeps another project's tests green: Flask's tutorial app, flaskr.

Flask's sdist (downloaded once into ``.adoption-cache/``) carries the tutorial with its tests,
run under ``filterwarnings = ["error"]``. They run twice in subprocesses, as
``tests/adoption/suite.py`` says: without the library, then adopted (``init_app`` on every Flask
app, the pytest plugin active); every test must have the same outcome both times. Without the
plugin, 6 of them fail and 4 error, on the responses that Flask's test client leaves open.
Flask's own suite runs the same way in ``make test-matrix`` (noxfile.py, session flask_suite).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from adoption import suite

CACHE = Path(__file__).resolve().parent.parent / ".adoption-cache"


def test_flaskr_tests_give_the_same_results_adopted() -> None:
    try:
        tree = suite.flask_sdist(CACHE)
    except suite.DownloadError as exc:
        pytest.skip(f"Flask {suite.FLASK_VERSION}'s sdist could not be downloaded: {exc}")
    without = suite.run(tree, "flaskr", adopted=False)
    adopted = suite.run(tree, "flaskr", adopted=True)
    assert len(without) == 24 and set(without.values()) == {"passed"}, without
    assert suite.differences(without, adopted) == []
