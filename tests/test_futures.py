"""The engine's future combinators: then, gather, settled."""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from reactforge.engine.futures import gather, settled, then


def _done(value=None, error: BaseException | None = None) -> Future:
    f = Future()
    if error is not None:
        f.set_exception(error)
    else:
        f.set_result(value)
    return f


def test_then_runs_after_the_future_and_resolves_to_what_fn_returns():
    f = Future()
    seen = []
    out = then(f, lambda done: seen.append(done.result()) or done.result() * 2)
    assert not out.done() and seen == []
    f.set_result(21)
    assert out.result(timeout=1) == 42 and seen == [21]
    # an already-finished future: fn runs at once
    assert then(_done(1), lambda done: done.result() + 1).result(timeout=1) == 2


def test_then_hands_fn_errors_to_the_waiter_and_lets_fn_read_the_input_error():
    out = then(_done(1), lambda done: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        out.result(timeout=1)
    failed = then(_done(error=KeyError("lost")), lambda done: repr(done.exception()))
    assert failed.result(timeout=1) == "KeyError('lost')"


def test_then_resolves_only_once_the_work_fn_submits_is_submitted():
    with ThreadPoolExecutor(4) as pool:
        release = threading.Event()
        first = pool.submit(lambda: release.wait(5) and 3)
        chained = then(first, lambda done: pool.submit(lambda: done.result() * 10))
        release.set()
        second = chained.result(timeout=5)  # the submission happened before `chained` resolved
        assert isinstance(second, Future) and second.result(timeout=5) == 30


def test_gather_waits_for_all_keeps_order_and_per_item_errors():
    a, b, c = Future(), Future(), Future()
    g = gather([a, b, c])
    c.set_result("c")
    a.set_exception(RuntimeError("a failed"))
    assert not g.done()  # b is still running
    b.set_result("b")
    items = g.result(timeout=1)  # never raises: a's failure stays a's
    assert items == [a, b, c]
    assert isinstance(items[0].exception(), RuntimeError)
    assert [settled(f) for f in items] == [None, "b", "c"]


def test_gather_of_nothing_is_done():
    assert gather([]).result(timeout=1) == []


def test_gather_resolves_once_when_futures_finish_in_many_threads():
    n, rounds = 64, 20
    for _ in range(rounds):
        futures = [Future() for _ in range(n)]
        calls = []
        after = then(gather(futures), lambda g: calls.append(all(f.done() for f in g.result())) or len(calls))
        start = threading.Barrier(8)

        def finish(chunk):
            start.wait()
            for f in chunk:
                f.set_result(1)

        threads = [threading.Thread(target=finish, args=(futures[k::8],)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert after.result(timeout=5) == 1
        assert calls == [True]  # ran once, and only after every future was done


def test_settled_gives_the_result_or_the_default():
    assert settled(_done(5)) == 5
    assert settled(_done(error=ValueError())) is None
    assert settled(_done(error=ValueError()), default=0) == 0
