"""One layer of chunked execution: a ``ConvLayer`` on a stream of time-major rows.

Flow: source -> load -> stack -> **execute** -> sink -> engines. Used by ``execute/chunked.py``
(``StreamingStack``, whose module docstring says how a layer is computed: its window, its conv as
one matrix product of the windows, ``execute/matmul.py``, or as an FFT for a windowed-DFT conv,
then its norm and activation, in place where they allow it).

Public API:

* ``StreamLayer(layer, stats, dtype, device, conv_only=False, like=None)``: ``run(sink, least)``
  computes every complete output into ``sink`` (a ``windows.Rows``); ``like``: a ``StreamLayer``
  of the same layer whose weights (packed once for oneDNN) this one shares.
* ``Output``, ``Stats``: the sinks of the last layer (features; per-channel statistics).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from conv_pipeline.errors import ConfigError
from conv_pipeline.execute.matmul import Product, TripleProduct
from conv_pipeline.stack.classic import EdgeWindow
from conv_pipeline.stack.layer import ChannelLayerNorm, ConvLayer, activation_of
from conv_pipeline.stack.spectral import frame_spectra, one_thread, split_magnitude
from conv_pipeline.windows import Covariance, Moments, Rows, Window

SERIAL_MACS = 1 << 23  # a layer's chunk of fewer multiply-adds than this runs on one thread
GRAM_DIMS = 512  # a statistics pass keeps the windows' (k * C_in)^2 moments, not the conv's output, up to this k * C_in


class Output(Rows):
    """The last stage's sink: collects ``(rows, channels)`` and hands them out as ``(channels, rows)``."""

    def __init__(self, channels: int, dtype, device) -> None:
        super().__init__(64, channels, dtype, device)

    def take(self) -> torch.Tensor:
        # (n, C) -> (C, n), a copy: .contiguous() would return a view of the buffer when n == 1
        out = self.buf[: self.n].t().clone(memory_format=torch.contiguous_format)
        self.n = 0
        return out


class Stats(Output):
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
def per_frame(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Apply a per-frame module written for ``(batch, channels, frames)`` to time-major ``y``."""
    return module(y.t()[None])[0].t()  # (m, C) -> (1, C, m) -> (1, C', m) -> (m, C')


class StreamLayer:
    """One ``ConvLayer`` on a stream: its window, its conv as a matrix product, its norm and activation."""

    def __init__(
        self,
        layer: ConvLayer,
        stats: Optional[tuple[torch.Tensor, torch.Tensor]],
        dtype,
        device,
        conv_only: bool = False,
        like: Optional["StreamLayer"] = None,
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
        # a windowed-DFT conv (stft/mel) runs as an FFT; followed by PairMagnitude, it yields the magnitude
        with torch.no_grad():  # the layer's cached decision (stack/spectral.py)
            self.fft_win = layer.spectral.window(conv) if self.c_in == 1 else None
        # a filterbank 1x1 conv (the mel matrix): a product per band of its input channels, on the CPU
        self.bands = None
        if self.groups == 1 and (k, s, p, d) == (1, 1, 0, 1) and torch.device(device).type == "cpu":
            with torch.no_grad():  # the layer's cached decision (stack/bands.py)
                self.bands = layer.bands.bands(conv)
        self.overlap: Optional[TripleProduct] = None
        self.product: Optional[Product] = None
        if like is not None and self.groups == 1:  # the same layer's weights, packed once (read-only)
            self.wt, self.product = like.wt, like.product
            self.overlap = like.overlap.twin() if like.overlap is not None else None
        elif self.groups == 1:  # (C_out, C_in, k) -> (k * C_in, C_out), rows in (tap, channel) order
            self.wt = self.weight.permute(2, 1, 0).reshape(k * self.c_in, self.c_out).contiguous()
            if self.fft_win is None and self.bands is None:  # oneDNN on the CPU (execute/matmul.py)
                self.product = Product(self.wt, self.bias)
            # windows overlapping by fewer taps than the stride: three outputs at a time, the overlaps shared
            if self.fft_win is None and TripleProduct.applies(k, s, d, self.groups, self.c_in):
                self.overlap = TripleProduct(self.wt, self.bias, k, s, self.c_in, whole=self.product)
        self.strided_view = d == 1 and k <= s  # the windows are rows of a strided view, no copy
        self.cols = torch.empty(0, dtype=dtype, device=device)
        self.scratch = torch.empty(0, dtype=dtype, device=device)
        self.norm, self.act = (None, None) if conv_only else (layer.norm, layer.act)
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
            elif self.bands is not None:
                self.bands.rows_into(self.columns(m), out, self.bias)
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
                y = per_frame(self.norm, y)
        if self.act is not None:
            entry = self.act_entry
            if entry is None:
                y = per_frame(self.act, y)
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
