"""The pieces of the classic speech front-ends (``mfcc``, ``fbank``, centred frames, dB, deltas,
CMVN) that are not plain convs: edge padding, the fixed nonlinearities and the norms over time.

Flow: source -> load -> **stack** -> execute -> sink -> engines. ``frontends.py`` builds the
layers from these; every shape is ``(batch, channels, frames)`` like any other layer's.

* ``EdgeLayer``: a ``ConvLayer`` whose padding is ``reflect`` (``torch.stft(center=True)``) or
  ``replicate`` (``compute_deltas``) at each item's true start and end (``geometry.LayerGeometry.edge``).
  Its conv has no padding of its own; the layer pads each item at its own length, so a padded
  batch equals single files. Chunked execution pads at the stream's true ends (``EdgeWindow``).
* ``Decibels`` (``AmplitudeToDB``: ``multiplier * log10(max(x, 1e-10))``) and ``LogFloor``
  (Kaldi: ``log(max(x, float32 epsilon))``): per-frame activations.
* ``PeakFloor``: ``AmplitudeToDB``'s ``top_db`` before the dB (``max(x, peak * ratio)``, the peak
  over the whole item): a norm over time, one statistics pass when chunked (the peak).
* ``Cmvn``: per-file, per-channel mean (and variance) normalisation: a norm over time (mean and
  variance, like ``TimeGroupNorm``).
* ``delta_kernels``, ``dct_kernels``: the fixed weights of the delta and DCT convs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from conv_pipeline.config.schema import LayerConfig
from conv_pipeline.stack.layer import ConvLayer, TimeGroupNorm
from conv_pipeline.windows import Window

AMIN = 1e-10  # AmplitudeToDB's floor
KALDI_FLOOR = float(torch.finfo(torch.float32).eps)  # Kaldi's log floor (torchaudio.compliance.kaldi)
CMVN_EPS = 1e-10  # added to the variance before its square root


def edge_pad(x: torch.Tensor, pad: int, mode: str, lengths: Optional[Sequence[int]] = None) -> torch.Tensor:
    """``(B, C, T) -> (B, C, T + 2 * pad)``: each item padded at its start and at its own end
    (``lengths[b]``, default ``T``) by ``mode`` (``reflect``, ``replicate``); past an item's end, junk."""
    if not pad:
        return x
    out = F.pad(x, (pad, pad), mode=mode)
    for b, n in enumerate(lengths or ()):
        if n < x.shape[-1] and n > (pad if mode == "reflect" else 0):  # too short: no frame, left as is
            out[b, :, pad : n + 2 * pad] = F.pad(x[b : b + 1, :, :n], (pad, pad), mode=mode)[0, :, pad:]
    return out


class EdgeLayer(ConvLayer):
    """A ``ConvLayer`` padded by ``edge`` (``reflect`` or ``replicate``) instead of zeros:
    ``(B, C_in, T) -> (B, C_out, T')`` with ``T'`` as for zero padding (``docs/geometry.md``)."""

    def __init__(self, in_channels: int, spec: LayerConfig) -> None:
        super().__init__(in_channels, replace(spec, padding=0))
        self.edge: str = getattr(spec, "edge", "replicate")
        self.edge_padding = int(spec.padding)

    def forward(self, x: torch.Tensor, valid: Optional[Sequence[int]] = None,
                lengths: Optional[Sequence[int]] = None) -> torch.Tensor:
        """``lengths``: each item's valid input frames (a padded batch); ``valid``: its valid outputs."""
        return super().forward(edge_pad(x, self.edge_padding, self.edge, lengths), valid)


class EdgeWindow(Window):
    """``windows.Window`` for an ``EdgeLayer``: the padding at the true start is made from the first
    frames once enough have come (``pad + 1`` to reflect, 1 to replicate), and at the true end from
    the last ones (a copy of the last ``pad + 1`` input frames is kept)."""

    def __init__(self, span: int, stride: int, pad: int, mode: str, channels: int, dtype, device) -> None:
        super().__init__(span, stride, 0, 0, channels, dtype, device)
        self.pad, self.mode = pad, mode
        self.need = pad + 1 if mode == "reflect" else 1  # input frames the start's padding is made from
        self.started = pad == 0
        self.last = torch.empty(0, channels, dtype=dtype, device=device)  # the last pad + 1 input frames

    def _put(self, rows: torch.Tensor) -> None:
        self.tail(int(rows.shape[0])).copy_(rows)
        Window.commit(self, int(rows.shape[0]))

    def commit(self, rows: int) -> None:
        if self.pad:
            self.last = torch.cat([self.last, self.buf[self.n : self.n + rows]])[-(self.pad + 1):].clone()
        super().commit(rows)
        if not self.started and self.n >= self.need:
            head = _pad_rows(self.buf[: self.n].clone(), self.pad, self.mode, start=True)
            self.n, self.started = 0, True
            self._put(head)

    def rewind(self, at_start: bool) -> None:
        """Empty; at the true start (``at_start``) the start's padding is made again from the first
        frames to come, else there is none (a restart mid-file)."""
        super().rewind(at_start)
        self.started = self.pad == 0 or not at_start
        self.last = self.last[:0]

    def finish(self) -> None:
        """The true end: ``pad`` frames reflected or replicated from the last ones."""
        if self.started and self.pad:
            self._put(_pad_rows(self.last, self.pad, self.mode, start=False)[-self.pad:])


def _pad_rows(rows: torch.Tensor, pad: int, mode: str, start: bool) -> torch.Tensor:
    """Time-major ``rows`` ``(n, C)`` padded by ``pad`` frames of ``mode`` (at the start: the padding
    and the rows; at the end: the rows and the padding)."""
    side = (pad, 0) if start else (0, pad)
    return F.pad(rows.t()[None], side, mode=mode)[0].t()


