"""Pyramid: send a fresh temporary file, and delete it once the response has been sent.

``config.include("cleanup_middleware.pyramid")`` gives every request ``request.add_cleanup``;
the application that ``make_wsgi_app()`` returns is wrapped in the middleware. The view answers
with Pyramid's own ``FileResponse``, given ``request=`` so that it uses the server's
``wsgi.file_wrapper`` (and so ``sendfile()``); without it Pyramid reads the file in Python.

Run it with gunicorn::

    gunicorn --pythonpath examples pyramid_download:application

and fetch http://127.0.0.1:8000/download.
"""

from __future__ import annotations

import os

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import FileResponse
from reports import make_report, report_size

from cleanup_middleware import CleanupMiddleware


def download(request: Request) -> FileResponse:
    path = make_report(report_size(request.GET.get("size")))
    request.add_cleanup(os.unlink, path)  # runs once the server has closed the response
    response = FileResponse(path, request=request, content_type="text/plain")
    response.content_disposition = 'attachment; filename="report.txt"'
    return response


with Configurator() as config:
    config.include("cleanup_middleware.pyramid")
    config.add_route("download", "/download")
    config.add_view(download, route_name="download")
    # The one place to wrap: around what make_wsgi_app() returns.
    application = CleanupMiddleware(config.make_wsgi_app())
