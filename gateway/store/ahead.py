"""Reading ahead: the database makes the next chunk of a long read while the caller works on the current one.

>>> for chunk in read_ahead(lambda: rows_in_chunks(engine)):   # the generator runs on a worker thread
...     act_on(chunk)                                          # the next chunk is being read meanwhile

A broad study's automatic flows read tens of thousands of people a chunk at a time and write their alert jobs
between chunks; done one after the other the reads and the writes add up, although the database could make the
next chunk while the gateway writes (the driver waits on its socket without holding the interpreter).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def read_ahead(produce: Callable[[], Iterator[T]], depth: int = 1) -> Iterator[T]:
    """The items of ``produce()``, made on a worker thread at most ``depth`` items ahead of the caller.

    The worker calls ``produce`` itself, so a connection the generator opens belongs to the worker alone. An
    error raised there is raised here, at the item it stopped; a caller that stops early (``close()``, or
    leaving a ``for`` loop whose generator is then collected) stops the worker at its next item.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            gen = produce()
            try:
                for item in gen:
                    if not put(item):
                        return
            finally:
                close = getattr(gen, "close", None)
                if close is not None:
                    close()  # the generator's own clean-up (its connection) on this thread
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 (handed to the caller, raised there)
            put(_Failed(exc))

    worker = threading.Thread(target=work, name="read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()
        worker.join()