class Decibels(nn.Module):
    """``multiplier * log10(max(x, 1e-10))``: ``torchaudio.transforms.AmplitudeToDB`` without ``top_db``
    (10 for power, 20 for magnitude)."""

    def __init__(self, multiplier: float) -> None:
        super().__init__()
        self.multiplier = multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log10(torch.clamp(x, min=AMIN)) * self.multiplier


class LogFloor(nn.Module):
    """``log(max(x, floor))``: Kaldi's log of the mel energies (floor: float32 epsilon)."""

    def __init__(self, floor: float = KALDI_FLOOR) -> None:
        super().__init__()
        self.floor = floor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.clamp(x, min=self.floor))


class PeakFloor(nn.Module):
    """``max(x, peak * ratio)`` with ``peak`` the largest value of the item (all channels, valid
    frames): ``AmplitudeToDB``'s ``top_db`` clamp taken before the dB (``ratio = 10 ** (-top_db /
    multiplier)``; the dB of the floor is the peak's dB minus ``top_db``). A norm over time whose
    statistic is the peak: ``peak_of`` per item, ``normalize(x, peak)`` with it fixed."""

    mixes_time = True
    statistic = "peak"

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio

    def streaming(self, stats: tuple[torch.Tensor, torch.Tensor], dtype, device) -> Callable[[torch.Tensor], torch.Tensor]:
        """The clamp with the whole file's peak fixed (``stats``: ``(peak, peak)``), applied in place
        to time-major chunks ``(m, C)`` (``execute/chunked.py``)."""
        floor = (stats[0].to(device, torch.float64) * self.ratio).to(dtype)
        return lambda y: torch.maximum(y, floor, out=y)

    def normalize(self, x: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C, T)``, ``peak`` ``(B,)``."""
        return torch.maximum(x, (peak.to(x.dtype) * self.ratio)[:, None, None])

    def forward(self, x: torch.Tensor, valid: Optional[Sequence[int]] = None) -> torch.Tensor:
        valid = valid if valid is not None else [x.shape[-1]] * x.shape[0]
        peak = torch.stack([x[b, :, : max(int(v), 1)].amax() for b, v in enumerate(valid)])
        return self.normalize(x, peak)


class Cmvn(TimeGroupNorm):
    """Per-file mean (``mean``) or mean and variance (``mean_var``) normalisation of every channel,
    statistics over the item's valid frames: ``x - mean`` or ``(x - mean) / sqrt(var + 1e-10)``.
    A ``TimeGroupNorm`` with unit weight and zero bias (chunked: its mean and variance pass)."""

    def __init__(self, channels: int, mode: str) -> None:
        super().__init__(channels)
        self.norm.eps = CMVN_EPS
        self.mode = mode

    def normalize(self, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean":
            return x - mean.to(x.dtype)[..., None]
        return super().normalize(x, mean, var)

    def streaming(self, stats: tuple[torch.Tensor, torch.Tensor], dtype, device) -> Callable[[torch.Tensor], torch.Tensor]:
        """``normalize`` with the whole file's ``(mean, var)`` fixed, in place on time-major chunks
        ``(m, C)`` (``execute/chunked.py``): the mean subtracted first, then the scale (a folded
        ``x * scale + shift`` would lose a constant channel's zero to rounding)."""
        mean = stats[0].to(device, dtype)
        if self.mode == "mean":
            return lambda y: y.sub_(mean)
        scale = torch.rsqrt(stats[1].to(device, torch.float64) + CMVN_EPS).to(dtype)
        return lambda y: y.sub_(mean).mul_(scale)

    def forward(self, x: torch.Tensor, valid: Optional[Sequence[int]] = None) -> torch.Tensor:
        valid = valid if valid is not None else [x.shape[-1]] * x.shape[0]
        stats = [torch.var_mean(x[b, :, : max(int(v), 1)].double(), dim=-1, correction=0) for b, v in enumerate(valid)]
        return self.normalize(x, torch.stack([m for _, m in stats]), torch.stack([v for v, _ in stats]))


def delta_kernels(channels: int, width: int) -> torch.Tensor:
    """``(2C, C, width)`` float64: the input (centre tap 1), then its deltas
    (``torchaudio.functional.compute_deltas``: taps ``-n..n`` over ``n (n + 1) (2n + 1) / 3``)."""
    n = (width - 1) // 2
    taps = torch.arange(-n, n + 1, dtype=torch.float64) / (n * (n + 1) * (2 * n + 1) / 3)
    w = torch.zeros(2 * channels, channels, width, dtype=torch.float64)
    idx = torch.arange(channels)
    w[idx, idx, n] = 1.0
    w[channels + idx, idx] = taps
    return w


def keep_and_delta(in_channels: int, delta_from: int, width: int) -> torch.Tensor:
    """``(in + (in - delta_from), in, width)``: every input channel kept, then the deltas of
    channels ``delta_from..in - 1`` (the second delta order: deltas of the deltas)."""
    w = delta_kernels(in_channels, width)
    keep = w[:in_channels]
    return torch.cat([keep, w[in_channels + delta_from :]])


def dct_kernels(n_mfcc: int, n_mels: int) -> torch.Tensor:
    """``(n_mfcc, n_mels, 1)`` float64: the orthonormal DCT-II (``torchaudio.functional.create_dct``)."""
    import torchaudio.functional as AF

    return AF.create_dct(n_mfcc, n_mels, norm="ortho").T.double()[:, :, None]
