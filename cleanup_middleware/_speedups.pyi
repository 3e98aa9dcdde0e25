# The C base of cleanup_middleware.cleanup.ResponseCleanup (see _speedups.c); it has the same
# slots, __iter__ and garbage-collection net as cleanup._PythonResponseCleanupBase.
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from typing_extensions import disjoint_base

@disjoint_base
class ResponseCleanupBase:
    _body: Iterable[bytes]
    _close_body: Callable[[], object] | None
    _environ: dict[str, Any] | None
    _failure: BaseException
    _hooks: list[Callable[[], object]] | tuple[()]
    _outcome: bool
    def __iter__(self) -> Iterator[bytes]: ...

def add_cleanup(
    environ: dict[str, Any], fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> None: ...
def setup_add_cleanup(
    python_add_cleanup: Callable[..., None], key: str, partial: type[Any], /
) -> bool: ...
