"""The project's views; the last three register cleanup hooks (they need the library)."""

import os
import tempfile
from collections.abc import Iterator

from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)

#: What the hooks did, in order.
events: list[str] = []


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("hello")


def chunks() -> Iterator[bytes]:
    yield b"one "
    yield b"two"


def stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(chunks())


def moved(request: HttpRequest) -> HttpResponseRedirect:
    return HttpResponseRedirect("/hello")


def make_file() -> str:
    fd, path = tempfile.mkstemp(prefix="report-")
    os.write(fd, b"report")
    os.close(fd)
    return path


def file(request: HttpRequest) -> FileResponse:
    path = make_file()
    with open(path, "rb") as source:
        data = source.read()
    os.unlink(path)
    return FileResponse(iter([data]))


def fails(request: HttpRequest) -> HttpResponse:
    raise LookupError("the view failed")


def note(event: str) -> None:
    events.append(event)


def delete(path: str) -> None:
    events.append(f"deleted {'a file that was there' if os.path.exists(path) else 'nothing'}")
    os.unlink(path)


def report(request: HttpRequest) -> HttpResponse:
    from cleanup_middleware import add_cleanup

    add_cleanup(request.environ, note, "report")
    return HttpResponse("report")


def streamed_report(request: HttpRequest) -> StreamingHttpResponse:
    from cleanup_middleware import add_cleanup

    add_cleanup(request.environ, note, "streamed report")
    return StreamingHttpResponse(chunks())


def file_report(request: HttpRequest) -> FileResponse:
    from cleanup_middleware import add_cleanup

    path = make_file()
    add_cleanup(request.environ, delete, path)
    return FileResponse(open(path, "rb"))
