"""Tests any Django project has: its views through the test Client (no cleanup hook in them).

They must give the same results with the library adopted as without it.
"""

import project_views
import pytest
from django.test import Client, RequestFactory, SimpleTestCase
from django.test.client import ClientHandler


class ProjectTests(SimpleTestCase):
    def test_hello(self) -> None:
        response = self.client.get("/hello")
        self.assertEqual(response.content, b"hello")

    def test_stream_read(self) -> None:
        response = self.client.get("/stream")
        self.assertEqual(b"".join(response.streaming_content), b"one two")

    def test_stream_left_unread(self) -> None:
        response = self.client.get("/stream")
        self.assertEqual(response.status_code, 200)

    def test_file(self) -> None:
        response = self.client.get("/file")
        self.assertEqual(response.getvalue(), b"report")

    def test_redirect_followed(self) -> None:
        response = self.client.get("/moved", follow=True)
        self.assertEqual(response.redirect_chain, [("/hello", 302)])

    def test_not_found(self) -> None:
        self.assertEqual(self.client.get("/nowhere").status_code, 404)

    def test_a_failing_view_raises_in_the_test(self) -> None:
        with pytest.raises(LookupError):
            self.client.get("/fails")

    def test_a_failing_view_answers_500(self) -> None:
        client = Client(raise_request_exception=False)
        self.assertEqual(client.get("/fails").status_code, 500)


def test_request_factory_through_the_handler() -> None:
    handler = ClientHandler()
    handler.load_middleware()
    response = handler.get_response(RequestFactory().get("/hello"))
    assert response.content == b"hello"
    response.close()


def test_a_view_called_with_a_request_factory_request() -> None:
    assert project_views.hello(RequestFactory().get("/hello")).content == b"hello"
