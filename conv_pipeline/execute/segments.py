"""Segments on two threads: chunked execution that splits the file, not the stack.

Flow: source -> load -> stack -> **execute** -> sink -> engines. Used by ``execute/chunked.py``
(``StreamingStack.pipelined``): instead of cutting the layers into two pipeline stages
(``pipeline.py``, as balanced as the layers' costs allow: the wav2vec2-shaped stack's second
layer alone is half the work), the output frames are cut into segments of ``S`` frames, and the
two threads compute segments, each from its own input range, with all the layers, one torch
thread each. Both cores do the same work whatever the layers' costs.

Neither thread waits for the other: the worker always holds ``WORKER_QUEUE`` segments (one it
computes, one waiting), the caller computes each segment that comes while it is full, and
``push`` returns the frames of every computed segment that no segment still with the worker
precedes; the others are returned by a later ``push`` or ``flush``, in order (at most ``MAX_HELD``
held). When the caller waited for the worker's segment before going on, it waited 5-9% of a
180 s wav2vec2-shaped run (AMD EPYC, 2 vCPUs; BENCHMARKS.md). At the true end, ``flush`` queues
the last segment behind the worker's and computes, on the caller, every queued segment the worker
has not started, so the two threads finish together (the caller no longer waits for the worker's
two before computing the last one alone). A segment runs the same on either thread
(``StreamingStack.segment`` rewinds the windows), and the second thread's ``StreamingStack``
shares the first one's packed weights (``like``), so it costs no second packing before the start.

Segment ``[f, f + S)`` of the last layer needs, walking the layers backwards (``docs/geometry.md``),
outputs ``[a_i, b_i)`` of layer ``i`` and so input samples ``[a_0, b_0)``:

    a_{i-1} = a_i * s_i - p_i        b_{i-1} = (b_i - 1) * s_i - p_i + e_i

A ``StreamingStack`` started with empty windows (no left padding: ``StreamingStack.segment``,
``Window.rewind``) and fed exactly
``[a_0, b_0)`` computes exactly outputs ``[a_i, b_i)`` of every layer (``a_{i-1} = a_i * s_i - p_i``
keeps every window on the whole file's grid), so the segment's frames are the whole file's. The
first segment starts from the true start (the windows' left zeros), the last one ends at the true
end (``flush``: the right zeros); a segment other than the first needs ``a_i >= 0`` at every layer
(``SegmentPlan`` makes the first one longer when the padding asks for it). Neighbouring segments
share ``b_i - a_i`` minus ``S * J / J_i`` rows of each layer: that context is computed twice, which
``SegmentPlan.overhead`` measures; ``StreamingStack.pipelined`` uses segments only when it is small.

The values equal the one-thread executor's up to float32 rounding (the products run on other row
counts), not bit for bit; ``pipeline.py``'s two stages are bit for bit.

Public API:

* ``SegmentPlan(shapes, frames)``: the input range of each segment, ``shapes`` ``(k, s, p, d)`` per layer.
* ``Segments(streamers, shapes, min_frames, empty)``: ``push(x (C_in, n)) -> (C_out, m)`` (the frames
  ready so far, in order), ``flush()`` (the rest), ``close()``; segments of the first block's
  frames, at least ``min_frames``.
"""

from __future__ import annotations

import math
import queue
import threading
from typing import Any, Iterator, Optional, Sequence

import torch

_STOP = object()
WORKER_QUEUE = 2  # segments with the worker: one it computes, one waiting, so it never idles
MAX_HELD = 8  # segments computed but not yet returned (they wait for an earlier one of the worker's)


