"""Views that register cleanup hooks, under Django's test tools: they need the library adopted.

The hooks run when Django closes the response: at once for an ordinary response (the test
client closes it), once read for a streaming one (or, read or not, when the test returns: the
pytest plugin), once the server closed the file wrapper for a file response.
"""

import io
from wsgiref.util import FileWrapper, setup_testing_defaults

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.test import Client, RequestFactory
from django.test.client import ClientHandler
from project_views import events

from cleanup_middleware import CleanupMiddleware


@pytest.fixture(autouse=True)
def no_events() -> None:
    events.clear()


def test_a_hook_runs_once_the_test_client_closed_the_response(cleanup_hooks) -> None:
    response = Client().get("/report")
    assert response.content == b"report"
    assert events == ["report"]
    [closed] = cleanup_hooks.responses
    assert (closed.request, closed.hooks) == ("GET /report", ["project_views.note"])


def test_a_streaming_response_runs_its_hook_once_read() -> None:
    response = Client().get("/streamed-report")
    assert events == []
    assert b"".join(response.streaming_content) == b"one two"
    assert events == ["streamed report"]


def test_a_streaming_response_left_unread_is_closed_by_the_plugin(cleanup_hooks) -> None:
    Client().get("/streamed-report")
    assert events == []
    cleanup_hooks.close_responses()
    assert events == ["streamed report"]


def test_a_request_factory_request_through_the_handler() -> None:
    handler = ClientHandler()
    handler.load_middleware()
    response = handler.get_response(RequestFactory().get("/report"))
    assert events == []
    response.close()
    assert events == ["report"]


def environ_for(path: str) -> dict:
    environ = {"PATH_INFO": path, "wsgi.input": io.BytesIO(), "wsgi.file_wrapper": FileWrapper}
    setup_testing_defaults(environ)
    return environ


def serve(application, environ: dict) -> object:
    """As runserver's wsgiref server does: the body, iterated unless a file wrapper, closed."""
    body = application(environ, lambda status, headers, exc_info=None: None)
    if not isinstance(body, FileWrapper):
        b"".join(body)
    body.close()
    return body


def test_without_the_wsgi_wrapper_a_file_response_keeps_its_file_wrapper() -> None:
    body = serve(WSGIHandler(), environ_for("/file-report"))
    assert isinstance(body, FileWrapper), "the server's sendfile() needs its own object"
    assert events == ["deleted a file that was there"]


def test_with_the_wsgi_wrapper_each_hook_runs_once_and_the_file_wrapper_stays() -> None:
    body = serve(CleanupMiddleware(WSGIHandler()), environ_for("/file-report"))
    assert isinstance(body, FileWrapper)
    assert events == ["deleted a file that was there"]
    serve(CleanupMiddleware(WSGIHandler()), environ_for("/report"))
    assert events == ["deleted a file that was there", "report"]
