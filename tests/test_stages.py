"""Concurrent stages: order kept, bounded look-ahead, errors surface in the consumer."""

import threading
import time

import pytest

from scorer import stages


def test_prefetch_keeps_order_and_runs_ahead_by_at_most_depth():
    produced = []

    def items():
        for i in range(20):
            produced.append(i)
            yield i

    seen = []
    for item in stages.prefetch(items(), depth=2):
        time.sleep(0.01)
        # the producer is at most depth queued + 1 in hand ahead of the consumer
        assert len(produced) - (item + 1) <= 3
        seen.append(item)
    assert seen == list(range(20))


def test_prefetch_reraises_a_producer_error_in_the_consumer():
    def items():
        yield 1
        raise ValueError("bad file")

    it = stages.prefetch(items())
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad file"):
        next(it)


def test_a_consumer_that_stops_early_stops_the_producer():
    stopped = threading.Event()

    def items():
        try:
            for i in range(10_000):
                yield i
        finally:
            stopped.set()

    it = stages.prefetch(items(), depth=1)
    assert next(it) == 0
    it.close()
    deadline = time.time() + 5
    while not stopped.is_set() and time.time() < deadline:
        time.sleep(0.05)
    assert stopped.is_set()


def test_consumer_applies_in_order_and_reports_errors():
    out = []
    c = stages.Consumer(out.append, depth=1)
    for i in range(5):
        c.submit(i)
    c.close()
    assert out == list(range(5))

    def fail(item):
        if item == 2:
            raise OSError("disk full")

    c = stages.Consumer(fail, depth=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(10):
            c.submit(i)
            time.sleep(0.01)
        c.close()


def test_timed_adds_producer_time_but_not_the_consumer_s():
    read = stages.Stopwatch()

    def slow():
        for i in range(3):
            time.sleep(0.02)
            yield i

    for _ in stages.timed(slow(), read):
        time.sleep(0.05)  # the consumer's time is not the producer's
    assert 0.06 <= read.seconds < 0.15
