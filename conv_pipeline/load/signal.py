"""What is done to a decoded waveform ``(channels, frames)``, and the checks made before it.

Flow: source -> **load** -> stack -> execute -> sink -> engines. Used by ``audio.py`` on the
whole file and by ``blocks.py`` / ``stream.py`` on blocks; nothing else applies these settings.

* ``apply_channel_policy``: ``audio.channels`` (``keep``, ``mono`` or channel indices),
  ``(C, T) -> (C', T)``; the one place the policy is applied.
* ``resample`` and ``resampled_length``: ``audio.resampler``, ``(C, T) -> (C, ceil(new * T / orig))``:
  torchaudio's sinc filter over its non-zero taps (``polyphase.py``, equal to
  ``torchaudio.functional.resample``) or libsoxr (``soxr_backend.py``); ``stream.py`` runs the
  same filters block by block.
* ``normalize_waveform``: ``audio.normalize``, zero mean and unit variance over the file.
* ``check_resample`` (``resample_taps``), with ``decode.py: check_memory``: refuse, before anything is
  allocated, an upsampling above ``MAX_UPSAMPLE`` or a filter too large for its rates, a file too
  large to load whole (the header's rate is checked by ``info.check_rate``);
  ``capped_block_frames``: a block's frames, at most ``MAX_BLOCK_BYTES`` whatever the rate.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence, Union

import torch

from conv_pipeline.config.checks import MAX_BLOCK_BYTES
from conv_pipeline.errors import InputError
from conv_pipeline.load.polyphase import filter_weights, polyphase_filter
from conv_pipeline.load.soxr_backend import soxr_resample

ChannelPolicy = Union[str, Sequence[int]]  # audio.channels: keep, mono or channel indices


# ---------------------------------------------------------------- memory limits
# The resampler's filter (polyphase.py) holds, per group of output phases, the taps over the
# stretch of input they share: about 2 x 12 x new x orig / min(orig, new) numbers for rates
# reduced by their greatest common divisor (torchaudio's dense bank held new x (orig + 2 x width)).
# 2**24 (64 MB in float32) covers every rate in use (44100 -> 16000: 13 000; 44056 -> 16000:
# 160 000; even 16001 -> 16000: 0.5 million, 256 million for torchaudio); rates no real file
# has (999983 Hz -> 16 kHz: 25 million) are refused before anything is built.
MAX_RESAMPLE_TAPS = 1 << 24


def resample_taps(orig: int, new: int) -> int:
    """Numbers (at most) in the filter ``resample`` builds for ``orig -> new`` Hz (``polyphase.filter_weights``)."""
    if orig == new:
        return 0
    return filter_weights(int(orig), int(new))


# Upsampling makes every sample many: a ratio above this is a header that lies, not audio.
MAX_UPSAMPLE = 32


def check_resample(path: Union[str, os.PathLike], orig: int, new: int, resampler: str = "torchaudio") -> None:
    """``InputError`` when ``orig -> new`` Hz upsamples more than ``MAX_UPSAMPLE`` times or (with
    ``resampler=torchaudio``) needs more than ``MAX_RESAMPLE_TAPS`` filter taps."""
    if new > MAX_UPSAMPLE * orig:
        raise InputError(
            f"{path}: resampling {orig} Hz to {new} Hz multiplies the samples by {new / orig:.0f}, more than "
            f"the {MAX_UPSAMPLE}x this tool allows; set audio.sample_rate=null to keep its own rate, or "
            "convert the file first"
        )
    taps = resample_taps(orig, new) if resampler == "torchaudio" else 0
    if taps > MAX_RESAMPLE_TAPS:
        raise InputError(
            f"{path}: resampling {orig} Hz to {new} Hz needs a filter of {taps / 1e6:.0f} million taps "
            f"({4 * taps / 2**30:.1f} GiB: the two rates share no large common factor); convert the file "
            "to a standard rate first, set audio.resampler=soxr, or set audio.sample_rate=null to keep its own rate"
        )


def capped_block_frames(seconds: float, rate: int, channels: int, ratio: float = 1.0) -> int:
    """Frames per decoded block: ``seconds`` at ``rate``, capped so that the block holds at most
    ``MAX_BLOCK_BYTES`` of float32 over ``channels`` (the most it has, before or after the channel
    policy), also once resampled by ``ratio`` (new / orig rate)."""
    cap = max(1, int(MAX_BLOCK_BYTES // (4 * max(1, channels) * max(1.0, ratio))))
    want = seconds * rate
    return max(1, min(cap, round(want) if want < cap else cap))


def apply_channel_policy(waveform: torch.Tensor, channels: ChannelPolicy, path: str = "audio") -> torch.Tensor:
    """``waveform`` ``(channels, frames)`` -> ``(channels', frames)``.

    ``keep``: unchanged; ``mono``: the mean of all channels, ``(1, frames)``; a list of indices:
    those channels in that order.
    """
    if channels == "keep":
        return waveform
    if channels == "mono":
        if waveform.shape[0] == 2 and waveform.dtype in (torch.float32, torch.float64):
            # (a + b) / 2 as the mean computes it (one sum, then an exact halving), without a
            # reduction over the 2-long channel axis, which is slow on the decoder's interleaved
            # layout (a (C, T) view of (T, C)): 10x faster, equal bit for bit
            return torch.add(waveform[0], waveform[1]).mul_(0.5)[None]  # (2, T) -> (1, T)
        return waveform.mean(dim=0, keepdim=True)  # (C, T) -> (1, T)
    n = waveform.shape[0]
    bad = [c for c in channels if c >= n]
    if bad:
        raise InputError(
            f"{path}: audio.channels={list(channels)} selects channel {bad[0]} but the file has {n} "
            f"channel(s) (indices 0..{n - 1}); fix audio.channels"
        )
    return waveform[list(channels)]  # (C, T) -> (len(channels), T)


def resample(waveform: torch.Tensor, orig: int, new: int, resampler: str = "torchaudio") -> torch.Tensor:
    """``(channels, frames)`` at ``orig`` Hz -> ``(channels, ceil(new * frames / orig))`` at ``new`` Hz.

    ``resampler``: ``torchaudio`` (its filter over the non-zero taps only, equal to
    ``torchaudio.functional.resample`` within 1e-6) or ``soxr`` (libsoxr "HQ"; not equal).
    Memory: the result plus a few MB, whatever the length.
    """
    if orig == new:
        return waveform
    frames = resampled_length(int(waveform.shape[-1]), orig, new)
    if resampler == "soxr":
        return soxr_resample(waveform, orig, new, frames)
    if not waveform.is_floating_point():
        raise TypeError(f"resample needs a floating-point waveform, got {waveform.dtype}")
    filt = polyphase_filter(int(orig), int(new), waveform.dtype, waveform.device)
    windows = -(-frames // filt.new)
    x = waveform.reshape(-1, int(waveform.shape[-1]))  # (..., T) -> (C, T)
    out = x.new_empty(int(x.shape[0]), windows * filt.new)
    with torch.no_grad():
        filt.run(x, -filt.width, windows, out)  # window m starts at sample m * orig - width
    return out[:, :frames].reshape(*waveform.shape[:-1], frames)


def resampled_length(frames: int, orig: int, new: int) -> int:
    """Frames torchaudio's resample gives: ``ceil(new * frames / orig)``."""
    if orig == new:
        return frames
    g = math.gcd(orig, new)
    return -(-(new // g) * frames // (orig // g))


NORMALIZE_EPS = 1e-7


def normalize_waveform(waveform: torch.Tensor, stats: Optional[tuple[float, float]] = None) -> torch.Tensor:
    """Zero mean, unit variance over the whole file (all channels): ``(x - mean) / sqrt(var + 1e-7)``,
    the input convention of wav2vec2/HuBERT models (Hugging Face ``do_normalize``). Statistics in float64.

    ``stats``: the whole file's ``(mean, var)`` when ``waveform`` is only a block of it (chunked
    execution computes them in a first pass); by default they are computed from ``waveform``.
    """
    x = waveform.double()
    if stats is None:
        mean, var = x.mean(), x.var(unbiased=False)
    else:
        mean, var = (torch.tensor(v, dtype=torch.float64, device=x.device) for v in stats)
    return ((x - mean) / torch.sqrt(var + NORMALIZE_EPS)).to(waveform.dtype)
