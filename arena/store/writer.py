"""One writer thread for a store: writes run in submission order, and whatever has queued up
while the previous commit ran is committed together.

A DuckDB commit costs several milliseconds (a battle is six writes), so one commit per write
caps a busy arena at a few dozen battles a second and makes every reply wait behind the queue
of commits. Group commit keeps each write's guarantee (its future completes only once its rows
are committed) at a fraction of the cost. A write that fails takes no other write down with it:
the batch is rolled back and replayed one write at a time, each in its own transactions as if
there were no batching.

A `BatchedWrite` goes further: consecutive queued calls of it run as one call for all of them
(`Store.open_battles` writes a burst of new battles in five statements instead of seven each).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from arena.store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")
Item = TypeVar("Item")

MAX_BATCH = 256
"""Writes committed together at most: bounds the work a rollback and replay can cost."""


@dataclass(frozen=True)
class _Write:
    future: Future[Any]
    write: Callable[..., Any]
    args: tuple[object, ...]
    kwargs: dict[str, object]


class BatchedWrite(Generic[Item, T]):
    """A write that takes many items at once: ``many(items)`` returns each item's result, in
    order, and writes all of them or none. Submitted with one item; the writer passes every
    consecutive queued item of the same write in one call (or one item, when replaying)."""

    def __init__(self, many: Callable[[Sequence[Item]], Sequence[T]]) -> None:
        self.many = many
        self.__name__ = getattr(many, "__name__", type(self).__name__)  # for logs, as a function

    def __call__(self, item: Item) -> T:
        (result,) = self.many([item])
        return result


class StoreWriter:
    """Runs store writes on one thread, in order, with group commit (see the module)."""

    def __init__(self, store: Store, *, name: str = "arena-store-writer") -> None:
        self._store = store
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, write: Callable[..., T], *args: object, **kwargs: object) -> Future[T]:
        """Queue ``write(*args, **kwargs)``, to run on the writer thread with the store calls
        inside it batched; the future completes once they are committed (or with the error)."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the store writer is closed: no more writes are taken")
            self._queue.put(_Write(future, write, args, kwargs))
        return future

    def flush(self) -> None:
        """Wait until every write submitted so far is committed (writes run in order)."""
        self.submit(lambda: None).result()

    def close(self) -> None:
        """Run every write submitted so far, then stop the thread. Closing twice is harmless."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            writes, stop = [first], False
            while len(writes) < MAX_BATCH:
                try:
                    queued = self._queue.get_nowait()
                except queue.Empty:
                    break
                if queued is None:
                    stop = True
                    break
                writes.append(queued)
            self._commit([w for w in writes if w.future.set_running_or_notify_cancel()])
            if stop:
                return

    def _commit(self, writes: list[_Write]) -> None:
        if len(writes) > 1:
            try:
                with self._store.batch():
                    results = [result for run in _runs(writes) for result in _run_all(run)]
            except Exception:
                log.info(
                    "a batch of %d store writes failed; replaying them one by one", len(writes)
                )
            else:
                for w, result in zip(writes, results, strict=True):
                    w.future.set_result(result)
                return
        for w in writes:
            try:
                result = w.write(*w.args, **w.kwargs)
            except BaseException as exc:  # the waiter gets it, whatever it is
                w.future.set_exception(exc)
            else:
                w.future.set_result(result)


def _runs(writes: list[_Write]) -> Iterator[list[_Write]]:
    """The writes in order, consecutive calls of one `BatchedWrite` together, others alone."""
    for batched, run in itertools.groupby(
        writes, key=lambda w: w.write if isinstance(w.write, BatchedWrite) else None
    ):
        if batched is None:
            yield from ([w] for w in run)
        else:
            yield list(run)


def _run_all(run: list[_Write]) -> Sequence[Any]:
    first = run[0]
    if len(run) == 1:
        return [first.write(*first.args, **first.kwargs)]
    results = first.write.many([w.args[0] for w in run])
    if len(results) != len(run):
        raise RuntimeError(f"{first.write.many!r} returned {len(results)} results for {len(run)}")
    return results
