"""How many files the batch job puts in one padded batch, chosen from measurement while it runs
(when ``runtime.batch_size`` is unset; a set value is used as given).

Flow: source -> load -> stack -> execute -> sink -> **engines**. Unset, ``runtime.batch_size``
lets the local engine choose below ``AUTO_MAX``; which size below it pays depends on the model: a stack of
small convs gains from batching (fewer, larger calls), a spectral front-end executed with FFTs
gains nothing and pays for the padding, the masking and the larger tensors (``model=mel`` ran
1.26-1.35x faster with batches of 1-2 files than of 8; issue 13). So ``BatchSizer`` tries the
sizes ``1, 2, 4, ...`` up to ``AUTO_MAX`` (``TRIALS`` batches each, the first batch of
the job not counted: it pays one-time costs), then keeps the size whose batches cost the least
compute time per valid input sample (padding included in the cost, not in the samples), and
tries the sizes next to it again every ``RETRY_EVERY`` batches (the files' lengths drift, the
machine's load changes). Measured on the 500-file mixed corpus with ``model=mel`` (FFT-executed
front-end), the sizes cost within noise of each other (+-20% on a shared 2-core machine), so the
sizer's choice moves between them; a stack of small convs favours the largest. The choice
changes which files share a batch, so a file's features only to float32 rounding (a padded
batch equals single files: geometry.md).
"""

from __future__ import annotations

from typing import Optional

TRIALS = 4  # batches measured per size before choosing
RETRY_EVERY = 64  # batches between two re-measurements of the neighbouring sizes


def candidate_sizes(max_size: int) -> list[int]:
    """``1, 2, 4, ...`` up to ``max_size``, and ``max_size`` itself: ``(8) -> [1, 2, 4, 8]``."""
    sizes, s = [], 1
    while s < max_size:
        sizes.append(s)
        s *= 2
    return sizes + [max(1, max_size)]


AUTO_MAX = 8  # the largest batch an adaptive job tries (runtime.batch_size unset)


class BatchSizer:
    """The batch size to use next (``size``) and what batches of each size cost (``record``).

    ``record(size, seconds, samples)``: one batch of ``size`` files holding ``samples`` valid input
    samples took ``seconds`` of compute. ``max_size`` None or 0: adaptive up to ``AUTO_MAX``;
    else always ``max_size`` (the files' grouping, hence their features to the last bit, then
    equal the Ray engine's, which takes ``runtime.batch_size`` as given)."""

    def __init__(self, max_size: Optional[int]) -> None:
        self.sizes = candidate_sizes(max_size or AUTO_MAX) if not max_size else [max_size]
        self.costs: dict[int, list[tuple[float, int]]] = {s: [] for s in self.sizes}  # (seconds, samples)
        self.queue: list[int] = [s for s in self.sizes for _ in range(TRIALS)] if len(self.sizes) > 1 else []
        if self.queue:
            self.queue.insert(0, self.sizes[0])  # the job's first batch: warm-up, not counted
        self.warm = False
        self.best: Optional[int] = None if self.queue else self.sizes[0]
        self.batches = 0

    @property
    def size(self) -> int:
        if self.queue:
            return self.queue[0]
        assert self.best is not None
        return self.best

    def record(self, size: int, seconds: float, samples: int) -> None:
        self.batches += 1
        if self.queue and self.queue[0] == size:
            self.queue.pop(0)
        if not self.warm:
            self.warm = True
        elif samples > 0:
            costs = self.costs.setdefault(size, [])
            costs.append((seconds, samples))
            del costs[:-TRIALS]  # the latest measurements only
        if not self.queue and len(self.sizes) > 1:
            self.best = self.choose()
            if self.batches % RETRY_EVERY == 0:
                self.queue = self.neighbours(self.best)

    def cost(self, size: int) -> Optional[float]:
        """Compute seconds per valid sample of the latest batches of ``size`` (their sums: long
        files weigh more, as they do in the job's time); None when not measured."""
        c = self.costs.get(size)
        samples = sum(n for _, n in c) if c else 0
        return sum(t for t, _ in c) / samples if c and samples else None

    def choose(self) -> int:
        measured = {s: cost for s in self.sizes if (cost := self.cost(s)) is not None}
        if not measured:
            return self.sizes[-1]
        return min(measured, key=lambda s: measured[s])

    def neighbours(self, best: int) -> list[int]:
        i = self.sizes.index(best)
        return [s for s in self.sizes[max(0, i - 1) : i + 2] for _ in range(TRIALS)]
