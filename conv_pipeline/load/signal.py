"""What is done to a decoded waveform ``(channels, frames)``, and the checks made before it.

Flow: source -> **load** -> stack -> execute -> sink -> engines. Used by ``audio.py`` on the
whole file and by ``blocks.py`` / ``stream.py`` on blocks; nothing else applies these settings.

* ``apply_channel_policy``: ``audio.channels`` (``keep``, ``mono`` or channel indices),
  ``(C, T) -> (C', T)``; the one place the policy is applied.
* ``resample`` and ``resampled_length``: torchaudio's sinc resampler, ``(C, T) -> (C,
  ceil(new * T / orig))``; ``stream.py`` runs the same filter block by block.
* ``normalize_waveform``: ``audio.normalize``, zero mean and unit variance over the file.
* ``check_rate``, ``check_resample`` (``resample_taps``) and ``check_memory``: refuse, before
  anything is allocated, a header rate outside ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE``, an
  upsampling above ``MAX_UPSAMPLE`` or a filter too large for its rates, a file too large to
  load whole; ``capped_block_frames``: a block's frames, at most ``MAX_BLOCK_BYTES`` whatever the rate.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence, Union

import torch
import torchaudio.functional as AF

from conv_pipeline.config.checks import (
    MAX_BLOCK_BYTES,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    available_bytes,
)
from conv_pipeline.errors import InputError

ChannelPolicy = Union[str, Sequence[int]]  # audio.channels: keep, mono or channel indices


# ---------------------------------------------------------------- memory limits
# torchaudio's resampler builds a filter bank of (new / g) x (orig / g + 2 * width) taps for rates
# with greatest common divisor g; rates that share no large factor (a header saying 16001 Hz)
# would need gigabytes. 2**24 taps (64 MB in float32) covers every rate in use: 44100 -> 16000
# needs 76 000 taps, 44056 (NTSC) -> 16000 about 11 million.
MAX_RESAMPLE_TAPS = 1 << 24


_LOWPASS_WIDTH, _ROLLOFF = 6, 0.99  # torchaudio.functional.resample's defaults


def resample_taps(orig: int, new: int) -> int:
    """Taps of the filter bank ``torchaudio.functional.resample`` builds for ``orig -> new`` Hz."""
    if orig == new:
        return 0
    g = math.gcd(int(orig), int(new))
    o, n = int(orig) // g, int(new) // g
    width = math.ceil(_LOWPASS_WIDTH * o / (min(o, n) * _ROLLOFF))
    return n * (o + 2 * width)


# Upsampling makes every sample many: a ratio above this is a header that lies, not audio.
MAX_UPSAMPLE = 32


def check_rate(path: Union[str, os.PathLike], rate: int) -> None:
    """``InputError`` for a header rate outside ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE``."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InputError(
            f"{path}: its header says {rate} Hz, outside the rates this tool takes ({MIN_SAMPLE_RATE}.."
            f"{MAX_SAMPLE_RATE} Hz): the header is damaged or the file is not audio; repair or re-encode it"
        )


def check_resample(path: Union[str, os.PathLike], orig: int, new: int) -> None:
    """``InputError`` when ``orig -> new`` Hz upsamples more than ``MAX_UPSAMPLE`` times or needs
    more than ``MAX_RESAMPLE_TAPS`` filter taps."""
    if new > MAX_UPSAMPLE * orig:
        raise InputError(
            f"{path}: resampling {orig} Hz to {new} Hz multiplies the samples by {new / orig:.0f}, more than "
            f"the {MAX_UPSAMPLE}x this tool allows; set audio.sample_rate=null to keep its own rate, or "
            "convert the file first"
        )
    taps = resample_taps(orig, new)
    if taps > MAX_RESAMPLE_TAPS:
        raise InputError(
            f"{path}: resampling {orig} Hz to {new} Hz needs a filter of {taps / 1e6:.0f} million taps "
            f"({4 * taps / 2**30:.1f} GiB: the two rates share no large common factor); convert the file "
            "to a standard rate first, or set audio.sample_rate=null to keep its own rate"
        )


def _available_bytes() -> Optional[int]:
    """Memory available now (``config.checks.available_bytes``); tests replace it."""
    return available_bytes()


def check_memory(path: Union[str, os.PathLike], nbytes: int, what: str) -> None:
    """``InputError`` when ``nbytes`` (for ``what``) exceed the memory available, before allocating."""
    avail = _available_bytes()
    if avail is not None and nbytes > avail:
        raise InputError(
            f"{path}: too large to load whole ({what} needs {nbytes / 2**30:.1f} GiB, "
            f"{avail / 2**30:.1f} GiB available); set runtime.chunk_seconds (e.g. 30) to stream it"
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
        return waveform.mean(dim=0, keepdim=True)  # (C, T) -> (1, T)
    n = waveform.shape[0]
    bad = [c for c in channels if c >= n]
    if bad:
        raise InputError(
            f"{path}: audio.channels={list(channels)} selects channel {bad[0]} but the file has {n} "
            f"channel(s) (indices 0..{n - 1}); fix audio.channels"
        )
    return waveform[list(channels)]  # (C, T) -> (len(channels), T)


def resample(waveform: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """``(channels, frames)`` at ``orig`` Hz -> ``(channels, frames')`` at ``new`` Hz (torchaudio)."""
    if orig == new:
        return waveform
    return AF.resample(waveform, orig_freq=orig, new_freq=new)


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
