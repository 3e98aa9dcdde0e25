"""Property tests: random sequences of application and server behaviour keep the invariants.

Hypothesis draws a scenario (what the body is, which hooks are registered before, during and
after iteration, where something raises, how far the server reads, how often it calls
``close()``), runs it in-process through :class:`CleanupMiddleware`, and checks:

* each hook runs at most once, and exactly once whenever ``close()`` was called (by the server,
  or by the middleware itself when the application raised before returning);
* the body ends: the server never gets more chunks than the application made, whatever they
  are (bodies that yield ``str``, a text file returned whole, included);
* hooks run last-registered-first (a hook registered by a hook runs right after it);
* the body's own ``close()`` runs once, before any hook;
* a registration after close is refused with ``RuntimeError``, never silently dropped;
* a registration racing ``close()`` (landing where close() finds no hooks left, or with
  close() running right before or after its append) either runs once or raises;
* what ``close()`` raises: a hook's ``KeyboardInterrupt``/``SystemExit`` after every hook ran,
  else the body's ``close()`` error; an ordinary hook error is only logged;
* a copy of the environ (``copy.copy``, or ``copy.deepcopy`` of its keys but the streams)
  through which the application registers its hooks changes none of the above: the hooks are
  the request's, and collecting the copy runs none of them.
* outcome callbacks, drawn among the hooks as pairs (an ``on_success`` and an ``on_failure``,
  registered by the application, during iteration, after it, or by a hook at close): exactly
  one of each pair runs, once, after every hook and in registration order, and it is the one
  the request's outcome calls for (it failed if the application, the body's ``close()`` or a
  hook raised). The same for the garbage-collection net, and for a lone ``on_success`` racing
  the first close.
"""

from __future__ import annotations

import copy
import gc
import warnings
from dataclasses import dataclass, field
from typing import Any

