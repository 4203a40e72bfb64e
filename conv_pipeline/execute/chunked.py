"""Chunked (streaming) execution: the frames of the whole-file computation, in bounded memory.

Flow: source -> load -> stack -> **execute** -> sink -> engines. Input: an ``AudioStream``
(``load/stream.py``: float32 ``(C_in, n)`` blocks at the target rate) or any blocks, and a
``ConvStack``; output: feature chunks ``(C_out, m)`` that, concatenated, are the whole-file
``stack(x)`` (the same ``StackGeometry.output_length`` frames; values equal up to float32
rounding, the sums running in another order), handed to a writer (``sink/writer.py``) as they
come.

The rule, applied to each layer with its own span ``d * (k - 1) + 1``, stride and padding
(``windows.Window``): the layer keeps a buffer of its input not yet consumed and a count of
samples still to skip; its zero padding is added only at the true start and at the true end,
never at a chunk boundary. With ``n`` samples buffered and a window of ``span`` samples moving by
``stride``, ``m = (n - span) // stride + 1`` outputs are complete: they are computed and passed
to the next layer, and ``m * stride`` samples are consumed (more than ``n`` when
``stride > span``: the excess is skipped from later input). Any chunk size works, including
chunks shorter than the receptive field and sizes that are not a multiple of the hop; the frame
count always equals ``StackGeometry.output_length``. Why, and how much context each layer keeps:
"Chunks (exact streaming)" in ``docs/geometry.md``. The resampler before the stack streams with
the same rule (``load/stream.py``).

How a layer is computed: activations are kept time-major (``(frames, channels)``) in buffers
that are allocated once and reused, and a conv with ``groups=1`` is one matrix product
(``execute/matmul.py``: oneDNN on the CPU) of the windows (a strided view of the buffer, copied
once when windows overlap) with the layer's own weight, written into the next layer's buffer;
windows that overlap by fewer taps than the stride (``(3, 2)``) go three at a time with the overlaps
shared (``TripleProduct``, 7/9 of the multiply-adds); ``groups > 1`` uses
``F.conv1d`` with ``padding=0``. A windowed-DFT conv (the stft/mel front-ends) is an FFT of the
strided frames, its ``PairMagnitude`` computed from the complex spectra
(``stack/spectral.py``); a filterbank 1x1 conv (the mel matrix) one product per band of its input
channels (``stack/bands.py``, on the CPU). Norms and activations are the layer's own modules; an activation with
an in-place form in ``stack/layer.py``'s ``ACTIVATION_TABLE`` is applied in place.

Few, large products: ``iter_features`` runs a layer only once ``MIN_ROWS`` of its outputs are
complete (``flush`` runs the rest); a product under ``SERIAL_MACS`` multiply-adds runs on one torch
thread (``spectral.one_thread``: forking idle, spinning OpenMP threads costs more). On the CPU with
>= 2 threads, a stack of ``PIPELINE_MACS`` per input sample runs on two threads, one torch thread
each: its output pass as segments of the file shared by the threads (``execute/segments.py``: each thread runs
every layer on its own segment, so the work is shared evenly whatever the layers' costs) when the
context they recompute is under ``SEGMENT_OVERHEAD``, else as two pipeline stages
(``execute/pipeline.py``). Which frames come out does not change, only when.

Norms over time (``TimeGroupNorm``: statistics over the whole file) take one more pass each:
the file is streamed up to that layer's conv to accumulate the per-channel mean and variance
(float64, ``windows.Moments``; for a ``groups=1`` conv with at most ``GRAM_DIMS`` values per window
and no FFT, the conv is not run: the mean and covariance of its input windows are accumulated,
``windows.Covariance``, and the output's follow, ``mean @ W + b`` and ``diag(W^T Cov W)``), then
again with the statistics fixed (as a per-channel ``x * scale + shift``, in place); "Norms that
pool over time" in ``docs/geometry.md``. Every pass over a file (these, and ``audio.normalize``'s
statistics pass inside ``AudioStream``) must read the same number of samples (``PassCounts``): a
file that changed in between is refused, nothing written. Per-frame operations (activations,
``layer_norm`` over channels, the front-ends' magnitude/log) commute with chunking. The classic
front-ends' norms over time (``stack/classic.py``: ``PeakFloor``, whose statistic is the peak, and
``Cmvn``) apply their statistics themselves (``streaming``); an ``EdgeLayer`` (reflect/replicate
padding at the true ends) streams through an ``EdgeWindow``.

Public API:

* ``StreamingStack(stack, device, time_stats)``: ``push(x (C_in, n)) -> (C_out, m)``, ``flush()``.
* ``iter_features(blocks, stack, device)``: feature chunks ``(C_out, m)`` of a sequence of input
  blocks (re-iterable when the stack has a norm over time).

One file through it, handed to a writer (``extract_stream``, ``extract_file_chunked``):
``execute/stream_file.py``.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, Union

import torch
from torch import nn

from conv_pipeline.errors import InputError
from conv_pipeline.execute.passes import PassCounts
from conv_pipeline.execute.pipeline import TwoStages, layer_costs, split_point
from conv_pipeline.execute.segments import SegmentPlan, Segments
from conv_pipeline.execute.stream_layer import Output, Stats, StreamLayer
from conv_pipeline.stack.stack import ConvStack
from conv_pipeline.windows import Rows, Window

PIPELINE_MACS = 20000  # iter_features pipelines a stack of at least this many multiply-adds per input sample
MIN_SEGMENT_FRAMES = 64  # Segments: at least this many output frames per segment
SEGMENT_OVERHEAD = 0.05  # Segments only when they compute at most this fraction of rows twice
MIN_ROWS = 256  # iter_features: a layer waits for this many complete outputs (few, large products)


def _peak(norm: Optional[nn.Module]) -> bool:
    """True for a norm over time whose statistic is the peak (``stack/classic.py: PeakFloor``)."""
    return getattr(norm, "statistic", None) == "peak"


def _time_norm_layers(stack: ConvStack) -> list[int]:
    return [i for i, layer in enumerate(stack.layers) if getattr(layer, "mixes_time", False)]


# ---------------------------------------------------------------- the stack
class StreamingStack:
    """A ``ConvStack`` run chunk by chunk: ``push`` input blocks, then ``flush`` at the true end.

    The frames pushed out, concatenated, equal ``stack(x)`` on the whole input: same count
    (``stack.geometry.output_length``), same values up to float32 rounding. Uses the stack's own
    weights (read when constructed) and norm/activation modules.

    Args:
        stack: the stack (its device and dtype are used).
        time_stats: ``{layer_index: (mean, var)}`` (per channel, over the whole input) for every
            layer whose norm pools over time; ``iter_features`` computes them in extra passes.
        collect: statistics pass for layer ``collect``: run the layers before it and its conv (or
            only gather its input windows' moments, ``StreamLayer.gram``), and keep the per-channel
            moments of that conv's output (``collected()``) instead of features.
        min_rows: a layer runs once at least this many of its outputs are complete (``flush`` runs
            the rest). 1: every frame is pushed out as soon as its window is read. More: late
            layers, which get few frames per chunk, run as fewer, larger products (same frames).
        like: a ``StreamingStack`` of the same stack, device and ``time_stats`` (and ``collect`` None)
            whose weights, packed once, this one shares read-only (``Segments``' second thread).
    """

    def __init__(
        self,
        stack: ConvStack,
        device: Optional[torch.device] = None,
        time_stats: Optional[dict[int, tuple[torch.Tensor, torch.Tensor]]] = None,
        collect: Optional[int] = None,
        min_rows: int = 1,
        like: Optional["StreamingStack"] = None,
    ) -> None:
        param = next(stack.parameters())
        self.min_rows = min_rows
        self.device = torch.device(device) if device is not None else param.device
        self.dtype = param.dtype
        self.in_channels, self.out_channels = stack.in_channels, stack.out_channels
        if len(stack.layers) != len(stack.geometry.layers):
            raise RuntimeError("internal error: the stack's layers and its geometry disagree")
        stats = time_stats or {}
        last = len(stack.layers) if collect is None else collect + 1
        self.layers = [StreamLayer(layer, stats.get(i), self.dtype, self.device, conv_only=i == collect,
                                   like=like.layers[i] if like is not None else None)
                       for i, layer in enumerate(stack.layers[:last])]
        self.collect = collect
        self.peak_stat = collect is not None and _peak(stack.layers[collect].norm)
        sink_channels = self.out_channels if collect is None else stack.layers[collect].conv.out_channels
        self.sink = (Output if collect is None else Stats)(sink_channels, self.dtype, self.device)
        self.frames_in = self.frames_out = 0
        self.stack, self.time_stats = stack, time_stats  # a second streamer for Segments

    def _sinks(self) -> list[Rows]:
        return [layer.window for layer in self.layers[1:]] + [self.sink]

    def _take(self) -> torch.Tensor:
        if self.collect is not None:
            return self.sink.buf[:0].t()
        y = self.sink.take()
        self.frames_out += int(y.shape[-1])
        return y

    def check(self, x: torch.Tensor) -> None:
        """Refuse input that is not ``(C_in, n)``."""
        if x.dim() != 2 or x.shape[0] != self.in_channels:
            raise InputError(f"input has shape {tuple(x.shape)}, the stack expects ({self.in_channels}, frames)")

    def _feed(self, x: torch.Tensor) -> None:
        self.check(x)
        self.frames_in += int(x.shape[1])
        self.layers[0].window.append(x.to(self.device, self.dtype).t())  # (C, n) -> (n, C)

    def _run(self, pairs: Iterable[tuple[StreamLayer, Rows]], final: bool) -> None:
        for layer, sink in pairs:
            if final:  # the true end: every remaining output
                layer.window.finish()
            layer.run(sink, 1 if final else self.min_rows)

    @torch.inference_mode()
    def push(self, x: torch.Tensor) -> torch.Tensor:
        """Input ``(C_in, n)`` -> the output frames it completes, ``(C_out, m)`` (``m`` may be 0)."""
        self._feed(x)
        self._run(zip(self.layers, self._sinks()), False)
        return self._take()

    @torch.inference_mode()
    def flush(self) -> torch.Tensor:
        """The true end of the input: the remaining frames ``(C_out, m)``."""
        self._run(zip(self.layers, self._sinks()), True)
        return self._take()

    def close(self) -> None:  # nothing to release (``TwoStages.close`` stops its worker)
        return

    def pipelined(self, choice: Optional[bool] = None) -> "Union[StreamingStack, TwoStages, Segments]":
        """``push``/``flush`` on two threads, or ``self``. ``choice`` True: two pipeline stages
        (``execute/pipeline.py``, bit for bit the one-thread frames). None: when it pays (CPU, >= 2
        torch threads, ``PIPELINE_MACS`` per input sample): segments of the file shared by two threads
        (``execute/segments.py``) where their shared context is small and this is the output pass,
        else two stages where the cut is balanced. False: ``self``."""
        if choice is False or (choice is None and (self.device.type != "cpu" or torch.get_num_threads() < 2)):
            return self
        costs = layer_costs(self.layers)
        if choice is None and sum(costs) >= PIPELINE_MACS and self.segmentable():
            twin = StreamingStack(self.stack, self.device, self.time_stats, like=self)  # the same packed weights
            return Segments([self, twin], self.shapes(),
                            MIN_SEGMENT_FRAMES, self.sink.buf[:0].t())
        j = split_point(costs, 0 if choice else PIPELINE_MACS)
        return self if j is None else self.split(j)

    def shapes(self) -> list[tuple[int, int, int, int]]:
        """``(k, s, p, d)`` of each layer."""
        return [(layer.k, layer.s, layer.p, layer.d) for layer in self.layers]

    def segmentable(self) -> bool:
        """Segments give the same frames (an output pass, zero padding only with ``2p <= d(k-1)+1``
        at every layer: an ``EdgeWindow``'s reflection at the true ends is not restartable) and
        recompute little (``SEGMENT_OVERHEAD``)."""
        if self.collect is not None or any(type(layer.window) is not Window for layer in self.layers):
            return False
        if any(2 * p > d * (k - 1) + 1 for k, _, p, d in self.shapes()):
            return False
        return SegmentPlan(self.shapes(), MIN_SEGMENT_FRAMES).overhead() <= SEGMENT_OVERHEAD

    @torch.inference_mode()
    def segment(self, rows: torch.Tensor, first: bool, last: bool) -> torch.Tensor:
        """One segment (``execute/segments.py``): time-major input ``rows`` ``(n, C_in)`` -> every
        output frame they complete ``(C_out, m)``, whatever this streamer computed before. ``first``:
        the windows start as constructed (the true start, its zero padding); else empty (no left
        padding). ``last``: the true end follows."""
        for layer in self.layers:
            layer.window.rewind(first)
        self.layers[0].window.append(rows)
        for layer, sink in zip(self.layers, self._sinks()):
            if last:
                layer.window.finish()
            layer.run(sink, 1)
        return self.sink.take()

    def split(self, j: int) -> TwoStages:
        """Layers ``[:j]`` in a worker thread, ``[j:]`` in the caller's: the same products on the
        same rows as ``push``/``flush`` here (the frames bit for bit equal), one chunk later."""
        mid = Rows(64, self.layers[j].c_in, self.dtype, self.device)  # the first stage's output rows
        sinks = self._sinks()
        front = list(zip(self.layers[:j], sinks[: j - 1] + [mid]))
        back = list(zip(self.layers[j:], sinks[j:]))

        def first(x: Optional[torch.Tensor]) -> torch.Tensor:
            if x is not None:
                self._feed(x)
            self._run(front, x is None)
            rows = mid.buf[: mid.n].clone()
            mid.n = 0
            return rows

        @torch.inference_mode()
        def second(rows: torch.Tensor, final: bool) -> torch.Tensor:
            self.layers[j].window.append(rows)
            self._run(back, final)
            return self._take()

        return TwoStages(first, second, self.sink.buf[:0].t())

    def collected(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(mean, var)`` (float64) of layer ``collect``'s conv output, after ``flush``."""
        last = self.layers[-1]
        if last.gram is not None:  # y = cols @ wt + b: mean(cols) @ wt + b, diag(wt^T Cov(cols) wt)
            return last.gram.linear_mean_var(last.wt, last.bias)
        if self.peak_stat:  # (peak, peak): a peak floor's one statistic
            peak = self.sink.peak if self.sink.peak is not None else torch.zeros((), dtype=torch.float64)
            return peak, peak
        return self.sink.moments.mean_var()


def iter_features(
    blocks: Iterable[torch.Tensor],
    stack: ConvStack,
    device: Optional[torch.device] = None,
    pipeline: Optional[bool] = None,
) -> Iterator[torch.Tensor]:
    """Feature chunks ``(C_out, m)`` (``m >= 1``, on ``device``) for input blocks ``(C_in, n)``.

    ``pipeline``: run the layers as two stages on two threads (``StreamingStack.pipelined``;
    ``None``: when it pays). Same frames, bit for bit; each comes out one input block later.

    Concatenated over time they equal ``stack(whole_input[None])[0]`` whatever the block sizes.
    A stack with norms over time iterates ``blocks`` once more per such norm (a list, or an
    ``AudioStream``, which decodes again; a one-shot iterator is refused).
    """
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    layers = _time_norm_layers(stack)
    if layers and iter(blocks) is blocks:
        raise TypeError("a stack with a norm over time needs re-iterable blocks (a list or an AudioStream)")
    passes = PassCounts(blocks)
    for j in layers:  # one statistics pass per norm over time, earlier ones fixed
        pass_j = StreamingStack(stack, device, stats, collect=j, min_rows=MIN_ROWS)
        for _ in _stream(pass_j, blocks, passes, pipeline):
            pass
        stats[j] = pass_j.collected()
    yield from _stream(StreamingStack(stack, device, stats, min_rows=MIN_ROWS), blocks, passes, pipeline)


def _stream(streamer: StreamingStack, blocks: Iterable[torch.Tensor], passes: PassCounts, pipeline: Optional[bool]):
    """One pass of ``blocks`` through ``streamer`` (pipelined when it pays): its non-empty chunks."""
    run = streamer.pipelined(pipeline)
    try:
        for block in blocks:
            passes.started()
            y = run.push(block)
            if y.shape[-1]:
                yield y
        y = run.flush()
    finally:
        run.close()  # the worker thread, if any, is joined here: also on errors and when the caller stops
    passes.done(streamer.frames_in)  # before the last chunk: a writer never completes a changed file
    if y.shape[-1]:
        yield y
