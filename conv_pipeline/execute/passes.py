"""Passes over one input: each must read the same number of samples.

Flow: source -> load -> stack -> **execute** -> sink -> engines. Used by ``execute/chunked.py``
(``iter_features``): a stack with a norm over time reads its input once per such norm and once
more for the features, and ``audio.normalize`` adds a statistics pass inside ``AudioStream``
(``load/stream.py``); ``PassCounts`` checks that all of them read the same count.
"""

from __future__ import annotations

from typing import Any

from conv_pipeline.errors import InputError


class PassCounts:
    """The samples each pass over the same input read, which must all be equal: a file read more
    than once (a statistics pass for a norm over time or for ``audio.normalize``, then the output
    pass) that changed in between (truncated, rewritten) would otherwise give features computed
    from statistics of other audio, recorded as fine. ``started()`` is called with each block
    (an ``AudioStream``'s ``frames_read`` then tells what its own statistics pass, or the previous
    pass, read), ``done(n)`` at the end of a pass; a difference is an ``InputError`` naming the
    file, raised before the last chunk reaches the writer (nothing is written)."""

    def __init__(self, blocks: Any) -> None:
        self.blocks = blocks
        self.path = getattr(blocks, "path", "the input")
        self.counts: list[int] = []
        self._seen_read = False

    def started(self) -> None:
        if self._seen_read:
            return
        self._seen_read = True
        read = getattr(self.blocks, "frames_read", None)  # a decode finished before this block
        if isinstance(read, int):
            self._check(read)

    def done(self, frames: int) -> None:
        self._check(int(frames))
        self._seen_read = False

    def _check(self, frames: int) -> None:
        if self.counts and frames != self.counts[0]:
            raise InputError(
                f"{self.path}: the file changed while it was being read (one pass over it read {self.counts[0]} "
                f"samples, another {frames}); nothing was written; run again once the file is complete"
            )
        self.counts.append(frames)
