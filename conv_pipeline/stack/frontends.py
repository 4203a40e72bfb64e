"""Analytic front-ends as Conv1d layers: kernels computed, not learned.

Flow: source -> load -> **stack** -> execute -> sink -> engines. ``ConvStack`` puts the
front-end's layers (``build_frontend``) before ``model.layers``; its output, ``(batch, channels,
frames)``, is what the first user layer sees. Shapes and lengths follow ``docs/geometry.md`` like
any other layer.

* ``stft``: a ``Conv1d(1, 2F, n_fft, stride=hop)`` whose rows are ``window * cos`` and
  ``-window * sin`` (F = n_fft // 2 + 1), then ``|.|`` of each (re, im) pair: equal to
  ``torch.stft(..., center=False).abs()``. With ``power=2`` the squared magnitude.
* ``mel``: the STFT power (``power=2``), then the mel matrix as a 1x1 conv (torchaudio's
  ``melscale_fbanks``, HTK scale, no norm): equal to ``torchaudio.transforms.MelSpectrogram``
  with ``center=False``. Optional ``log`` (``log(x + log_offset)``).
* ``sinc``: SincNet-style band-pass filters (``n_filters`` windowed-sinc kernels of odd length
  ``kernel_size``, mel-spaced cut-offs, "same" padding), rectified (``|.|``), then each band's
  envelope pooled by a depthwise Hann window of ``win_length or n_fft`` samples every
  ``hop_length`` samples; optional log. User layers (``model.layers``) follow.

* ``mfcc``: the mel power, dB (``AmplitudeToDB``, optional ``top_db`` clamp at the file's peak, a
  norm over time), then the orthonormal DCT-II as a 1x1 conv: equal to ``torchaudio.transforms.MFCC``.
* ``fbank``: Kaldi's: one framing conv whose kernel folds DC removal, pre-emphasis, the window and
  the ``n_fft``-point DFT (``spectral.Framing``, run as frames -> rfft), the power, Kaldi's mel
  banks as a 1x1 conv, ``log(max(x, eps))``: equal to ``torchaudio.compliance.kaldi.fbank``.
* Options (``stack/classic.py``): ``center`` (reflect padding at the file's ends, an ``EdgeLayer``),
  ``db``/``top_db``, ``deltas`` (one 5-tap conv per order, edges replicated: input channels kept,
  their deltas appended) and ``cmvn`` (a norm over time on the last conv; a 1x1 identity conv
  carries it when the last conv ends in a nonlinearity).

Each front-end is a list of ``ConvLayer`` modules like any other layer, so padded batches,
chunked execution and checkpoints treat them the same way. They expect one input channel.
The stft/mel conv is executed as an FFT wherever its weights are the DFT basis (``spectral.py``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from conv_pipeline.config.checks import (
    DELTA_WIDTH,
    cmvn_mode,
    frontend_base_channels,
    frontend_channels,
    frontend_specs,
)
from conv_pipeline.config.schema import FrontendConfig
from conv_pipeline.errors import ConfigError
from conv_pipeline.stack.classic import Cmvn, Decibels, LogFloor, PeakFloor, dct_kernels, keep_and_delta
from conv_pipeline.stack.spectral import Framing, PairMagnitude, SpectralCache, stft_kernels

_WINDOWS: dict[str, Callable[[int], torch.Tensor]] = {
    "hann": lambda n: torch.hann_window(n, periodic=True, dtype=torch.float64),
    "hamming": lambda n: torch.hamming_window(n, periodic=True, dtype=torch.float64),
    "blackman": lambda n: torch.blackman_window(n, periodic=True, dtype=torch.float64),
    "rectangular": lambda n: torch.ones(n, dtype=torch.float64),
    "povey": lambda n: torch.hann_window(n, periodic=False, dtype=torch.float64).pow(0.85),  # Kaldi's
}


def window(name: str, win_length: int, n_fft: int) -> torch.Tensor:
    """``(n_fft,)`` float64 window of ``win_length`` samples, zero-padded to ``n_fft`` at the centre
    (as ``torch.stft`` does)."""
    w = _WINDOWS[name](win_length)
    left = (n_fft - win_length) // 2
    return torch.nn.functional.pad(w, (left, n_fft - win_length - left))


def mel_matrix(n_freq: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """``(n_mels, n_freq)`` mel filterbank (torchaudio's ``melscale_fbanks``, HTK, no norm)."""
    import torchaudio.functional as AF

    fb = AF.melscale_fbanks(n_freq, f_min, f_max, n_mels, sample_rate, norm=None, mel_scale="htk")
    return fb.T.to(torch.float64)  # (n_freq, n_mels) -> (n_mels, n_freq)


def sinc_cutoffs(n_filters: int, sample_rate: int, min_low_hz: float, min_band_hz: float, f_max: float):
    """Mel-spaced ``(low, high)`` cut-offs in Hz, ``n_filters`` bands from ``min_low_hz`` to ``f_max``."""

    def to_mel(f):
        return 2595 * math.log10(1 + f / 700)

    def to_hz(m):
        return 700 * (10 ** (m / 2595) - 1)

    lo_mel, hi_mel = to_mel(min_low_hz), to_mel(f_max)
    edges = [to_hz(lo_mel + (hi_mel - lo_mel) * i / n_filters) for i in range(n_filters + 1)]
    return [(edges[i], max(edges[i + 1], edges[i] + min_band_hz)) for i in range(n_filters)]


def sinc_kernels(cutoffs, kernel_size: int, sample_rate: int) -> torch.Tensor:
    """``(n_filters, 1, kernel_size)`` Hamming-windowed band-pass kernels with unit gain at the
    band centre: ``h[n] = 2 f2 sinc(2 f2 n) - 2 f1 sinc(2 f1 n)`` (f in cycles per sample)."""
    half = (kernel_size - 1) / 2
    n = torch.arange(kernel_size, dtype=torch.float64) - half
    ham = torch.hamming_window(kernel_size, periodic=False, dtype=torch.float64)
    rows = []
    for low, high in cutoffs:
        f1, f2 = low / sample_rate, high / sample_rate
        h = (2 * f2 * torch.sinc(2 * f2 * n) - 2 * f1 * torch.sinc(2 * f1 * n)) * ham
        centre = (f1 + f2) / 2
        gain = torch.abs(torch.sum(h * torch.exp(-2j * math.pi * centre * n)))
        rows.append(h / gain)
    return torch.stack(rows)[:, None, :]


class Log(nn.Module):
    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x + self.offset)


