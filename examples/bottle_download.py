"""Bottle: send a fresh temporary file, and delete it once the response has been sent.

Bottle's ``static_file`` opens the file and Bottle hands it to the server's
``wsgi.file_wrapper`` (and so to ``sendfile()``); on ``HEAD`` it opens none.

Run it with gunicorn::

    gunicorn --pythonpath examples bottle_download:application

and fetch http://127.0.0.1:8000/download.
"""

from __future__ import annotations

import os

import bottle
from reports import make_report, report_size

from cleanup_middleware import CleanupMiddleware, add_cleanup


@bottle.get("/download")
def download() -> bottle.HTTPResponse:
    path = make_report(report_size(bottle.request.query.get("size")))
    add_cleanup(bottle.request.environ, os.unlink, path)  # runs once the response is closed
    directory, name = os.path.split(path)
    return bottle.static_file(name, root=directory, mimetype="text/plain", download="report.txt")


# The one place to wrap: around the default application, which the route decorators fill.
application = CleanupMiddleware(bottle.default_app())
