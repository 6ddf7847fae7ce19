"""Small combinators over the engine's futures (concurrent.futures.Future).

Workflows chain work with these instead of closures over locks and counters:

    labelled = then(engine.submit(spec, [atoms]), label_it)    # label_it(done_future) runs once it is done
    bands = gather(futures)                                    # done when all are; failures stay per item
    after = then(gather(futures), pick_the_lowest)             # runs once, after the last of them

Callbacks run in whichever thread completes a future (a Parsl executor thread, or the caller's when the
future was already done), so they should return what they produce rather than write shared state; the
coordinating thread reads it after `wait`.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


def then(fut: Future, fn: Callable[[Future], T]) -> Future:
    """A future of `fn(fut)`, resolved once `fut` is done and `fn` has returned (or raised: the error is
    the new future's). Wait on this, not on `fut`, when `fn` submits more work: a plain done-callback
    may still be running when waiters on `fut` wake up."""
    out: Future = Future()

    def callback(f: Future):
        try:
            out.set_result(fn(f))
        except BaseException as err:  # noqa: BLE001 - handed to whoever waits on `out`
            out.set_exception(err)

    fut.add_done_callback(callback)
    return out


def gather(futures: Iterable[Future]) -> Future:
    """A future resolved, once every one of `futures` is done, to the list of those futures in their
    given order. It never raises: each item keeps its own result or exception (read them with
    `settled`, `.result()` or `.exception()`)."""
    items = list(futures)
    out: Future = Future()
    if not items:
        out.set_result([])
        return out
    remaining = [len(items)]
    lock = threading.Lock()

    def one_done(_f: Future):
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            out.set_result(items)

    for f in items:
        f.add_done_callback(one_done)
    return out


def settled(fut: Future, default: Any = None) -> Any:
    """The future's result, or `default` if it raised (waits for it)."""
    return default if fut.exception() is not None else fut.result()