class Abs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()


def build_frontend(fe: FrontendConfig, in_channels: int) -> list[nn.Module]:
    """The front-end's layers, ``ConvLayer`` modules with fixed kernels, first layer first."""
    from conv_pipeline.stack.classic import EdgeLayer
    from conv_pipeline.stack.layer import ConvLayer

    if in_channels != 1:
        raise ConfigError(
            f"model.frontend={fe.type} works on one channel but the audio has {in_channels}; add audio.channels=mono"
        )
    specs = frontend_specs(fe)
    # channels into each layer: the STFT's (re, im) pairs become one magnitude channel each
    layers = [
        (EdgeLayer if getattr(spec, "edge", "zeros") != "zeros" else ConvLayer)(chans, spec)
        for (chans, _), spec in zip(frontend_channels(fe), specs)
    ]
    base = _sinc(fe, layers) if fe.type == "sinc" else _spectral(fe, layers)
    if fe.log:
        last = layers[base - 1]
        log = LogFloor() if fe.type == "fbank" else Log(fe.log_offset)
        last.act = log if last.act is None else nn.Sequential(last.act, log)
    _deltas_and_cmvn(fe, layers[base:], layers[-1])
    return layers


def _power(fe: FrontendConfig) -> float:
    return fe.power if fe.power is not None else (1.0 if fe.type == "stft" else 2.0)


