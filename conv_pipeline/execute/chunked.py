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
(``stack/spectral.py``). Norms and activations are the layer's own modules; an activation with
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
import torch.nn.functional as F
from torch import nn

from conv_pipeline.errors import ConfigError, InputError
from conv_pipeline.execute.matmul import Product, TripleProduct
from conv_pipeline.execute.passes import PassCounts
from conv_pipeline.execute.pipeline import TwoStages, layer_costs, split_point
from conv_pipeline.execute.segments import SegmentPlan, Segments
from conv_pipeline.stack.classic import EdgeWindow
from conv_pipeline.stack.layer import ChannelLayerNorm, ConvLayer, activation_of
from conv_pipeline.stack.spectral import frame_spectra, one_thread, split_magnitude
from conv_pipeline.stack.stack import ConvStack
from conv_pipeline.windows import Covariance, Moments, Rows, Window

SERIAL_MACS = 1 << 23  # a layer's chunk of fewer multiply-adds than this runs on one thread
PIPELINE_MACS = 20000  # iter_features pipelines a stack of at least this many multiply-adds per input sample
MIN_SEGMENT_FRAMES = 64  # Segments: at least this many output frames per segment
SEGMENT_OVERHEAD = 0.05  # Segments only when they compute at most this fraction of rows twice
MIN_ROWS = 256  # iter_features: a layer waits for this many complete outputs (few, large products)
GRAM_DIMS = 512  # a statistics pass keeps the windows' (k * C_in)^2 moments, not the conv's output, up to this k * C_in


class _Output(Rows):
    """The last stage's sink: collects ``(rows, channels)`` and hands them out as ``(channels, rows)``."""

    def __init__(self, channels: int, dtype, device) -> None:
        super().__init__(64, channels, dtype, device)

    def take(self) -> torch.Tensor:
        # (n, C) -> (C, n), a copy: .contiguous() would return a view of the buffer when n == 1
        out = self.buf[: self.n].t().clone(memory_format=torch.contiguous_format)
        self.n = 0
        return out


class _Stats(_Output):
    """A sink that keeps only per-channel statistics of what it receives (a statistics pass)."""

    def __init__(self, channels: int, dtype, device) -> None:
        super().__init__(channels, dtype, device)
        self.moments = Moments()
        self.peak: Optional[torch.Tensor] = None

    def commit(self, rows: int) -> None:
        self.moments.add(self.buf[:rows])  # nothing is kept: n stays 0
        if rows:  # and the largest value (a peak floor's statistic)
            peak = self.buf[:rows].amax().double()
            self.peak = peak if self.peak is None else torch.maximum(self.peak, peak)


