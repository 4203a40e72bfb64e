"""Decoding a whole file: the waveform (``load_audio`` -> ``Audio``).

Flow: source -> **load** -> stack -> execute -> sink -> engines. ``load_audio(path, audio)``
returns ``Audio``: ``waveform`` float32 ``(channels, frames)`` at ``audio.sample_rate`` (or the
file's own rate), after ``signal.py``'s channel policy, resampling and optional normalisation;
``execute/whole.py`` runs the stack on it. Chunked execution reads the file through
``blocks.py`` and ``stream.py`` instead, with the same checks and messages.

Any format libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, AU; 8/16/24/32-bit integer, float,
A-law/µ-law) decodes to float32 ``(channels, frames)``, and what it cannot read goes to FFmpeg
(``ffmpeg.py``: AAC, Opus/Vorbis in WebM, the audio of a video, ALAC, WMA; ``audio.decoder``).
Files are decoded by content; only ``audio.decoder=auto`` looks at the extension, to send
FFmpeg-only containers (``.m4a``, ``.mp4``, ``.webm``, ...) straight to FFmpeg. Every problem
with a file is a one-line ``InputError`` naming it. The header (``probe`` -> ``AudioInfo``, both
re-exported here), the error builders and the decoders live in the torch-free ``info.py``,
``ffmpeg.py`` and ``decode.py``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from conv_pipeline.config.checks import validate_audio
from conv_pipeline.config.schema import AudioConfig
from conv_pipeline.load.info import AudioInfo, no_frames_error, non_finite_error, probe, warn_truncated
from conv_pipeline.load.decode import check_memory, decode_frames
from conv_pipeline.load.signal import (
    apply_channel_policy,
    check_resample,
    normalize_waveform,
    resample,
    resampled_length,
)

__all__ = ["Audio", "AudioInfo", "load_audio", "probe"]


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


def load_audio(path: Union[str, os.PathLike], audio: AudioConfig | None = None, info: AudioInfo | None = None) -> Audio:
    """Decode ``path`` and apply ``audio.channels`` then ``audio.sample_rate``.

    Raises ``InputError`` (one line, naming the file) for a missing, empty, corrupt, truncated or
    non-audio file, a FIFO or device, zero frames, NaN/Inf samples, a resampling the rates make
    impossible, or a file too large for the memory available (``runtime.chunk_seconds`` streams
    it). A file shorter than its header says (a truncated WAV) is decoded as far as it goes, with
    a warning. ``info``: the file's header when the caller has just read it (``probe`` with
    ``audio.decoder``), so it is not read twice.
    """
    audio = audio or AudioConfig()
    validate_audio(audio)
    if info is None:
        info = probe(path, getattr(audio, "decoder", "auto"))
    target = audio.sample_rate or info.sample_rate
    resampler = getattr(audio, "resampler", "torchaudio")
    check_resample(path, info.sample_rate, target, resampler)
    data = decode_frames(path, info)  # (T, C)
    if data.shape[0] == 0:
        raise no_frames_error(path, info)
    if not np.isfinite(np.add.reduce(data, axis=None)):  # one pass, no mask: a finite sum has no NaN/Inf
        finite = np.isfinite(data)  # NaN/Inf, or finite values whose sum overflows: count exactly
        if not finite.all():
            raise non_finite_error(path, int(data.size - np.count_nonzero(finite)))
        del finite
    decoded = int(data.shape[0])
    warn_truncated(path, info, decoded)
    # (T, C) -> (C, T) as a view: the channel policy reads it where it is, and only what it keeps
    # is copied (nothing more for a stereo file mixed to mono)
    wave = torch.from_numpy(data).T
    del data
    if not isinstance(audio.channels, str) and len(audio.channels) > wave.shape[0]:
        check_memory(path, 4 * len(audio.channels) * decoded, f"audio.channels: {len(audio.channels)} channel(s) x {decoded} frames")
    wave = apply_channel_policy(wave, audio.channels, info.path).contiguous()  # (C', T), rows of unit stride
    if target != info.sample_rate:
        n_out = resampled_length(int(wave.shape[-1]), info.sample_rate, target)
        check_memory(path, 3 * 4 * n_out * int(wave.shape[0]), f"resampling to {n_out} frames")
    wave = resample(wave, info.sample_rate, target, resampler)
    if audio.normalize:
        wave = normalize_waveform(wave)
    if decoded != info.frames:  # the header was wrong (truncated file): say what was decoded
        info = dataclasses.replace(info, frames=decoded)
    return Audio(wave.contiguous(), target, info)
