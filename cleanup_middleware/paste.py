"""The middleware as a PasteDeploy filter, for ini-file pipelines (Pyramid and the like).

Applications deployed with an ini file compose their WSGI pipeline there, so the cleanup
configuration belongs there too, with no change to the code::

    [pipeline:main]
    pipeline = cleanup myapp

    [filter:cleanup]
    use = egg:cleanup-middleware
    config = %(here)s/cleanup.toml

PasteDeploy finds :func:`filter_app_factory` through the ``paste.filter_app_factory`` entry point
of the distribution; install it with ``pip install 'cleanup-middleware[paste]'``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .cli import wrap
from .config import ConfigError

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from .middleware import CleanupMiddleware

__all__ = ["filter_app_factory"]


def filter_app_factory(
    app: WSGIApplication, global_conf: dict[str, Any], **local_conf: str
) -> CleanupMiddleware:
    """Wrap ``app`` in :class:`~cleanup_middleware.CleanupMiddleware`; PasteDeploy calls it.

    The filter section takes one option, ``config``: the cleanup config file, relative to the
    ini file's directory unless absolute. Without it, ``$CLEANUP_MIDDLEWARE_CONFIG`` names the
    file, as for the middleware itself.

    :raises ConfigError: the section has another option, or the cleanup config is wrong.
    """
    here = global_conf.get("here", os.getcwd())
    source = f"the cleanup filter section of {global_conf.get('__file__', 'the ini file')}"
    config = local_conf.pop("config", None)
    if local_conf:
        raise ConfigError(
            source,
            ", ".join(sorted(local_conf)),
            "unknown option; the only option is config (the cleanup config file, such as "
            "config = %(here)s/cleanup.toml), and on-hook-error goes in that file",
        )
    return wrap(app, config=os.path.join(here, config) if config else None)
