"""Falcon: send a fresh temporary file, and delete it once the response has been sent.

The view sets ``resp.stream`` to the open file, which Falcon hands to the server's
``wsgi.file_wrapper`` (and so to ``sendfile()``). Falcon drops that stream without closing it on
``HEAD``, so the view also lets the middleware close it: ``enter_context`` closes the file when
the response closes, whether the server sent it or not, and before the file is deleted (hooks
run last-registered-first).

Run it with gunicorn::

    gunicorn --pythonpath examples falcon_download:application

and fetch http://127.0.0.1:8000/download.
"""

from __future__ import annotations

import os

import falcon
from reports import make_report, report_size

from cleanup_middleware import CleanupMiddleware, add_cleanup, enter_context


class Download:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        path = make_report(report_size(req.get_param("size")))
        add_cleanup(req.env, os.unlink, path)  # runs once the server has closed the response
        resp.stream = enter_context(req.env, open(path, "rb"))
        resp.content_length = os.path.getsize(path)
        resp.content_type = "text/plain"
        resp.downloadable_as = "report.txt"

    on_head = on_get


app = falcon.App()
app.add_route("/download", Download())

# The one place to wrap: around the falcon.App.
application = CleanupMiddleware(app)
