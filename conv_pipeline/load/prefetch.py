"""Decode ahead: a generator's items produced on a worker thread while the caller works on the last one.

Flow: source -> **load** -> stack -> execute -> sink -> engines. ``blocks.py`` wraps each pass of a
``BlockReader`` in ``prefetched``, so that libsndfile (which runs without the GIL) decodes the next
block on one core while the stack computes the current one on the other: chunked execution of a
cheap stack (``model=mel``) was decode, then compute, one after the other.

Order, values and errors are the generator's own: items come out in order, an exception the
generator raises is raised here after the items before it, and stopping early (``break``, an error
in the caller, ``KeyboardInterrupt``) stops the worker after the item it is producing and closes
the generator there (its ``finally`` blocks run, files close). At most ``depth`` items wait.
"""

from __future__ import annotations

import queue
import threading
from typing import Generator, Iterator, TypeVar, Union

T = TypeVar("T")

_END = object()


def prefetched(items: Union[Generator[T, None, None], Iterator[T]], depth: int = 2) -> Iterator[T]:
    """``items``, produced ``depth`` ahead on a daemon thread; see the module docstring."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, object]) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, _END))
        except BaseException as err:  # noqa: BLE001 - handed to the caller, who raises it
            put((False, err))
        finally:
            close = getattr(items, "close", None)  # a generator: its finally blocks run here
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="conv_pipeline-decode-ahead", daemon=True)
    worker.start()
    try:
        while True:
            is_item, value = ready.get()
            if is_item:
                yield value  # type: ignore[misc]
            elif value is _END:
                return
            else:
                raise value  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()
