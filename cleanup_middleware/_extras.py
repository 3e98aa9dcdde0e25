"""The error for an integration module imported without the extra that installs its framework."""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(module: str, extra: str, cause: ImportError) -> ImportError:
    """An ``ImportError`` saying that ``module`` needs ``pip install 'cleanup-middleware[extra]'``.

    Raise it ``from cause``, the import that failed, so that the traceback keeps what is missing.
    """
    return ImportError(
        f"{module} needs the {extra!r} extra ({cause}): pip install 'cleanup-middleware[{extra}]'",
        name=cause.name,
    )
