"""Two pipeline stages on two threads: chunked execution that uses both cores without OpenMP.

Flow: source -> load -> stack -> **execute** -> sink -> engines. Used by ``execute/chunked.py``
(``iter_features``): a ``StreamingStack``'s layers are cut in two (``split_point``, by the
multiply-adds each layer spends per input sample); the first stage runs in a worker thread, the
second in the caller's, one chunk apart, both with torch on one intra-op thread. Torch ops
release the GIL, so the two stages compute at the same time; no OpenMP team is forked per
product (on a busy machine, forking and the spinning of idle OpenMP threads between ~600 small
products cost more CPU than they save, "Chunks" in ``docs/geometry.md``).

The stages see exactly the chunks, and run exactly the products, they would on one thread: the
first stage's output rows for input chunk ``k`` are handed, in order, to the second stage, which
appends them to its first layer's window as the one-thread executor would have written them. So
the frames, concatenated, are bit for bit those of the one-thread executor; only when they come
out changes (``push`` returns the frames of the chunk before, ``flush`` the rest).

Bounded: at most ``LAG + 1`` chunks are in flight between the threads. An exception in the
worker is raised again in the caller (the same exception object, its one-line message intact);
``close()`` stops and joins the worker (a daemon), and is called by ``iter_features`` in a
``finally``, so no thread outlives the run, also on errors and ``KeyboardInterrupt``.

Public API:

* ``layer_costs(layers)``: multiply-adds per input sample of each layer.
* ``split_point(costs, min_cost)``: where to cut a list of per-layer costs (``None``: do not).
* ``TwoStages(first, second, empty)``: ``first(x or None) -> rows (m, C_mid)`` (time-major; ``None``
  is the true end), ``second(rows, final) -> (C_out, m)``; ``push(x)``, ``flush()``, ``close()``.
"""

from __future__ import annotations

import math
import queue
import threading
from typing import Callable, Optional, Sequence

import torch

LAG = 1  # chunks the second stage runs behind the first
_END = object()  # the true end of the input (first stage: flush)
_STOP = object()  # close(): the worker returns


def split_point(costs: Sequence[float], min_cost: float) -> Optional[int]:
    """The cut ``j`` (layers ``[:j]`` first, ``[j:]`` second) that balances the two stages best,
    or ``None`` when there are fewer than two layers, the total is below ``min_cost`` (too little
    work to pay for a thread hand-over per chunk) or the best cut still leaves one stage with more
    than three quarters of the work (no real gain).

    ``split_point([1, 4, 2, 1], 0)`` -> 2 (5 vs 3).
    """
    total = float(sum(costs))
    if len(costs) < 2 or total <= 0 or total < min_cost:
        return None
    best, best_load = None, total
    done = 0.0
    for j in range(1, len(costs)):
        done += costs[j - 1]
        load = max(done, total - done)
        if load < best_load:
            best, best_load = j, load
    return best if best_load <= 0.75 * total else None


def layer_costs(layers: Sequence) -> list[float]:
    """Multiply-adds per input sample of each of a ``StreamingStack``'s layers (kernel ``k``,
    stride ``s``, ``macs_per_row``; an FFT layer, ``fft_win`` set: about ``k log2 k`` per frame)."""
    hop, costs = 1, []
    for layer in layers:
        hop *= layer.s
        per_row = layer.k * math.log2(max(layer.k, 2)) if layer.fft_win is not None else layer.macs_per_row
        costs.append(per_row / hop)
    return costs


class TwoStages:
    """``first`` in a worker thread, ``second`` in the caller's, one chunk apart, torch on one
    intra-op thread in both (restored by ``close``).

    Args:
        first: input chunk ``(C_in, n)`` (or ``None`` at the true end) -> the first stage's output
            rows ``(m, C_mid)``, a tensor the worker no longer touches.
        second: ``(rows, final)`` -> output frames ``(C_out, m)`` (``final``: the true end, after
            the last rows).
        empty: the result when no frames are complete, ``(C_out, 0)``.
    """

    def __init__(
        self,
        first: Callable[[Optional[torch.Tensor]], torch.Tensor],
        second: Callable[[torch.Tensor, bool], torch.Tensor],
        empty: torch.Tensor,
    ) -> None:
        self.first, self.second, self.empty = first, second, empty
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        self.pending = 0  # chunks handed to the worker whose rows the second stage has not taken
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)  # before the worker starts: it inherits one thread
        self.worker: Optional[threading.Thread] = threading.Thread(
            target=self._work, name="conv_pipeline-stage1", daemon=True
        )
        self.worker.start()

    def _work(self) -> None:
        torch.set_num_threads(1)
        with torch.inference_mode():
            while True:
                item = self.inbox.get()
                if item is _STOP:
                    return
                try:
                    rows = self.first(None if item is _END else item)
                except BaseException as exc:  # handed to the caller, raised there
                    self.outbox.put(exc)
                    return
                self.outbox.put(rows)

    def _take(self, final: bool) -> torch.Tensor:
        rows = self.outbox.get()
        self.pending -= 1
        if isinstance(rows, BaseException):
            self.pending = 0
            raise rows
        return self.second(rows, final)

    def _join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        parts = [p for p in parts if p.shape[-1]]
        if not parts:
            return self.empty
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def push(self, x: torch.Tensor) -> torch.Tensor:
        """Hand ``x`` to the first stage; the frames the second stage completes meanwhile."""
        if self.worker is None:
            raise RuntimeError("internal error: push after close")
        self.inbox.put(x)
        self.pending += 1
        parts = []
        while self.pending > LAG:
            parts.append(self._take(False))
        return self._join(parts)

    def flush(self) -> torch.Tensor:
        """The true end: the frames still in the pipeline, then the second stage's last ones."""
        self.inbox.put(_END)
        self.pending += 1
        parts = []
        while self.pending:
            parts.append(self._take(self.pending == 1))
        return self._join(parts)

    def close(self) -> None:
        """Stop and join the worker, restore torch's thread count; safe to call twice."""
        worker, self.worker = self.worker, None
        if worker is not None:
            while not self.inbox.empty():  # chunks not started are dropped (an error or an interrupt)
                self.inbox.get_nowait()
            self.inbox.put(_STOP)
            worker.join()
            torch.set_num_threads(self.threads)
