"""Decoding a whole file: the waveform (``load_audio`` -> ``Audio``).

Flow: source -> **load** -> stack -> execute -> sink -> engines. ``load_audio(path, audio)``
returns ``Audio``: ``waveform`` float32 ``(channels, frames)`` at ``audio.sample_rate`` (or the
file's own rate), after ``signal.py``'s channel policy, resampling and optional normalisation;
``execute/whole.py`` runs the stack on it. Chunked execution reads the file through
``blocks.py`` and ``stream.py`` instead, with the same checks and messages.

Any format libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, AU; 8/16/24/32-bit integer, float,
A-law/µ-law) decodes to float32 ``(channels, frames)``. Files are decoded by content, not by
extension. Every problem with a file is a one-line ``InputError`` naming it. The header
(``probe`` -> ``AudioInfo``), the error builders and the libsndfile helpers live in the
torch-free ``info.py`` and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Union

import numpy as np
import soundfile as sf
import torch

from conv_pipeline.config.checks import validate_audio
from conv_pipeline.config.schema import AudioConfig
from conv_pipeline.load.info import (
    SF_ERRORS,
    AudioInfo,
    NativeStderr,
    damaged_error,
    decode_error,
    no_frames_error,
    non_finite_error,
    probe,
    rewind,
    sf_name,
    warn_truncated,
)
from conv_pipeline.load.signal import (
    apply_channel_policy,
    check_memory,
    check_resample,
    normalize_waveform,
    resample,
    resampled_length,
)

__all__ = [
    "Audio", "AudioInfo", "load_audio", "probe", "SF_ERRORS", "NativeStderr", "damaged_error", "decode_error",
    "no_frames_error", "non_finite_error", "rewind", "sf_name", "warn_truncated",
]


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


# Blocks of the whole-file decoder; the buffer starts at the header's frame count, capped at
# this many samples per byte of file (a header can claim anything; a real codec's silence can
# exceed it, and the buffer then grows).
_DECODE_BLOCK = 1 << 16


_SAMPLES_PER_BYTE = 64


def _decode_whole(name: Union[str, os.PathLike], info: AudioInfo) -> np.ndarray:
    """Every frame of the file, float32 ``(T, C)``, read block by block into a buffer sized from the
    header (as far as the file's size makes it plausible), so a header that lies allocates nothing
    it claims."""
    c = info.channels
    size = os.path.getsize(info.path)
    capacity = max(1, min(info.frames, _SAMPLES_PER_BYTE * size // c))
    check_memory(name, 4 * capacity * c, f"{capacity} frames x {c} channel(s)")
    out = np.empty((capacity, c), np.float32)
    n = 0
    quiet = NativeStderr()
    try:
        with quiet:  # nothing is yielded inside: one redirection for the whole decode
            try:
                f = sf.SoundFile(sf_name(info.path))
                rewind(f)
            except SF_ERRORS as err:
                raise decode_error(info.path, err) from None
            with f:
                while True:
                    if n == out.shape[0]:
                        check_memory(name, 8 * n * c, f"more than {n} frames x {c} channel(s)")
                        grown = np.empty((2 * n, c), np.float32)
                        grown[:n] = out
                        out = grown
                    k = min(_DECODE_BLOCK, out.shape[0] - n)
                    try:  # libsndfile decides where the audio ends (SoundFile.read stops at the header's count)
                        got = f.buffer_read_into(out[n : n + k], dtype="float32")
                    except SF_ERRORS as err:
                        raise damaged_error(info.path, err) from None
                    if got == 0:
                        break
                    n += got
    finally:
        quiet.close()
    return out[:n]


def load_audio(path: Union[str, os.PathLike], audio: AudioConfig | None = None) -> Audio:
    """Decode ``path`` and apply ``audio.channels`` then ``audio.sample_rate``.

    Raises ``InputError`` (one line, naming the file) for a missing, empty, corrupt, truncated or
    non-audio file, a FIFO or device, zero frames, NaN/Inf samples, a resampling the rates make
    impossible, or a file too large for the memory available (``runtime.chunk_seconds`` streams
    it). A file shorter than its header says (a truncated WAV) is decoded as far as it goes, with
    a warning.
    """
    audio = audio or AudioConfig()
    validate_audio(audio)
    info = probe(path)
    target = audio.sample_rate or info.sample_rate
    resampler = getattr(audio, "resampler", "torchaudio")
    check_resample(path, info.sample_rate, target, resampler)
    data = _decode_whole(path, info)  # (T, C)
    if data.shape[0] == 0:
        raise no_frames_error(path, info)
    finite = np.isfinite(data)
    if not finite.all():
        raise non_finite_error(path, int(data.size - np.count_nonzero(finite)))
    del finite
    decoded = int(data.shape[0])
    warn_truncated(path, info, decoded)
    wave = torch.from_numpy(np.ascontiguousarray(data.T))  # (T, C) -> (C, T)
    del data
    if not isinstance(audio.channels, str) and len(audio.channels) > wave.shape[0]:
        check_memory(path, 4 * len(audio.channels) * decoded, f"audio.channels: {len(audio.channels)} channel(s) x {decoded} frames")
    wave = apply_channel_policy(wave, audio.channels, info.path)
    if target != info.sample_rate:
        n_out = resampled_length(int(wave.shape[-1]), info.sample_rate, target)
        check_memory(path, 3 * 4 * n_out * int(wave.shape[0]), f"resampling to {n_out} frames")
    wave = resample(wave, info.sample_rate, target, resampler)
    if audio.normalize:
        wave = normalize_waveform(wave)
    if decoded != info.frames:  # the header was wrong (truncated file): say what was decoded
        info = dataclasses.replace(info, frames=decoded)
    return Audio(wave.contiguous(), target, info)
