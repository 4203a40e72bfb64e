"""Chunked (streaming) execution: the frames of the whole-file computation, in bounded memory.

The rule is the "Chunks (exact streaming)" section of ``docs/geometry.md``, applied to
every windowed operation between the file and the features (``Window``): each layer of a
``ConvStack``, and torchaudio's polyphase sinc resampler, which is itself one strided conv
(kernel ``2w + orig``, stride ``orig``, ``w`` zeros before and ``w + orig`` after, the output
truncated to ``ceil(new * frames / orig)``). Per operation a buffer of its input and a count of
samples still to skip are kept; zeros are added only at the true start and at the true end. With
``n`` samples buffered and a window of ``span`` samples moving by ``stride``,
``m = (n - span) // stride + 1`` outputs are complete: they are computed, ``m * stride`` samples
are consumed (more than ``n`` when ``stride > span``: the excess is skipped from later input).
Any chunk size works, including chunks shorter than the receptive field and sizes that are not a
multiple of the hop; the frame count always equals ``StackGeometry.output_length``.

How a layer is computed: activations are kept time-major (``(frames, channels)``) in buffers
that are allocated once and reused, and a conv with ``groups=1`` is one matrix product
(``addmm``) of the windows (a strided view of the buffer, copied once when windows overlap) with
the layer's own weight, written straight into the next layer's buffer; ``groups > 1`` uses
``F.conv1d`` with ``padding=0``. Norms and activations are the layer's own modules (elementwise
activations in place). Values equal the whole-file ``stack(x)`` up to float32 rounding (the sums
run in another order), frame for frame.

Norms over time (``TimeGroupNorm``: statistics over the whole file) take one more pass each:
the file is streamed up to that layer's conv to accumulate the per-channel mean and variance
(float64), then again with the statistics fixed (``TimeGroupNorm.normalize``). ``audio.normalize``
likewise takes a first pass for the file's mean and variance. Per-frame operations (activations,
``layer_norm`` over channels, the front-ends' magnitude/log) commute with chunking.

Public API:

* ``StreamingStack(stack, device, time_stats)``: ``push(x (C_in, n)) -> (C_out, m)``, ``flush()``.
* ``iter_features(blocks, stack, device)``: feature chunks ``(C_out, m)`` of a sequence of input
  blocks (re-iterable when the stack has a norm over time).
* ``AudioStream`` (``open_audio_stream(path, audio, chunk_seconds)``): a file as blocks at the
  target rate (decode block by block, channel policy, resampler, normalisation).
* ``extract_stream(stream, stack, device, writer)`` and
  ``extract_file_chunked(path, stack, audio, chunk_seconds, device, writer)``: one file through
  the stack; ``writer(chunks, shape, sample_rate)`` consumes the chunks (``file_writer`` writes a
  feature file incrementally, ``collect_features`` returns an array).
"""

from __future__ import annotations

from typing import Any

import torch


# ---------------------------------------------------------------- the rule
class Rows:
    """A time-major buffer ``buf[:n]`` (rows are samples, columns channels) that grows to the
    largest chunk seen and is then reused, so a long stream allocates nothing per chunk."""

    def __init__(self, rows: int, channels: int, dtype, device) -> None:
        self.channels = channels
        self.buf = torch.zeros(rows, channels, dtype=dtype, device=device)
        self.n = 0

    def tail(self, rows: int) -> torch.Tensor:
        """A writable ``(rows, channels)`` view just past the buffered rows."""
        need = self.n + rows
        if need > self.buf.shape[0]:
            grown = torch.empty(max(need, 2 * self.buf.shape[0]), self.channels, dtype=self.buf.dtype, device=self.buf.device)
            grown[: self.n] = self.buf[: self.n]
            self.buf = grown
        return self.buf[self.n : need]

    def commit(self, rows: int) -> None:
        self.n += rows


class Window(Rows):
    """The buffer-and-skip rule for one windowed operation, over a time-major buffer.

    ``buf[:n]`` holds the input not yet consumed. Input is appended with ``append``, or written
    by the previous stage straight into ``tail(rows)`` and then ``commit(rows)``-ed. ``ready()``
    outputs are complete; the caller computes them from ``buf[:n]`` and calls ``consume(m)``.
    """

    def __init__(self, span: int, stride: int, left: int, right: int, channels: int, dtype, device) -> None:
        super().__init__(max(64, span + left), channels, dtype, device)
        self.span, self.stride, self.right = span, stride, right
        self.n = left  # the zeros at the true start
        self.skip = 0

    def commit(self, rows: int) -> None:
        """``rows`` written into ``tail(rows)`` become input (after the samples still to skip)."""
        if self.skip:
            drop = min(self.skip, rows)
            self.skip -= drop
            if drop < rows:
                self.buf[self.n : self.n + rows - drop] = self.buf[self.n + drop : self.n + rows].clone()
            rows -= drop
        self.n += rows

    def append(self, x: torch.Tensor) -> None:
        """Append time-major input ``(rows, channels)``."""
        rows = int(x.shape[0])
        self.tail(rows).copy_(x)
        self.commit(rows)

    def finish(self) -> None:
        """The true end: the zeros after the last sample."""
        self.tail(self.right).zero_()
        self.commit(self.right)

    def ready(self) -> int:
        return (self.n - self.span) // self.stride + 1 if self.n >= self.span else 0

    def consume(self, m: int) -> None:
        used = m * self.stride
        if used >= self.n:
            self.skip += used - self.n
            self.n = 0
            return
        rest = self.n - used
        src = self.buf[used : self.n]
        self.buf[:rest] = src if used >= rest else src.clone()  # regions overlap when used < rest
        self.n = rest


class Moments:
    """Count, mean and sum of squared deviations, combined chunk by chunk (Chan et al.), float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Any = 0.0
        self.m2: Any = 0.0

    def add(self, x: torch.Tensor) -> None:
        """``x`` ``(rows, ...)``: statistics over the rows, per trailing position."""
        n = int(x.shape[0])
        if n == 0:
            return
        x = x.double()
        mean = x.mean(0)
        m2 = ((x - mean) ** 2).sum(0)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * n / total)
        self.count = total

    def mean_var(self) -> tuple[Any, Any]:
        return self.mean, self.m2 / max(self.count, 1)