class SegmentPlan:
    """Where segment ``j`` of ``frames`` output frames reads its input, for layers ``(k, s, p, d)``."""

    def __init__(self, shapes: Sequence[tuple[int, int, int, int]], frames: int) -> None:
        self.shapes = list(shapes)
        self.frames = max(1, int(frames))
        first = self.frames
        while min(self.ranges(first, first + self.frames)[0]) < 0:  # every layer's a_i >= 0 after the first
            first += self.frames
        self.first = first  # frames of the first segment

    def ranges(self, start: int, stop: int) -> tuple[list[int], list[int]]:
        """``([a_0, ..., a_n], [b_0, ..., b_n])`` for last-layer frames ``[start, stop)``."""
        a, b = [start], [stop]
        for k, s, p, d in reversed(self.shapes):
            a.append(a[-1] * s - p)
            b.append((b[-1] - 1) * s - p + d * (k - 1) + 1)
        return a[::-1], b[::-1]

    def output_length(self, samples: int) -> int:
        """Last-layer frames of ``samples`` input samples (``geometry.md``, "Through the stack")."""
        n = samples
        for k, s, p, d in self.shapes:
            span = d * (k - 1) + 1
            n = (n + 2 * p - span) // s + 1 if n + 2 * p >= span and n > 0 else 0
        return n

    def start(self, j: int) -> int:
        """The first last-layer frame of segment ``j``."""
        return 0 if j == 0 else self.first + (j - 1) * self.frames

    def overhead(self) -> float:
        """Rows computed twice per segment, as a fraction of a segment's own rows (all layers)."""
        f = self.first
        a, b = self.ranges(f, f + self.frames)
        a2, _ = self.ranges(f + self.frames, f + 2 * self.frames)
        own = sum(max(1, x2 - x) for x, x2 in zip(a[1:], a2[1:]))
        return sum(y - x for x, y in zip(a[1:], b[1:])) / own - 1.0


