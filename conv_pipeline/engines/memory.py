"""The batch job's memory held flat in the number of files: the C allocator kept from hoarding
what the job has freed.

Flow: source -> load -> stack -> execute -> sink -> **engines**. Every file the local engine
processes allocates and frees buffers of its own size (the decoded ``(channels, samples)``
waveform, the resampled copy, the padded batch, the features); nothing of them stays alive, but
glibc's malloc keeps freed blocks in its heaps (one arena per thread that allocates: the decode
threads, the writer thread) instead of handing them back, so a job's peak RSS grew with its
number of files (576 MB for 100 files, 702 MB for 1000; issue 13). Two remedies, both glibc
only and a no-op elsewhere (musl, macOS, Windows):

* ``bound_arenas(n)``: ``mallopt(M_ARENA_MAX, n)`` before the worker threads start, so the
  threads share ``n`` heaps rather than one each;
* ``Trimmer``: ``malloc_trim(0)`` (free pages of every arena returned to the system) at most
  every ``every_s`` seconds, called by the engine between batches.

And one for the time the job's threads spend stopped: ``frozen_heap()``, a block in which the
objects alive when it starts (modules, torch's registries, the stack) are left out of Python's
cyclic collections (``gc.freeze``): with torch imported, each full collection walked them for
about 43 ms with every thread of the job waiting.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import time
from typing import Any, Iterator, Optional

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2  # heaps the job's threads share (the main thread's own + one for the workers)
TRIM_EVERY_S = 1.0  # the shortest interval between two trims ...
TRIM_SHARE = 0.01  # ... lengthened so that trimming (it walks every heap: 5-30 ms) takes at most this share


@functools.lru_cache(maxsize=1)
def libc() -> Optional[Any]:
    """The C library when it is glibc (it has ``malloc_trim`` and ``mallopt``), else None."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        lib.malloc_trim.argtypes = [ctypes.c_size_t]
        lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return lib
    except (OSError, AttributeError):
        return None


def trim_memory() -> bool:
    """Return the allocator's free pages to the system (``malloc_trim(0)``); False where there is
    no glibc."""
    lib = libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True


def bound_arenas(n: int = ARENAS) -> bool:
    """At most ``n`` malloc arenas for the threads started from now on; False where there is no glibc."""
    lib = libc()
    return lib is not None and bool(lib.mallopt(M_ARENA_MAX, int(n)))


class Trimmer:
    """``maybe()`` trims (``trim_memory``) when ``TRIM_EVERY_S`` seconds have passed since the last
    trim, and at least ``1 / TRIM_SHARE`` times as long as the last trim took."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.wait_s = 0.0
        self.count = 0

    def maybe(self) -> None:
        if time.monotonic() - self.last >= max(TRIM_EVERY_S, self.wait_s):
            self.now()

    def now(self) -> None:
        t0 = time.monotonic()
        trim_memory()  # looked up at call time (tests count the calls)
        self.count += 1
        self.last = time.monotonic()
        self.wait_s = (self.last - t0) / TRIM_SHARE


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Inside the block, the objects alive at its start are not traversed by the cyclic collector
    (``gc.freeze``), and the collector runs (an entry point turns it off while it imports:
    ``cli/common.py``); after it, both are as they were, so a caller's process is left as it was."""
    enabled = gc.isenabled()
    gc.freeze()
    gc.enable()
    try:
        yield
    finally:
        gc.unfreeze()
        if not enabled:
            gc.disable()