import pytest
from apps.fault_inproc import (
    FakeFileWrapper,
    collect_unraisable,
    make_environ,
    quiet_cleanup_logger,
    start_response,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hardening import Interleaving

from cleanup_middleware import ENVIRON_KEY, CleanupMiddleware, add_cleanup, on_failure, on_success

# "reclose": the hook calls the response's close() again, re-entrantly (as werkzeug's
# Response.close does when it closes a file wrapper whose close is the middleware's).
# "outcome": not a hook but a pair of outcome callbacks; "outcome by hook": a hook that
# registers such a pair when it runs.
ACTIONS = (
    "ok",
    "ok",
    "ok",
    "error",
    "interrupt",
    "exit",
    "register",
    "reclose",
    "outcome",
    "outcome by hook",
)
FAILING = ("error", "interrupt", "exit")
# "c_file": a file wrapper whose objects refuse a new close (as mod_wsgi's and bjoern's C types
# do), so the middleware stands in for it and hands it the file in a ClosingFile.
# "text_file": a file-like object that reads str, returned whole (as open(path) in text mode);
# "str_generator": a generator of str. Both yield str chunks.
BODY_KINDS = ("list", "generator", "iterable", "file", "c_file", "text_file", "str_generator")
FILE_KINDS = ("iterable", "file", "c_file", "text_file")  # bodies with a close() of their own
TEXT_KINDS = ("text_file", "str_generator")
RACES = ("close sees no hooks", "before append", "after append")
# How the application copies the environ it registers its hooks through, if it does.
COPIES = (None, "copy", "deepcopy")
RACERS = ("add_cleanup", "on_success")
OUTCOMES = ("success", "failure")


class AppError(Exception):
    pass


class IterError(Exception):
    pass


class BodyCloseError(Exception):
    pass


@dataclass
class Scenario:
    body: str
    chunks: int
    before: list[str]  # actions of hooks registered before the app returns
    app_raises: bool
    during: dict[int, list[str]]  # chunk index -> actions of hooks registered when it is made
    raise_at: int | None  # iteration raises when making this chunk
    body_close_raises: bool
    body_close_recloses: bool  # the body's close() calls the response's close() again
    reads: int  # chunks the server pulls before it stops (a client that went away)
    after: list[str]  # registered after iteration stopped, before close
    closes: int
    late: int  # registrations attempted after the first close
    race: str | None  # where a registration meets the first close (see Interleaving)
    copy: str | None  # how the environ that the app registers through is copied (COPIES)
    racer: str  # what that registration is


@st.composite
def scenarios(draw: Any) -> Scenario:
    body = draw(st.sampled_from(BODY_KINDS))
    chunks = draw(st.integers(0, 4))
    actions = st.sampled_from(ACTIONS)
    iterates = body != "list"
    during: dict[int, list[str]] = {}
    raise_at = None
    if iterates and chunks:
        during = draw(
            st.dictionaries(
                st.integers(0, chunks - 1), st.lists(actions, max_size=2), max_size=chunks
            )
        )
        raise_at = draw(st.none() | st.integers(0, chunks - 1))
    return Scenario(
        body=body,
        chunks=chunks,
        before=draw(st.lists(actions, max_size=3)),
        app_raises=draw(st.integers(0, 5)) == 0,
        during=during,
        raise_at=raise_at,
        body_close_raises=body in FILE_KINDS and draw(st.booleans()),
        body_close_recloses=body in FILE_KINDS and draw(st.booleans()),
        reads=draw(st.integers(0, chunks + 1)),
        after=draw(st.lists(actions, max_size=2)),
        closes=draw(st.integers(0, 3)),
        late=draw(st.integers(0, 1)),
        race=draw(st.none() | st.sampled_from(RACES)),
        copy=draw(st.sampled_from(COPIES)),
        racer=draw(st.sampled_from(RACERS)),
    )


@dataclass
class Run:
    """What happened: events in order, the hooks that were accepted and the pairs of outcome
    callbacks, each in registration order."""

    events: list[tuple[str, int]] = field(default_factory=list)
    registered: list[tuple[int, str]] = field(default_factory=list)
    next_id: int = 0
    pairs: list[int] = field(default_factory=list)

    def register_pair(self, environ: dict[str, Any]) -> None:
        pair_id = len(self.pairs)
        on_success(environ, self.events.append, ("success", pair_id))
        on_failure(environ, self.events.append, ("failure", pair_id))
        self.pairs.append(pair_id)

    def register(self, environ: dict[str, Any], action: str, by_hook: bool = False) -> None:
        if action == "outcome":
            self.register_pair(environ)
            return
        # The hooks hold the environ, never the Run: dropping the request drops everything.
        hook_id = self.next_id
        self.next_id += 1

        def hook() -> None:
            self.events.append(("hook", hook_id))
            if action == "error":
                raise ValueError(hook_id)
            if action == "interrupt":
                raise KeyboardInterrupt(hook_id)
            if action == "exit":
                raise SystemExit(hook_id)
            if action == "register":
                self.register(environ, "ok", by_hook=True)
            if action == "reclose":
                environ[ENVIRON_KEY].close()
            if action == "outcome by hook":
                self.register_pair(environ)

        add_cleanup(environ, hook)
        if not by_hook:  # expected_order() works out where a hook's own registration runs
            self.registered.append((hook_id, action))

    def produce(self, environ: dict[str, Any], sc: Scenario) -> Any:
        for i in range(sc.chunks):
            for action in sc.during.get(i, ()):
                self.register(environ, action)
            if sc.raise_at == i:
                raise IterError(i)
            yield f"x{i}" if sc.body in TEXT_KINDS else b"x%d" % i

    def close_body(self, environ: dict[str, Any], sc: Scenario) -> None:
        self.events.append(("body-close", 0))
        if sc.body_close_recloses:
            environ[ENVIRON_KEY].close()
        if sc.body_close_raises:
            raise BodyCloseError


class Body:
    def __init__(self, run: Run, environ: dict[str, Any], sc: Scenario) -> None:
        self.run, self.environ, self.sc = run, environ, sc

    def __iter__(self) -> Any:
        return self.run.produce(self.environ, self.sc)

    def close(self) -> None:
        self.run.close_body(self.environ, self.sc)


class FileBody(Body):
    """A file for the "c_file" wrapper: read() is all a ClosingFile needs of it."""

    def read(self, size: int = -1) -> bytes:
        return b""


class TextBody(Body):
    """A text file returned whole: it reads str, "" at its end, and iterates as its lines."""

    def read(self, size: int = -1) -> str:
        return ""


def copied(environ: dict[str, Any], how: str | None) -> dict[str, Any]:
    """``environ``, or its copy made ``how``: a deep copy leaves out the streams it cannot copy."""
    if how == "copy":
        return copy.copy(environ)
    if how == "deepcopy":
        streams = ("wsgi.input", "wsgi.errors")
        return copy.deepcopy({k: v for k, v in environ.items() if k not in streams})
    return environ


def make_app(run: Run, sc: Scenario) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        registering = copied(environ, sc.copy)
        for action in sc.before:
            run.register(registering, action)
        del registering  # the hooks keep a copy alive; dropping it here must run none of them
        gc.collect()
        if sc.app_raises:
            raise AppError
        start_response("200 OK", [("Content-Type", "text/plain")])
        if sc.body == "list":
            return [b"x%d" % i for i in range(sc.chunks)]
        if sc.body in ("generator", "str_generator"):
            return run.produce(environ, sc)
        if sc.body == "text_file":
            return TextBody(run, environ, sc)
        if sc.body == "iterable":
            return Body(run, environ, sc)
        if sc.body == "c_file":
            return environ["wsgi.file_wrapper"](FileBody(run, environ, sc))
        # The "file" of this wrapper is the scenario's Body: its close() is the file's close.
        return environ["wsgi.file_wrapper"](Body(run, environ, sc))

    return app


class ScenarioFileWrapper(FakeFileWrapper):
    def __iter__(self) -> Any:
        return iter(self.filelike)


class SlottedFileWrapper:
    """Like a C server's wrapper: no __dict__, and its close() closes the file it was given."""

    __slots__ = ("filelike",)

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike

    def __iter__(self) -> Any:
        return iter(self.filelike)

    def close(self) -> None:
        self.filelike.close()


def expected_order(registered: list[tuple[int, str]]) -> list[int]:
    """Last-registered-first, a hook's own registration running right after it."""
    stack = list(registered)
    next_id = max((i for i, _ in registered), default=-1) + 1
    order = []
    while stack:
        hook_id, action = stack.pop()
        order.append(hook_id)
        if action == "register":
            stack.append((next_id, "ok"))
            next_id += 1
    return order


def expected_outcome(registered: list[tuple[int, str]], sc: Scenario) -> str:
    """Which outcome callback of each pair runs: "failure" if the application, the body's own
    ``close()`` or a hook raised. This server swallows iteration errors and calls ``close()``
    outside its handler, so they are not seen (as on servers that do not report them)."""
    failed = (
        sc.app_raises
        or (sc.body in FILE_KINDS and sc.body_close_raises)
        or any(action in FAILING for _, action in registered)
    )
    return "failure" if failed else "success"


def check_outcomes(run: Run, registered: list[tuple[int, str]], sc: Scenario) -> None:
    """Exactly one of each pair ran, once, after every hook, in registration order, and it is
    the one the outcome calls for."""
    outcomes = [(n, event) for n, event in enumerate(run.events) if event[0] in OUTCOMES]
    assert [pair for _, (_, pair) in outcomes] == run.pairs
    assert {kind for _, (kind, _) in outcomes} <= {expected_outcome(registered, sc)}
    others = [n for n, event in enumerate(run.events) if event[0] not in OUTCOMES]
    if outcomes and others:
        assert outcomes[0][0] > others[-1], "an outcome callback ran before a hook"


def expected_raise(registered: list[tuple[int, str]], sc: Scenario) -> type[BaseException] | None:
    for hook_id in expected_order(registered):
        action = dict(registered).get(hook_id, "ok")
        if action == "interrupt":
            return KeyboardInterrupt
        if action == "exit":
            return SystemExit
    if sc.body_close_raises:
        return BodyCloseError
    return None


def race_first_close(
    race: str, racer: str, environ: dict[str, Any], body: Any, outcome: str
) -> list[Any]:
    """Close the response once with a registration (``racer``) at the point ``race`` names.

    Returns what that close() raised, as ``[type or None]``; checks the registration either
    ran once (an ``on_success``: if the request succeeded, as ``outcome`` says) or was refused.
    """
    race_ran: list[str] = []
    first_close: list[type[BaseException] | None] = []

    def close_once() -> None:
        try:
            body.close()
        except BaseException as exc:
            first_close.append(type(exc))
        else:
            first_close.append(None)

    def register_racing() -> str:
        try:
            (add_cleanup if racer == "add_cleanup" else on_success)(
                environ, race_ran.append, "race"
            )
        except RuntimeError:
            return "refused"
        return "registered"

    cleanup = environ[ENVIRON_KEY]
    outcomes: list[str] = []
    if race == "close sees no hooks":
        hooks = Interleaving(race, lambda: outcomes.append(register_racing()))
    else:
        hooks = Interleaving(race, close_once)
    hooks.extend(cleanup._hooks)
    cleanup._hooks = hooks
    if race == "close sees no hooks":
        close_once()
    else:
        outcomes.append(register_racing())
    # Refused only when close() finished before the append; run once otherwise.
    assert outcomes == ["refused" if race == "before append" else "registered"]
    runs = outcomes == ["registered"] and (racer == "add_cleanup" or outcome == "success")
    assert race_ran == (["race"] if runs else [])
    return first_close


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(sc=scenarios())
def test_random_behaviour_keeps_invariants(sc: Scenario) -> None:
    # Freezing what exists keeps the gc.collect() below down to this example's objects.
    gc.freeze()
    try:
        with quiet_cleanup_logger():
            check_scenario(sc)
    finally:
        gc.unfreeze()


def check_scenario(sc: Scenario) -> None:
    server_wrapper = SlottedFileWrapper if sc.body == "c_file" else ScenarioFileWrapper
    environ = make_environ("GET", "/property", file_wrapper=server_wrapper)
    run = Run()
    mw = CleanupMiddleware(make_app(run, sc))

    # --- the app is called; if it raises, the middleware closes the response itself
    try:
        body = mw(environ, start_response)
    except AppError:
        closed = True
        body = None
    except (KeyboardInterrupt, SystemExit) as exc:
        # A hook's KeyboardInterrupt/SystemExit may win over the application's error (as it
        # does from close()), but nothing else may.
        assert sc.app_raises, "the middleware raised although the application did not"
        assert type(exc) is expected_raise(run.registered, sc)
        assert isinstance(exc.__context__, AppError)
        closed = True
        body = None
    else:
        closed = False
        if sc.body in ("file", "c_file"):
            # The server's file wrapper came back as the very same object (sendfile kept).
            assert type(body) is server_wrapper
            assert environ["wsgi.file_wrapper"] is server_wrapper
        # --- the server pulls `reads` chunks, swallowing iteration errors
        it = iter(body)
        got = 0
        try:
            for _ in range(sc.reads):
                next(it)
                got += 1
        except (StopIteration, IterError):
            pass
        del it
        assert got <= sc.chunks, "the body never ended"
        for action in sc.after:
            run.register(environ, action)

    accepted_before_close = list(run.registered)

    # --- a registration from another thread meets the first close
    first_close: list[type[BaseException] | None] = []
    if sc.race and body is not None and sc.closes:
        outcome = expected_outcome(accepted_before_close, sc)
        first_close = race_first_close(sc.race, sc.racer, environ, body, outcome)

    # --- the server calls close() 0 to 3 times
    if body is not None:
        for n in range(sc.closes):
            if n == 0 and first_close:
                raised: type[BaseException] | None = first_close[0]
            else:
                try:
                    body.close()
                except BaseException as exc:
                    raised = type(exc)
                else:
                    raised = None
            if n == 0:
                assert raised is expected_raise(accepted_before_close, sc)
            else:
                assert raised is None, "a second close() did something"
        closed = closed or sc.closes > 0

    hook_runs = [i for kind, i in run.events if kind == "hook"]
    body_closes = [n for n, (kind, _) in enumerate(run.events) if kind == "body-close"]

    if closed:
        # --- registering after close is refused, loudly
        for _ in range(sc.late):
            with pytest.raises(RuntimeError, match="after the response was closed"):
                add_cleanup(environ, lambda: None)
            with pytest.raises(RuntimeError, match=r"^on_failure\(\) was called after"):
                on_failure(environ, lambda: None)
        assert hook_runs == expected_order(accepted_before_close)
        check_outcomes(run, accepted_before_close, sc)
        assert len(set(hook_runs)) == len(hook_runs) == run.next_id
        if sc.body in FILE_KINDS and not sc.app_raises:
            assert body_closes == [0], "the body's close() must run once, before every hook"
        else:
            assert body_closes == []
    else:
        assert hook_runs == [], "a hook ran although nothing closed the response"
        assert body_closes == []

    # --- drop everything; a hook may only run here if nothing closed the response (the GC
    # safety net), and never a second time.
    with warnings.catch_warnings(), collect_unraisable():
        warnings.simplefilter("ignore", ResourceWarning)
        del body, environ, mw
        if not closed:
            gc.collect()
    hook_runs = [i for kind, i in run.events if kind == "hook"]
    assert len(set(hook_runs)) == len(hook_runs), "a hook ran twice"
    assert sorted(hook_runs) == list(range(run.next_id)), "the GC safety net missed a hook"
    # The net counts as what enter_context is told there: only what was recorded, and a hook.
    check_outcomes(run, run.registered, sc)
