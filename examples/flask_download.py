"""Send a freshly made temporary file, and delete it once the response has been sent.

``send_file`` hands the file to the server (which uses ``sendfile()`` where it can), so the view
cannot delete the file itself, and on plain Flask a ``response.call_on_close`` callback never
runs for such a response. One line of setup, ``cleanup_middleware.flask.init_app(app)``, makes
it run once the server has closed the response, with ``sendfile()`` kept.

Run it with gunicorn::

    gunicorn --pythonpath examples flask_download:app

and fetch http://127.0.0.1:8000/download. ``examples/demo.py`` does exactly that and shows
that the file was sent and then deleted.
"""

from __future__ import annotations

import os

from flask import Flask, Response, request, send_file
from reports import make_report, report_size

import cleanup_middleware.flask

app = Flask(__name__)
cleanup_middleware.flask.init_app(app)

# Where the temporary files go (the system default when unset); the demo points it at a
# directory of its own.
TMP_DIR = os.environ.get("FLASK_DOWNLOAD_TMPDIR") or None


@app.get("/download")
def download() -> Response:
    path = make_report(report_size(request.args.get("size")), TMP_DIR)
    response = send_file(path, as_attachment=True, download_name="report.txt")
    # Runs after the server has sent the body and closed the file.
    response.call_on_close(lambda: os.unlink(path))
    # Only so that the demo can show which file it was; leave it out of a real app.
    response.headers["X-Demo-Temp-File"] = path
    return response
