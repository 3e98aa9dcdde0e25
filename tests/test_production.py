"""The logging setups of ``docs/production.md`` show the library's WARNINGs under real servers.

Each setup is read from the page as it is written there: the ``gunicorn.conf.py`` block is
given to gunicorn (``--config``), and the ``dictConfig`` block is run by the application at
import under waitress. The application (``tests/apps/production_app.py``) logs a slow hook's
WARNING and then a failing hook's ERROR for each response; the server's output must hold the
WARNING, formatted by the page's setup (not by Python's last resort or ``basicConfig``, whose
lines look otherwise). The control lowers the library's logger to ERROR in the same setup:
the ERROR still shows, the WARNING does not, so the check can tell the two apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from serverkit import http_get, run_server
from test_defer import wait_for_log

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "production.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)

WARNING_LINE = "WARNING cleanup_middleware: cleanup hook production_app.pause took"
ERROR_LINE = "ERROR cleanup_middleware: cleanup hook production_app.fail failed for GET /report"
LIBRARY_AT_WARNING = '"cleanup_middleware": {"level": "WARNING"}'


def block_of_page(marker: str) -> str:
    """The one Python block of the production page that contains ``marker``."""
    [block] = [b for b in PYTHON_BLOCK.findall(PAGE.read_text(encoding="utf-8")) if marker in b]
    assert LIBRARY_AT_WARNING in block
    return block


def serve_and_read_log(tmp_path: Path, server: str, setup: str) -> str:
    """The server's output after one request to the app, once the failing hook's ERROR is in."""
    setup_path = tmp_path / "setup.py"
    setup_path.write_text(setup)
    env, config = {}, None
    if server.startswith("gunicorn"):
        config = setup_path
    else:
        env["PRODUCTION_LOGGING"] = str(setup_path)
    with run_server(server, "production_app:app", env=env, gunicorn_config=config) as srv:
        assert http_get(srv.url + "/report").status == 200
        wait_for_log(srv, ERROR_LINE)
        return srv.log()


SETUPS = [("gunicorn-sync", "# gunicorn.conf.py"), ("waitress", "logging.config.dictConfig(")]


@pytest.mark.parametrize(("server", "marker"), SETUPS, ids=[s for s, _ in SETUPS])
def test_the_documented_logging_setup_shows_the_librarys_warnings(
    tmp_path: Path, server: str, marker: str
) -> None:
    log = serve_and_read_log(tmp_path, server, block_of_page(marker))
    assert WARNING_LINE in log, log


@pytest.mark.parametrize(("server", "marker"), SETUPS, ids=[s for s, _ in SETUPS])
def test_control_the_library_at_error_hides_the_warning(
    tmp_path: Path, server: str, marker: str
) -> None:
    setup = block_of_page(marker).replace(
        LIBRARY_AT_WARNING, '"cleanup_middleware": {"level": "ERROR"}'
    )
    log = serve_and_read_log(tmp_path, server, setup)
    assert "took" not in log, log