def _spectral(fe: FrontendConfig, layers: list) -> int:
    """Kernels of the stft/mel/mfcc/fbank layers; returns how many layers the spectral part has."""
    n_fft, n_freq = fe.n_fft, fe.n_fft // 2 + 1
    if fe.type == "fbank":  # Kaldi: DC removal, pre-emphasis and the window folded into the DFT kernel
        framing = Framing(_WINDOWS[fe.window](fe.win_length or n_fft), n_fft, fe.preemphasis, remove_dc=True)
        layers[0].conv.weight.data.copy_(framing.kernel())
        layers[0].spectral = SpectralCache(candidate=framing)  # run as frames -> prepare -> rfft
    else:
        layers[0].conv.weight.data.copy_(stft_kernels(n_fft, window(fe.window, fe.win_length or n_fft, n_fft)))
    power = _power(fe)
    layers[0].act = PairMagnitude(power)
    if fe.type == "stft":
        if fe.db:
            layers[0].act = nn.Sequential(layers[0].act, Decibels(20.0 / power))
        return 1
    f_max = fe.f_max if fe.f_max is not None else fe.sample_rate / 2
    if fe.type == "fbank":
        fb = kaldi_mel_matrix(fe.n_mels, n_fft, fe.sample_rate, fe.f_min, f_max)
    else:
        fb = mel_matrix(n_freq, fe.f_min, f_max, fe.n_mels, fe.sample_rate)
    layers[1].conv.weight.data.copy_(fb[:, :, None])  # (n_mels, F, 1)
    if fe.db or fe.type == "mfcc":
        if fe.top_db is not None:
            layers[1].norm = PeakFloor(10 ** (-fe.top_db * power / 20.0))
        layers[1].act = Decibels(20.0 / power)
    if fe.type != "mfcc":
        return 2
    layers[2].conv.weight.data.copy_(dct_kernels(fe.n_mfcc, fe.n_mels))
    return 3


def _sinc(fe: FrontendConfig, layers: list) -> int:
    n_fft = fe.n_fft
    f_max = fe.f_max if fe.f_max is not None else fe.sample_rate / 2 - fe.min_band_hz
    cutoffs = sinc_cutoffs(fe.n_filters, fe.sample_rate, max(fe.f_min, fe.min_low_hz), fe.min_band_hz, f_max)
    layers[0].conv.weight.data.copy_(sinc_kernels(cutoffs, fe.kernel_size, fe.sample_rate))
    layers[0].act = Abs()
    pool = _WINDOWS["hann"](fe.win_length or n_fft)
    layers[1].conv.weight.data.copy_((pool / pool.sum()).expand(fe.n_filters, 1, -1))
    return 2


def _deltas_and_cmvn(fe: FrontendConfig, extra: list, last: nn.Module) -> None:
    """Kernels of the delta convs (and of the CMVN's identity conv); the CMVN as ``last``'s norm."""
    base = frontend_base_channels(fe)
    for order in range(int(fe.deltas)):
        extra[order].conv.weight.data.copy_(keep_and_delta((order + 1) * base, order * base, DELTA_WIDTH))
    mode = cmvn_mode(fe)
    if mode is None:
        return
    if len(extra) > int(fe.deltas):  # its own 1x1 identity conv
        extra[-1].conv.weight.data.copy_(torch.eye(base, dtype=torch.float64)[:, :, None])
    last.norm = Cmvn(last.conv.out_channels, mode)


def kaldi_mel_matrix(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """``(n_mels, n_fft // 2 + 1)`` Kaldi mel filterbank (``torchaudio.compliance.kaldi.get_mel_banks``,
    no VTLN warp), the Nyquist bin's column zero as in ``kaldi.fbank``."""
    from torchaudio.compliance.kaldi import get_mel_banks

    banks, _ = get_mel_banks(n_mels, n_fft, float(sample_rate), float(f_min), float(f_max), 100.0, -500.0, 1.0)
    return torch.nn.functional.pad(banks.to(torch.float64), (0, 1))
