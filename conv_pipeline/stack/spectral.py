"""Spectral layers computed the fast way: a windowed-DFT ``Conv1d`` run as an FFT.

Flow: source -> load -> **stack** -> execute -> sink -> engines. The ``stft`` and ``mel``
front-ends (``frontends.py``) are a ``Conv1d(1, 2F, n_fft, stride=hop)`` whose rows are
``window * cos`` then ``-window * sin`` (``F = n_fft // 2 + 1``), followed by ``PairMagnitude``.
That conv *is* an STFT: ``rfft(frame * window)`` has the conv's real rows as its real part and its
imaginary rows as its imaginary part. The layer stays a ``Conv1d`` in config, summary, weights and
checkpoints; only its execution changes (as cuDNN picks an FFT algorithm):

* ``SpectralCache.window(conv, x)``: the conv's window ``(n_fft,)`` when its weight is the DFT
  basis of that window (read from the weights, not the preset name, so a checkpoint with other
  weights runs as a conv), zero padding, dilation 1, no bias, and no gradient is wanted
  (``inference_mode``/``no_grad``, as ``execute`` runs); else None. The decision is cached and
  taken again when the weight changes (its ``data_ptr``, ``_version`` or values): a
  ``WeightDecision``, the base ``stack/bands.py`` also uses; ``fix_weights`` marks a stack's as fixed.
* ``frame_spectra(frames, window, out, power)``: ``(..., m, n_fft)`` frames -> ``(..., m, F)``
  complex spectra, or their ``|X| ** power`` (``power_into``: what ``PairMagnitude`` computes
  from the ``(re, im)`` rows, without building ``(B, 2F, T)``), in blocks of ``BLOCK`` frames so
  that the windowed frames stay in cache; long inputs split between the torch threads.
* ``stft_layer(x, hop, padding, window, magnitude)``: whole and padded-batch execution,
  ``(B, 1, T) -> (B, C, T')``; ``execute/chunked.py`` calls ``frame_spectra`` on its time-major
  buffers.
* ``Framing``: a framing kernel that is more than window times DFT (``fbank``: DC removal and
  pre-emphasis folded in, ``n_fft`` > frame length). Its candidate comes from the front-end
  (``SpectralCache(candidate=...)``) and is checked against the weight (``framing_of``); then
  ``frame_spectra`` computes it as frames -> ``Framing.apply`` -> ``rfft(n=n_fft)``.
* ``one_thread(serial)``: torch on one thread inside a block (small ops, where forking costs more).

Equal to the dense conv up to float32 rounding (about 1e-6 of the largest value).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterator, Optional

import torch
from torch import nn

BLOCK = 512  # frames per FFT block with one torch thread: the windowed frames stay in cache
SERIAL_FRAMES = 4096  # fewer frames than this (a chunk) are not split between threads
_TOLERANCE = 2e-6  # largest |weight - DFT basis| accepted, relative to the window's peak


@lru_cache(maxsize=8)
def _dft_basis(n_fft: int) -> torch.Tensor:
    """``(2F, n_fft)`` float64: ``cos`` rows, then ``-sin`` rows (the unwindowed DFT basis)."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    angle = 2 * math.pi * torch.outer(k, n) / n_fft  # (F, n_fft)
    return torch.cat([torch.cos(angle), -torch.sin(angle)])


def stft_kernels(n_fft: int, win: torch.Tensor) -> torch.Tensor:
    """``(2F, 1, n_fft)`` conv weight: rows ``0..F-1`` real parts, ``F..2F-1`` imaginary parts."""
    return (_dft_basis(n_fft) * win)[:, None, :]  # (2F, 1, n_fft)


