"""The documented adoption line, ``cleanup_middleware.flask.init_app(app)``, for every Flask app.

Loaded with ``-p flask_init_app`` into another project's test run (Flask's own suite, the
tutorial's), it calls ``init_app`` on each ``Flask`` app as its ``__init__`` returns, as a
project does right after making its app.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

import cleanup_middleware.flask

_flask_init = Flask.__init__


def _init_and_adopt(self: Flask, *args: Any, **kwargs: Any) -> None:
    _flask_init(self, *args, **kwargs)
    cleanup_middleware.flask.init_app(self)


Flask.__init__ = _init_and_adopt  # type: ignore[method-assign]