# ---------------------------------------------------------------- one layer
def _per_frame(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Apply a per-frame module written for ``(batch, channels, frames)`` to time-major ``y``."""
    return module(y.t()[None])[0].t()  # (m, C) -> (1, C, m) -> (1, C', m) -> (m, C')


class _Layer:
    """One ``ConvLayer`` on a stream: its window, its conv as a matrix product, its norm and activation."""

    def __init__(
        self,
        layer: ConvLayer,
        stats: Optional[tuple[torch.Tensor, torch.Tensor]],
        dtype,
        device,
        conv_only: bool = False,
    ) -> None:
        conv = layer.conv
        if conv.padding_mode != "zeros" or not isinstance(conv.padding, tuple):
            raise ConfigError(f"padding_mode={conv.padding_mode!r} cannot be streamed; use runtime.chunk_seconds=null")
        (k,), (s,), (p,), (d,) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
        self.k, self.s, self.p, self.d, self.groups = k, s, p, d, conv.groups
        self.c_in, self.c_out = conv.in_channels, conv.out_channels
        edge = getattr(layer, "edge_padding", 0)  # reflect/replicate padding at the true ends (stack/classic.py)
        if edge:
            self.window: Window = EdgeWindow(d * (k - 1) + 1, s, edge, layer.edge, self.c_in, dtype, device)
        else:
            self.window = Window(d * (k - 1) + 1, s, p, p, self.c_in, dtype, device)
        self.weight, self.bias = conv.weight.detach(), (conv.bias.detach() if conv.bias is not None else None)
        if self.groups == 1:  # (C_out, C_in, k) -> (k * C_in, C_out), rows in (tap, channel) order
            self.wt = self.weight.permute(2, 1, 0).reshape(k * self.c_in, self.c_out).contiguous()
            self.product = Product(self.wt, self.bias)  # oneDNN on the CPU (execute/matmul.py)
        # windows overlapping by fewer taps than the stride: three outputs at a time, the overlaps shared
        self.overlap = None
        if TripleProduct.applies(k, s, d, self.groups, self.c_in):
            self.overlap = TripleProduct(self.wt, self.bias, k, s, self.c_in)
        self.strided_view = d == 1 and k <= s  # the windows are rows of a strided view, no copy
        self.cols = torch.empty(0, dtype=dtype, device=device)
        self.scratch = torch.empty(0, dtype=dtype, device=device)
        self.norm, self.act = (None, None) if conv_only else (layer.norm, layer.act)
        # a windowed-DFT conv (stft/mel) runs as an FFT; followed by PairMagnitude, it yields the magnitude
        with torch.no_grad():  # the layer's cached decision (stack/spectral.py)
            self.fft_win = layer.spectral.window(conv) if self.c_in == 1 else None
        self.magnitude = None
        if self.fft_win is not None and self.norm is None:
            self.magnitude, self.act = split_magnitude(self.act)
        self.macs_per_row = k * self.c_in * self.c_out // self.groups
        self.width = self.c_out // 2 if self.magnitude is not None else self.c_out  # columns conv_into writes
        self.time_norm = not conv_only and bool(getattr(layer, "mixes_time", False))
        if self.time_norm:
            if stats is None:
                raise ConfigError("a norm over time needs the whole file's statistics first (iter_features runs that pass)")
            # a norm of stack/classic.py applies its own statistics (a peak floor, CMVN), in place
            self.fixed = layer.norm.streaming(stats, dtype, device) if hasattr(layer.norm, "streaming") else None
            if self.fixed is None:
                # (x - mean) / sqrt(var + eps) * w + b as x * scale + shift: one in-place pass per chunk
                mean, var = (t.to(device, torch.float64) for t in stats)
                norm = layer.norm.norm
                scale = torch.rsqrt(var + norm.eps) * norm.weight.detach().double()
                self.scale = scale.to(dtype)
                self.shift = (norm.bias.detach().double() - mean * scale).to(dtype)
        self.act_entry = activation_of(self.act) if self.act is not None else None  # None: a front-end's own
        norm_in_place = self.norm is None or self.time_norm or isinstance(self.norm, ChannelLayerNorm)
        act_in_place = self.act is None or (self.act_entry is not None and self.act_entry.in_place is not None)
        self.direct = norm_in_place and act_in_place  # output written straight into the next buffer
        # conv_only (a statistics pass) with a small window matrix: only the windows' moments are kept,
        # the output's follow from them (``collected``)
        small = self.groups == 1 and self.fft_win is None and k * self.c_in <= GRAM_DIMS and not hasattr(layer.norm, "streaming")
        self.gram = Covariance(k * self.c_in, device) if conv_only and small else None

    def _grow(self, name: str, rows: int, cols: int) -> torch.Tensor:
        t = getattr(self, name)
        if t.numel() < rows * cols:
            t = torch.empty(max(rows * cols, 2 * t.numel()), dtype=t.dtype, device=t.device)
            setattr(self, name, t)
        return t[: rows * cols].view(rows, cols)

    def conv_into(self, m: int, out: torch.Tensor) -> None:
        """The ``m`` complete outputs of the conv (no padding: the window has it) into ``out`` ``(m, C_out)``
        (``(m, C_out / 2)``, the ``PairMagnitude`` of them, when ``magnitude`` is fused in)."""
        buf, k, s = self.window.buf, self.k, self.s
        if self.fft_win is not None:
            frames = buf.as_strided((m, k), (s, 1))  # one channel: the windows are rows of a strided view
            if self.magnitude is not None:  # (m, F) magnitude ** power
                frame_spectra(frames, self.fft_win, out, self.magnitude.power)
            else:  # (m, 2F): real parts, then imaginary parts
                spectra = frame_spectra(frames, self.fft_win, torch.empty(m, self.c_out // 2, dtype=out.dtype.to_complex(), device=out.device))
                torch.cat([spectra.real, spectra.imag], dim=1, out=out)
        elif self.groups == 1:
            if self.overlap is not None:
                self.overlap.outputs(buf, m, out)
            else:
                self.product(self.columns(m), out)
        else:
            n = self.window.n
            x = buf[:n].t().clone(memory_format=torch.contiguous_format)[None]  # (1, C_in, n), row-major
            y = F.conv1d(x, self.weight, self.bias, s, 0, self.d, self.groups)  # (1, C_out, m)
            out.copy_(y[0].t())

    def columns(self, m: int) -> torch.Tensor:
        """The ``m`` complete input windows as rows ``(m, k * C_in)``, (tap, channel) order (``wt``'s rows)."""
        buf, c, k, s, d = self.window.buf, self.c_in, self.k, self.s, self.d
        if self.strided_view:
            return buf.as_strided((m, k * c), (s * c, 1))
        cols = self._grow("cols", m, k * c)
        cols.view(m, k, c).copy_(buf.as_strided((m, k, c), (s * c, d * c, 1)))
        return cols

    def post(self, y: torch.Tensor) -> torch.Tensor:
        """Norm then activation on the conv output ``(m, C_out)``; in place when ``direct``."""
        if self.norm is not None:
            if isinstance(self.norm, ChannelLayerNorm):  # over channels: the last axis, time-major
                normed = self.norm.norm(y)
                if self.direct:
                    y.copy_(normed)
                else:
                    y = normed
            elif self.time_norm and self.fixed is not None:
                y = self.fixed(y)  # (m, C), the whole file's statistics
            elif self.time_norm:
                y = y.mul_(self.scale).add_(self.shift)  # (m, C) * (C,) + (C,), the whole file's statistics
            else:
                y = _per_frame(self.norm, y)
        if self.act is not None:
            entry = self.act_entry
            if entry is None:
                y = _per_frame(self.act, y)
            elif entry.in_place is not None:
                y = entry.in_place(self.act, y)
            else:  # elementwise: any layout
                y = self.act(y)
        return y

    def run(self, sink: Rows, least: int = 1) -> None:
        """Compute every complete output and pass it to ``sink``, once there are at least ``least``
        (on one thread when the product is small: forking threads for it costs more than it saves)."""
        m = self.window.ready()
        if m == 0 or m < least:
            return
        with one_thread(m * self.macs_per_row < SERIAL_MACS):
            self._run(m, sink)

    def _run(self, m: int, sink: Rows) -> None:
        if self.gram is not None:  # a statistics pass: the windows' moments, the conv not run
            self.gram.add(self.columns(m))
            self.window.consume(m)
            return
        if self.direct:
            out = sink.tail(m)
            self.conv_into(m, out)
            self.post(out)
        else:
            out = self._grow("scratch", m, self.width)
            self.conv_into(m, out)
            sink.tail(m).copy_(self.post(out))
        sink.commit(m)
        self.window.consume(m)


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
            only gather its input windows' moments, ``_Layer.gram``), and keep the per-channel
            moments of that conv's output (``collected()``) instead of features.
        min_rows: a layer runs once at least this many of its outputs are complete (``flush`` runs
            the rest). 1: every frame is pushed out as soon as its window is read. More: late
            layers, which get few frames per chunk, run as fewer, larger products (same frames).
    """

    def __init__(
        self,
        stack: ConvStack,
        device: Optional[torch.device] = None,
        time_stats: Optional[dict[int, tuple[torch.Tensor, torch.Tensor]]] = None,
        collect: Optional[int] = None,
        min_rows: int = 1,
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
        self.layers = [_Layer(layer, stats.get(i), self.dtype, self.device, conv_only=i == collect)
                       for i, layer in enumerate(stack.layers[:last])]
        self.collect = collect
        self.peak_stat = collect is not None and _peak(stack.layers[collect].norm)
        sink_channels = self.out_channels if collect is None else stack.layers[collect].conv.out_channels
        self.sink = (_Output if collect is None else _Stats)(sink_channels, self.dtype, self.device)
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

    def _run(self, pairs: Iterable[tuple[_Layer, Rows]], final: bool) -> None:
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
            return Segments([self, StreamingStack(self.stack, self.device, self.time_stats)], self.shapes(),
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
        output frame they complete ``(C_out, m)``. ``first``: the windows are as constructed (the true
        start); else they are emptied first (no left padding). ``last``: the true end follows."""
        if not first:
            for layer in self.layers:
                layer.window.n, layer.window.skip = 0, 0
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