@dataclass(frozen=True, eq=False)
class Framing:
    """A framing kernel that is more than a window times the DFT: Kaldi's (``fbank``). Each frame of
    ``size`` samples has its mean removed (``remove_dc``), is pre-emphasised
    (``y[i] = x[i] - preemphasis * x[i - 1]``, ``y[0] = (1 - preemphasis) * x[0]``), windowed and
    zero-padded to ``n_fft`` before the DFT. All of it is linear, so ``kernel()`` is one
    ``(2F, 1, size)`` conv weight; ``apply`` computes the same frames the fast way."""

    window: torch.Tensor = field(repr=False)  # (size,)
    n_fft: int
    preemphasis: float = 0.0
    remove_dc: bool = False

    @property
    def size(self) -> int:
        return int(self.window.shape[0])

    def matrix(self) -> torch.Tensor:
        """``(size, size)`` float64: frame -> windowed, pre-emphasised, mean-removed frame."""
        k = self.size
        m = torch.eye(k, dtype=torch.float64)
        if self.remove_dc:
            m = m - 1.0 / k
        shifted = torch.cat([m[:1], m[:-1]])  # row i: the row of sample i - 1 (sample 0 repeats)
        return self.window.double()[:, None] * (m - self.preemphasis * shifted)

    def kernel(self) -> torch.Tensor:
        """``(2F, 1, size)`` float64 conv weight: the ``n_fft``-point DFT rows times ``matrix()``."""
        return (_dft_basis(self.n_fft)[:, : self.size] @ self.matrix())[:, None, :]

    def to(self, dtype: torch.dtype, device=None) -> "Framing":
        return Framing(self.window.to(device or self.window.device, dtype), self.n_fft, self.preemphasis, self.remove_dc)

    def apply(self, frames: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
        """``frames`` ``(..., m, size)`` -> ``work`` (same shape): the frames as the DFT reads them."""
        src = frames
        if self.remove_dc:
            src = torch.sub(frames, frames.mean(dim=-1, keepdim=True), out=work)
        if self.preemphasis:
            first = src[..., :1] * (1 - self.preemphasis)
            tail = torch.add(src[..., 1:], src[..., :-1], alpha=-self.preemphasis)  # new tensor: src may be work
            work[..., 1:] = tail
            work[..., :1] = first
            src = work
        return torch.mul(src, self.window, out=work)


def frame_size(win) -> int:
    """Samples per frame of a fast-path window: a window tensor's length or a ``Framing``'s ``size``."""
    return win.size if isinstance(win, Framing) else int(win.shape[0])


class PairMagnitude(nn.Module):
    """``(B, 2F, T)`` holding real parts then imaginary parts -> ``(B, F, T)`` magnitude ** power."""

    def __init__(self, power: float) -> None:
        super().__init__()
        self.power = power

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        re, im = x.chunk(2, dim=1)  # (B, F, T) each
        p = re * re + im * im
        return p if self.power == 2 else p.sqrt() if self.power == 1 else p.pow(self.power / 2)


def split_magnitude(act: Optional[nn.Module]) -> tuple[Optional[PairMagnitude], Optional[nn.Module]]:
    """``(magnitude, rest)`` when ``act`` is a ``PairMagnitude``, alone or first in an
    ``nn.Sequential`` (``rest``: the modules after it, or None); ``(None, act)`` otherwise."""
    if isinstance(act, PairMagnitude):
        return act, None
    if isinstance(act, nn.Sequential) and len(act) and isinstance(act[0], PairMagnitude):
        rest = list(act)[1:]
        return act[0], (nn.Sequential(*rest) if len(rest) > 1 else rest[0] if rest else None)
    return None, act


def dft_window(conv: nn.Conv1d) -> Optional[torch.Tensor]:
    """The window ``(n_fft,)`` (the weight's dtype and device) when ``conv`` is a windowed DFT that
    ``frame_spectra`` computes exactly; None otherwise."""
    w = conv.weight
    n_fft = w.shape[-1]
    n_freq = n_fft // 2 + 1
    if (
        w.dim() != 3 or tuple(w.shape[:2]) != (2 * n_freq, 1) or conv.groups != 1 or conv.bias is not None
        or conv.padding_mode != "zeros" or not isinstance(conv.padding, tuple) or conv.dilation != (1,)
        or w.dtype not in (torch.float32, torch.float64)
    ):
        return None
    with torch.no_grad():
        win = w[0, 0].detach().double().cpu()  # the k = 0 real row: window * cos(0)
        peak = float(win.abs().max())
        if peak == 0 or not math.isfinite(peak):
            return None
        err = float((w.detach().double().cpu() - stft_kernels(n_fft, win)).abs().max())
    return w[0, 0].detach().clone() if err <= _TOLERANCE * peak else None


def framing_of(conv: nn.Conv1d, candidate: Framing) -> Optional[Framing]:
    """``candidate`` (in the weight's dtype and device) when ``conv``'s weight is its ``kernel()``
    and the conv is otherwise plain (no bias, zero padding, dilation 1); None otherwise."""
    w = conv.weight
    expected = candidate.kernel()
    if (
        tuple(w.shape) != tuple(expected.shape) or conv.groups != 1 or conv.bias is not None
        or conv.padding_mode != "zeros" or conv.dilation != (1,) or w.dtype not in (torch.float32, torch.float64)
    ):
        return None
    with torch.no_grad():
        err = float((w.detach().double().cpu() - expected).abs().max())
    peak = float(expected.abs().max())
    return candidate.to(w.dtype, w.device) if err <= _TOLERANCE * peak else None


def _version(t: torch.Tensor) -> Optional[int]:
    """``t._version``; None for an inference tensor, which has no version counter."""
    try:
        return t._version
    except RuntimeError:
        return None


class WeightDecision:
    """A decision taken from one conv's weight (how to execute it), cached, and taken again when the
    weight changes: its storage (``data_ptr``), ``_version``, shape, dtype, device, bias and
    geometry, or its values (``.data.copy_`` leaves ``_version`` alone, so the values are compared,
    about as cheap as one frame, unless the owner said its weights are fixed: ``fix_weights``).
    ``decide(conv, how)``: ``how(conv)`` once per weight; its result (None: the plain conv)."""

    def __init__(self) -> None:
        self.key: Optional[tuple] = None
        self.seen: Optional[torch.Tensor] = None  # the weight the decision was taken on
        self.value = None
        self.fixed = False  # the weight is never written in place behind autograd's back: see fix_weights

    def decide(self, conv: nn.Conv1d, how, x: Optional[torch.Tensor] = None):
        w = conv.weight
        if torch.is_grad_enabled() and (w.requires_grad or (x is not None and x.requires_grad)):
            return None  # autograd: the conv, whose weight and input get gradients
        key = (w.data_ptr(), _version(w), w.shape, w.dtype, w.device, conv.bias is None, conv.padding, conv.dilation)
        if key != self.key or self.seen is None or (not self.fixed and not torch.equal(self.seen, w.detach())):
            self.key, self.seen = key, w.detach().clone()
            self.value = how(conv)
        return self.value


class SpectralCache(WeightDecision):
    """``dft_window`` of one conv (or its ``Framing`` ``candidate``), decided once per weight."""

    def __init__(self, candidate: Optional[Framing] = None) -> None:
        super().__init__()
        self.candidate = candidate  # a Framing the weight may be (fbank), checked against the weight

    def window(self, conv: nn.Conv1d, x: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """The window for running ``conv`` on ``x`` as an FFT, or None: run the conv."""
        return self.decide(conv, self._window, x)

    def _window(self, conv: nn.Conv1d) -> Optional[torch.Tensor]:
        return framing_of(conv, self.candidate) if self.candidate is not None else dft_window(conv)


def fix_weights(module: nn.Module) -> nn.Module:
    """Tell every ``WeightDecision`` in ``module`` (FFT windows, filterbank bands) that its weights
    change only through ops that bump their version (``copy_`` under ``no_grad``,
    ``load_state_dict``), never through ``.data``: the engines' stacks, built once and never
    written. Their decisions are then kept while the weight's identity and version stay, without
    comparing its values on every call (a batch job of short files spent about 10% of its main
    thread comparing)."""
    for sub in module.modules():
        for value in vars(sub).values():
            if isinstance(value, WeightDecision):
                value.fixed = True
    return module


@contextmanager
def one_thread(serial: bool = True) -> Iterator[None]:
    """torch on one intra-op thread inside the block (when ``serial``), restored after. MKL's FFT
    forks its threads for a batch of any size, and a fork waits for every thread to be scheduled:
    on a busy machine that is milliseconds per call, far more than a small FFT costs."""
    threads = torch.get_num_threads()
    if not serial or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def frame_spectra(frames: torch.Tensor, win: torch.Tensor, out: torch.Tensor, power: Optional[float] = None) -> torch.Tensor:
    """``rfft(frames * win)``, ``(..., m, n_fft)`` real (may be an overlapping strided view) ->
    ``out`` ``(..., m, F)``: the complex spectra, or with ``power`` their ``|X| ** power`` (real
    ``out``; the complex values then exist only a block at a time).

    ``BLOCK`` frames at a time, every op on one thread; with more torch threads and at least
    ``SERIAL_FRAMES`` frames, the frames are split into one contiguous part per thread, each
    computed by its own worker: one hand-over instead of a fork per op."""
    m = frames.shape[-2]
    threads = torch.get_num_threads()
    if frames.device.type != "cpu":
        return _spectra_blocks(frames, win, out, power)
    with one_thread():
        if threads == 1 or m * math.prod(frames.shape[:-2]) < SERIAL_FRAMES:
            return _spectra_blocks(frames, win, out, power)
        bounds = [m * i // threads for i in range(threads + 1)]
        inference = torch.is_inference_mode_enabled()  # thread-local, like grad mode: passed on

        def part(a: int, b: int) -> torch.Tensor:
            with torch.inference_mode(inference), torch.no_grad():
                return _spectra_blocks(frames[..., a:b, :], win, out[..., a:b, :], power)

        with ThreadPoolExecutor(threads) as pool:
            parts = [pool.submit(part, a, b) for a, b in zip(bounds, bounds[1:])]
            for done in parts:
                done.result()
    return out


def _spectra_blocks(frames: torch.Tensor, win: torch.Tensor, out: torch.Tensor, power: Optional[float]) -> torch.Tensor:
    """``frame_spectra`` on the calling thread, ``BLOCK`` frames at a time."""
    m, size = frames.shape[-2:]
    work = torch.empty(*frames.shape[:-2], min(m, BLOCK), size, dtype=frames.dtype, device=frames.device)
    framing = isinstance(win, Framing)
    n_fft = win.n_fft if framing else size
    for a in range(0, m, BLOCK):
        b = min(m, a + BLOCK)
        if framing:
            part = win.apply(frames[..., a:b, :], work[..., : b - a, :])
        else:
            part = torch.mul(frames[..., a:b, :], win, out=work[..., : b - a, :])
        if power is None:
            out[..., a:b, :] = torch.fft.rfft(part, n=n_fft, dim=-1)
        else:
            power_into(torch.fft.rfft(part, n=n_fft, dim=-1), power, out[..., a:b, :])
    return out


def power_into(spectra: torch.Tensor, power: float, out: torch.Tensor) -> torch.Tensor:
    """``|spectra| ** power`` (complex ``(..., F)``) into real ``out`` of the same shape; ``spectra``
    is overwritten. ``re * re + im * im`` rounded as ``PairMagnitude`` rounds it: the squares in one
    vectorised pass over the contiguous (re, im) pairs, then their sums (2x the speed of products
    over the stride-2 real and imaginary views)."""
    if power == 1:
        return torch.abs(spectra, out=out)
    parts = torch.view_as_real(spectra)  # (..., F, 2)
    parts.square_()
    torch.add(parts[..., 0], parts[..., 1], out=out)
    return out if power == 2 else out.pow_(power / 2)


def stft_layer(x: torch.Tensor, hop: int, padding: int, win: torch.Tensor, magnitude: Optional[PairMagnitude]) -> torch.Tensor:
    """The DFT conv on ``x`` ``(B, 1, T)``: ``(B, 2F, T')`` (real rows, then imaginary rows) or,
    with ``magnitude``, its ``PairMagnitude`` ``(B, F, T')`` (a transposed view of ``(B, T', F)``)."""
    size = frame_size(win)
    sig = x[:, 0]  # (B, T)
    if padding:
        sig = torch.nn.functional.pad(sig, (padding, padding))
    frames = sig.unfold(-1, size, hop)  # (B, T', size), a view
    n_freq = (win.n_fft if isinstance(win, Framing) else size) // 2 + 1
    if magnitude is not None:
        out = torch.empty(*frames.shape[:2], n_freq, dtype=x.dtype, device=x.device)
        return frame_spectra(frames, win.to(x.dtype), out, magnitude.power).transpose(1, 2)  # (B, T', F) -> (B, F, T')
    spectra = torch.empty(*frames.shape[:2], n_freq, dtype=x.dtype.to_complex(), device=x.device)
    parts = torch.view_as_real(frame_spectra(frames, win.to(x.dtype), spectra))  # (B, T', F, 2)
    return torch.cat([parts[..., 0], parts[..., 1]], dim=-1).transpose(1, 2)  # (B, 2F, T')
