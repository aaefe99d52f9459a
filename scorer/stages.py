"""Run pipeline stages concurrently: each stage on its own thread, bounded queues between them.

Reading (pyarrow), tokenizing (Rust) and inference (TensorFlow) all release the GIL, so threads
overlap them; the bounded queues are the backpressure that keeps memory flat. An exception in
any stage is re-raised in the thread that consumes its output, and a consumer that stops early
stops its producer.
"""

from __future__ import annotations

import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

_POLL = 0.1  # seconds between checks of the stop flag while a queue is full


def prefetch(items: Iterable, depth: int = 2, name: str = "stage") -> Iterator:
    """Iterate `items` on a background thread, at most `depth` items ahead of the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def work():
        it = iter(items)
        try:
            for item in it:
                if not put(("item", item)):
                    return
            put(("done", None))
        except BaseException as e:  # handed to the consumer, raised there
            put(("error", e))
        finally:
            if hasattr(it, "close"):
                it.close()  # a producer stopped early runs its clean-up (closes files) now

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "item":
                yield value
            elif kind == "done":
                return
            else:
                raise value
    finally:
        stop.set()


class Consumer:
    """Apply `fn` to submitted items on a background thread, at most `depth` items queued."""

    def __init__(self, fn: Callable, depth: int = 2, name: str = "consumer"):
        self._fn = fn
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self):
        while True:
            item = self._q.get()
            if item is _END:
                return
            if self._error is None:
                try:
                    self._fn(item)
                except BaseException as e:
                    self._error = e

    def submit(self, item) -> None:
        self._raise()
        self._q.put(item)

    def close(self) -> None:
        """Wait for every submitted item; re-raise the first error."""
        self._q.put(_END)
        self._thread.join()
        self._raise()

    def cancel(self) -> None:
        """Skip whatever is still queued and wait for the item in hand; errors are dropped."""
        self._error = self._error or _Cancelled()
        self._q.put(_END)
        self._thread.join()

    def _raise(self):
        if self._error is not None:
            raise self._error


_END = object()


class _Cancelled(Exception):
    pass


@dataclass
class Stopwatch:
    """Seconds spent in one stage, summed over its pieces of work."""

    seconds: float = 0.0

    @contextmanager
    def measure(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - t0


def timed(items: Iterable, stopwatch: Stopwatch) -> Iterator:
    """Yield from items, adding the time spent producing each one to the stopwatch."""
    it = iter(items)
    while True:
        with stopwatch.measure():
            try:
                item = next(it)
            except StopIteration:
                return
        yield item
