"""Pyramid: ``request.add_cleanup`` and its kin, with one ``config.include``.

Pyramid's own ``request.add_finished_callback`` callbacks run when the router has the response,
before the server has sent a byte of its body, so they cannot delete a file that the body is
still sending, nor hold a resource open while it streams. ``config.include`` of this module adds
request methods that register with :class:`~cleanup_middleware.CleanupMiddleware` instead,
whose hooks run when the server closes the response:

* ``request.add_cleanup(fn, *args, **kwargs)``, as :func:`cleanup_middleware.add_cleanup`;
* ``request.enter_context(cm)``, as :func:`cleanup_middleware.enter_context`;
* ``request.on_success(fn, *args, **kwargs)`` and ``request.on_failure(fn, *args, **kwargs)``,
  as :func:`cleanup_middleware.on_success` and :func:`cleanup_middleware.on_failure`.

The WSGI application that ``Configurator.make_wsgi_app()`` returns must still be wrapped in the
middleware (or the middleware be put in its PasteDeploy pipeline): without it the methods raise
the ``RuntimeError`` of ``add_cleanup``, which says so.

A subrequest (``request.invoke_subrequest(Request.blank("/other"))``) has an environ of its own,
which never passed through the middleware: its hooks belong to the top-level response, and run
when that one is closed.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from ._extras import missing_extra
from .cleanup import ENVIRON_KEY, add_cleanup, enter_context, on_failure, on_success

try:
    from pyramid.config import Configurator  # type: ignore[import-untyped]
    from pyramid.request import Request  # type: ignore[import-untyped]
    from pyramid.threadlocal import manager  # type: ignore[import-untyped]
except ImportError as exc:
    raise missing_extra(__name__, "pyramid", exc) from exc

__all__ = ["includeme"]

T = TypeVar("T")


def includeme(config: Configurator) -> None:
    """Add ``request.add_cleanup``, ``.enter_context``, ``.on_success`` and ``.on_failure``.

    Run by ``config.include``.

    Example::

        with Configurator() as config:
            config.include("cleanup_middleware.pyramid")
            ...
            app = CleanupMiddleware(config.make_wsgi_app())
    """
    config.add_request_method(request_add_cleanup, "add_cleanup")
    config.add_request_method(request_enter_context, "enter_context")
    config.add_request_method(request_on_success, "on_success")
    config.add_request_method(request_on_failure, "on_failure")


def request_add_cleanup(
    request: Request, fn: Callable[..., object], /, *args: Any, **kwargs: Any
) -> None:
    """``request.add_cleanup(fn, *args, **kwargs)``: ``fn`` runs once this response is closed."""
    add_cleanup(_response_environ(request), fn, *args, **kwargs)


def request_enter_context(request: Request, cm: AbstractContextManager[T], /) -> T:
    """``request.enter_context(cm)``: enter ``cm`` now, exit it when this response is closed."""
    return enter_context(_response_environ(request), cm)


def _response_environ(request: Request) -> dict[str, Any]:
    """The environ of the response that ``request``'s hooks belong to.

    A request's own, if it passed through the middleware; for a subrequest, that of the nearest
    request below it on Pyramid's stack of the thread's active requests (``invoke_subrequest``
    pushes each on it) that did: the top-level one. Else its own, which ``add_cleanup`` refuses
    with the error that says to wrap the application.
    """
    environ: dict[str, Any] = request.environ
    if ENVIRON_KEY not in environ:
        for active in reversed(manager.stack):
            outer = active.get("request")
            if outer is not None and ENVIRON_KEY in outer.environ:
                return outer.environ  # type: ignore[no-any-return]
    return environ


def request_on_success(
    request: Request, fn: Callable[..., object], /, *args: Any, **kwargs: Any
) -> None:
    """``request.on_success(fn, *args, **kwargs)``: ``fn`` runs at close on success."""
    on_success(_response_environ(request), fn, *args, **kwargs)


def request_on_failure(
    request: Request, fn: Callable[..., object], /, *args: Any, **kwargs: Any
) -> None:
    """``request.on_failure(fn, *args, **kwargs)``: ``fn`` runs at close on failure."""
    on_failure(_response_environ(request), fn, *args, **kwargs)
