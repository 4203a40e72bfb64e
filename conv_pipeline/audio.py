"""Loading audio: decode (soundfile), channel policy, resample (torchaudio).

Any format libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, AU; 8/16/24/32-bit integer, float,
A-law/µ-law) decodes to float32 ``(channels, frames)``. Files are decoded by content, not by
extension.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from .config import AudioConfig, validate_audio
from .errors import InputError

__all__ = [
    "Audio",
    "AudioInfo",
    "BlockReader",
    "probe",
    "load_audio",
    "open_blocks",
    "apply_channel_policy",
    "resample",
    "resampled_length",
    "normalize_waveform",
]

ChannelPolicy = Union[str, Sequence[int]]


@dataclass(frozen=True)
class AudioInfo:
    """What the file's header says."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


@dataclass
class Audio:
    """Decoded audio after the channel policy and resampling.

    ``waveform``: float32 ``(channels, frames)`` at ``sample_rate``; ``info``: the source file's header.
    """

    waveform: torch.Tensor
    sample_rate: int
    info: AudioInfo

    @property
    def frames(self) -> int:
        return int(self.waveform.shape[-1])


def _check_path(path: Union[str, os.PathLike]) -> str:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file; check the path")
    if p.is_dir():
        raise InputError(
            f"{path}: is a directory, expected an audio file (use scripts/batch_process.py for folders)"
        )
    if not os.access(p, os.R_OK):
        raise InputError(f"{path}: permission denied; make the file readable")
    return str(p)


def _decode_error(path: str, err: Exception) -> InputError:
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    detail = detail.replace(f"Error opening {path!r}: ", "").replace(f"Error opening '{path}': ", "")
    return InputError(f"{path}: not a readable audio file ({detail})")


def probe(path: Union[str, os.PathLike]) -> AudioInfo:
    """Read the header only. Raises ``InputError`` for missing, unreadable or non-audio files."""
    spath = _check_path(path)
    if os.path.getsize(spath) == 0:
        raise InputError(f"{path}: empty file (0 bytes), not audio")
    try:
        info = sf.info(spath)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise _decode_error(spath, err) from None
    return AudioInfo(spath, int(info.samplerate), int(info.channels), int(info.frames), info.format, info.subtype)


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


def load_audio(path: Union[str, os.PathLike], audio: AudioConfig | None = None) -> Audio:
    """Decode ``path`` and apply ``audio.channels`` then ``audio.sample_rate``.

    Raises ``InputError`` (one line, naming the file) for a missing, empty, corrupt or
    non-audio file, zero frames, or NaN/Inf samples.
    """
    audio = audio or AudioConfig()
    validate_audio(audio)
    info = probe(path)
    try:
        data, sr = sf.read(info.path, dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise _decode_error(info.path, err) from None
    if data.shape[0] == 0:
        raise InputError(f"{path}: has no audio frames (0 samples)")
    if not np.isfinite(data).all():
        raise _non_finite_error(path, int((~np.isfinite(data)).sum()))
    wave = torch.from_numpy(np.ascontiguousarray(data.T))  # (T, C) -> (C, T)
    wave = apply_channel_policy(wave, audio.channels, info.path)
    target = audio.sample_rate or int(sr)
    wave = resample(wave, int(sr), target)
    if audio.normalize:
        wave = normalize_waveform(wave)
    if data.shape[0] != info.frames:  # header lied (truncated file): say what was decoded
        info = AudioInfo(info.path, info.sample_rate, info.channels, int(data.shape[0]), info.format, info.subtype)
    return Audio(wave.contiguous(), target, info)


def _non_finite_error(path: Union[str, os.PathLike], bad: int) -> InputError:
    return InputError(f"{path}: contains {bad} NaN or Inf sample(s); repair or drop the file")


class BlockReader:
    """A file decoded block by block (``SoundFile.read``), with the channel policy applied.

    Iterating yields float32 ``(channels', n)`` blocks at the file's own rate, ``block_frames``
    frames each (the last may be shorter); every iteration decodes the file again from the
    start. The checks are ``load_audio``'s, with the same messages: a file with NaN/Inf samples
    is read to its end to count them, then refused; a file that decodes to no frames is refused.
    ``frames_read`` holds the frames the last complete iteration decoded (the header can be wrong
    for a truncated file). Memory: one block, whatever the file's length.
    """

    def __init__(self, path: Union[str, os.PathLike], info: AudioInfo, channels: ChannelPolicy, block_frames: int) -> None:
        self.name = path  # as the caller gave it: load_audio's messages name it this way
        self.info = info
        self.policy = channels
        self.block_frames = max(1, int(block_frames))
        self.channels = int(apply_channel_policy(torch.empty(info.channels, 0), channels, info.path).shape[0])
        self.frames_read: Optional[int] = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        frames, bad = 0, 0
        try:
            with sf.SoundFile(self.info.path) as f:
                while True:
                    data = f.read(self.block_frames, dtype="float32", always_2d=True)  # (n, C)
                    if data.shape[0] == 0:
                        break
                    frames += data.shape[0]
                    finite = np.isfinite(data)
                    if bad or not finite.all():  # count them all, as load_audio does, then refuse
                        bad += int(data.size - np.count_nonzero(finite))
                        continue
                    block = torch.from_numpy(data).t()  # (n, C) -> (C, n), a view
                    yield apply_channel_policy(block, self.policy, self.info.path)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
            raise _decode_error(self.info.path, err) from None
        if frames == 0:
            raise InputError(f"{self.name}: has no audio frames (0 samples)")
        if bad:
            raise _non_finite_error(self.name, bad)
        self.frames_read = frames


def open_blocks(path: Union[str, os.PathLike], audio: AudioConfig | None = None, block_frames: int = 16000) -> BlockReader:
    """Check ``path`` and ``audio`` as ``load_audio`` does, from the header alone (missing, empty,
    non-audio, zero frames, a channel index the file lacks), and return a ``BlockReader``."""
    audio = audio or AudioConfig()
    validate_audio(audio)
    info = probe(path)
    if info.frames == 0:
        raise InputError(f"{path}: has no audio frames (0 samples)")
    return BlockReader(path, info, audio.channels, block_frames)
