"""Stream buffers: the exact-chunking rule, shared by every windowed operation run on a stream.

Used by ``execute/chunked.py`` (one ``Window`` per conv layer, ``Moments``/``Covariance`` for norms
over time) and ``load/stream.py`` (the resampler's ``Window``, ``Moments`` for
``audio.normalize``). Buffers are time-major: rows are samples (frames), columns channels.

* ``Rows``: ``buf[:n]`` ``(rows, channels)``, grown to the largest chunk seen and then reused, so
  a long stream allocates nothing per chunk. A producer writes into ``tail(rows)`` and then
  ``commit(rows)``.
* ``Window(span, stride, left, right, ...)``: the input of one operation not yet consumed, plus
  a count of samples still to skip. It starts holding ``left`` zeros (the true start) and
  ``finish()`` appends ``right`` zeros (the true end); never at a chunk boundary. With ``n`` rows
  buffered, ``ready()`` is ``(n - span) // stride + 1`` complete outputs (0 when ``n < span``);
  after computing them the caller calls ``consume(m)``, which drops ``m * stride`` rows, and when
  that is more than ``n`` (``stride > span``) the excess is skipped from later input.
* ``Moments``: count, mean and variance merged chunk by chunk (Chan et al., float64).
* ``Covariance``: the same for the covariance matrix of row vectors (a conv's input windows:
  ``chunked.py``'s statistics pass derives a conv's output moments from them, the conv not run).

Why this gives exactly the whole-signal outputs, and how much a window keeps: "Chunks (exact
streaming)" in ``docs/geometry.md``.
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
        self.span, self.stride, self.left, self.right = span, stride, left, right
        self.n = left  # the zeros at the true start
        self.skip = 0

    def rewind(self, at_start: bool) -> None:
        """Empty, as constructed (the zeros at the true start) when ``at_start``, else with nothing buffered."""
        self.n, self.skip = (self.left if at_start else 0), 0
        self.buf[: self.n].zero_()

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
        var, mean = torch.var_mean(x.double(), dim=0, correction=0)
        m2 = var * n
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * n / total)
        self.count = total

    def mean_var(self) -> tuple[Any, Any]:
        return self.mean, self.m2 / max(self.count, 1)


class Covariance:
    """Count, mean ``(d,)`` and co-moment matrix ``(d, d)`` of row vectors, combined chunk by chunk
    (Chan et al., float64): ``Moments`` for vectors, with their cross terms."""

    def __init__(self, dims: int, device) -> None:
        self.count = 0
        self.mean = torch.zeros(dims, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(dims, dims, dtype=torch.float64, device=device)

    def add(self, x: torch.Tensor) -> None:
        """``x`` ``(rows, d)``: each row one vector."""
        n = int(x.shape[0])
        if n == 0:
            return
        x = x.double()
        mean = x.mean(dim=0)
        centred = x - mean
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += centred.t() @ centred + torch.outer(delta, delta) * (self.count * n / total)
        self.count = total

    def linear_mean_var(self, weight: torch.Tensor, bias: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-column mean and (population) variance of ``x @ weight + bias`` over every row added,
        ``weight`` ``(d, C)``: ``mean @ weight + bias`` and ``diag(weight^T Cov weight)``, float64."""
        w = weight.double()
        mean = self.mean @ w
        if bias is not None:
            mean = mean + bias.double()
        cov = self.m2 / max(self.count, 1)
        return mean, ((cov @ w) * w).sum(dim=0)
