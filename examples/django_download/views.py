from __future__ import annotations

import os

from django.http import FileResponse, HttpRequest
from reports import make_report, report_size

from cleanup_middleware import add_cleanup


def download(request: HttpRequest) -> FileResponse:
    path = make_report(report_size(request.GET.get("size")))
    # Runs once the server has closed the response, after Django's own close() (which closes
    # the file and sends request_finished).
    add_cleanup(request.environ, os.unlink, path)
    return FileResponse(open(path, "rb"), as_attachment=True, filename="report.txt")