class Segments:
    """Segments on a worker thread and the caller's, returned in order; see the module docstring.

    Args:
        streamers: two ``StreamingStack``s of the same stack (one per thread), fresh.
        shapes: ``(k, s, p, d)`` of each layer.
        min_frames: the fewest output frames in a segment; a segment is as long as the first block
            (in output frames), or this.
        empty: the result when no frames are complete, ``(C_out, 0)``.
    """

    def __init__(self, streamers: Sequence[Any], shapes: Sequence[tuple[int, int, int, int]], min_frames: int,
                 empty: torch.Tensor) -> None:
        self.streamers, self.shapes, self.min_frames, self.empty = list(streamers), list(shapes), min_frames, empty
        self.plan: Optional[SegmentPlan] = None
        first = self.streamers[0]
        self.inp = torch.empty(0, first.in_channels, dtype=first.dtype, device=first.device)  # (n, C_in)
        self.base = 0  # the input sample of inp's first row
        self.frames_in = 0
        self.next = 0  # the next segment
        self.inbox: queue.Queue = queue.Queue()  # (j, rows, first, last), taken by the worker (and by flush)
        self.outbox: queue.Queue = queue.Queue()  # (j, frames) or an exception, from the worker
        self.sent = 0  # segments given to the worker (running or waiting), not yet collected
        self.results: dict[int, Optional[torch.Tensor]] = {}  # computed segments not yet returned; None: the worker's
        self.returned = 0  # the next segment to return
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)
        self.worker: Optional[threading.Thread] = threading.Thread(
            target=self._work, name="conv_pipeline-segments", daemon=True
        )
        self.worker.start()

    def _work(self) -> None:
        torch.set_num_threads(1)
        while True:
            item = self.inbox.get()
            if item is _STOP:
                return
            j, *args = item
            try:
                y = self.streamers[1].segment(*args)
            except BaseException as exc:  # handed to the caller, raised there
                self.outbox.put(exc)
                return
            self.outbox.put((j, y))

    def _send(self, j: int, rows: torch.Tensor, first: bool, last: bool) -> None:
        self.inbox.put((j, rows, first, last))
        self.sent += 1
        self.results[j] = None

    def _collect(self, wait: bool) -> None:
        """Put the worker's finished segments in their places: those done (all of them, ``wait``)."""
        while self.sent and (wait or not self.outbox.empty()):
            item = self.outbox.get()
            if isinstance(item, BaseException):
                raise item
            self.sent -= 1
            j, y = item
            self.results[j] = y

    def _not_started(self) -> Iterator[tuple]:
        """Take, one at a time, the segments queued for the worker that it has not started."""
        while True:
            try:
                yield self.inbox.get_nowait()
            except queue.Empty:
                return

    def _take_back(self) -> None:
        """Compute here the segments the worker has not started (the end of the file: both threads
        finish together, not the worker alone)."""
        for j, *args in self._not_started():
            self.sent -= 1
            self.results[j] = self.streamers[0].segment(*args)

    def _ready(self) -> list[torch.Tensor]:
        """Remove and return the computed segments that no unfinished one precedes."""
        done = []
        while self.results.get(self.returned) is not None:
            done.append(self.results.pop(self.returned))
            self.returned += 1
        return done

    def _join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        parts = [p for p in parts if p.shape[-1]]
        if not parts:
            return self.empty
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _input(self, j: int, stop: Optional[int]) -> tuple[torch.Tensor, bool]:
        """Segment ``j``'s input rows (a copy; to the end of the input when ``stop`` is None) and
        whether it starts at the true start; drops the rows no later segment reads."""
        a0 = self.plan.ranges(self.plan.start(j), self.plan.start(j + 1))[0][0]
        lo = 0 if j == 0 else a0 - self.base
        hi = self.inp.shape[0] if stop is None else stop - self.base
        rows = self.inp[lo:hi].clone()
        later = self.plan.ranges(self.plan.start(j + 1), self.plan.start(j + 2))[0][0]
        keep = max(0, min(later - self.base, self.inp.shape[0]))
        self.inp, self.base = self.inp[keep:], self.base + keep
        return rows, j == 0

    def push(self, x: torch.Tensor) -> torch.Tensor:
        """Input ``(C_in, n)`` -> the frames of the segments it completes, ``(C_out, m)``."""
        if self.worker is None:
            raise RuntimeError("internal error: push after close")
        self.streamers[0].check(x)
        self.frames_in += int(x.shape[1])
        if self.plan is None:
            hop = math.prod(s for _, s, _, _ in self.shapes)
            self.plan = SegmentPlan(self.shapes, max(self.min_frames, int(x.shape[1]) // hop))
        self.inp = torch.cat([self.inp, x.to(self.inp.device, self.inp.dtype).t()])
        parts: list[torch.Tensor] = []
        while True:
            j = self.next
            b0 = self.plan.ranges(self.plan.start(j), self.plan.start(j + 1))[1][0]
            if b0 > self.base + self.inp.shape[0]:
                break
            rows, first = self._input(j, b0)
            self.next += 1
            self._collect(False)
            if self.sent < WORKER_QUEUE:  # the worker always has the next one waiting
                self._send(j, rows, first, False)
            else:  # it is busy: this one runs here
                self.results[j] = self.streamers[0].segment(rows, first, False)
            if len(self.results) > MAX_HELD:  # bounded: wait for the worker's before going on
                self._collect(True)
                parts += self._ready()
        self._collect(False)
        return self._join(parts + self._ready())

    def flush(self) -> torch.Tensor:
        """The true end: the rest of the input as the last segment, queued after the worker's; this
        thread takes every queued segment the worker has not started, then waits for the worker's."""
        if self.worker is None:
            raise RuntimeError("internal error: flush after close")
        self.streamers[0].frames_in = self.frames_in
        if self.plan is None:
            self.plan = SegmentPlan(self.shapes, self.min_frames)
        if self.plan.start(self.next) < self.plan.output_length(self.frames_in):  # frames left to compute
            rows, first = self._input(self.next, None)
            self._send(self.next, rows, first, True)
            self.next += 1
        self._take_back()
        self._collect(True)
        return self._join(self._ready())

    def close(self) -> None:
        """Stop and join the worker (the segments it has not started are dropped: after an error or
        an early stop nobody wants them), restore torch's thread count; safe to call twice."""
        worker, self.worker = self.worker, None
        if worker is not None:
            for _ in self._not_started():
                pass
            self.inbox.put(_STOP)
            worker.join()
            torch.set_num_threads(self.threads)
