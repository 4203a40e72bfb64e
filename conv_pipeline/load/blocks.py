"""A file decoded block by block, for chunked execution: ``open_blocks`` -> ``BlockReader``.

Flow: source -> **load** -> stack -> execute -> sink -> engines. ``BlockReader`` yields float32
``(channels', n)`` blocks at the file's own rate, ``audio.channels`` applied
(``signal.apply_channel_policy``); ``stream.py`` resamples and normalises them into an
``AudioStream``. Memory holds a few blocks whatever the file's length; the checks and messages are
``load_audio``'s (``audio.py``). Each pass decodes one block ahead on a worker thread
(``prefetch.py``): the next block decodes while the stack computes this one.
"""

from __future__ import annotations

import os
from typing import Generator, Iterator, Optional, Union

import numpy as np
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
    open_decoder,
    probe,
    warn_truncated,
)
from conv_pipeline.load.prefetch import prefetched
from conv_pipeline.load.signal import (
    ChannelPolicy,
    apply_channel_policy,
    capped_block_frames,
    check_resample,
)


# Containers whose libsndfile decoders print nothing on stderr: decoded ahead on a worker thread.
QUIET_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "FLAC", "AIFF", "CAF", "AU", "RAW"})


class BlockReader:
    """A file decoded block by block (``buffer_read_into`` of a ``soundfile.SoundFile`` or an
    ``ffmpeg.FFmpegFile``, as ``info.open_decoder`` opens it), with the channel policy applied.

    Iterating yields float32 ``(channels', n)`` blocks at the file's own rate, ``block_frames``
    frames each (the last may be shorter); every iteration decodes the file again from the
    start. The checks are ``load_audio``'s, with the same messages: a file with NaN/Inf samples
    is read to its end to count them, then refused; a file that decodes to no frames is refused.
    ``frames_read`` holds the frames the last complete iteration decoded (the header can be wrong
    for a truncated file, and is an estimate for FFmpeg inputs). Memory: at most three blocks (one
    with the caller, two decoded ahead), whatever the file's length, each of at most
    ``MAX_BLOCK_BYTES`` (``config/checks.py``) whatever ``block_frames`` and the header's rate say.
    """

    def __init__(self, path: Union[str, os.PathLike], info: AudioInfo, channels: ChannelPolicy, block_frames: int) -> None:
        self.name = path  # as the caller gave it: load_audio's messages name it this way
        self.info = info
        self.policy = channels
        self.channels = int(apply_channel_policy(torch.empty(info.channels, 0), channels, info.path).shape[0])
        self.block_frames = int(block_frames)
        self.frames_read: Optional[int] = None

    @property
    def block_frames(self) -> int:
        return self._block_frames

    @block_frames.setter
    def block_frames(self, frames: int) -> None:
        """At least 1, at most ``MAX_BLOCK_BYTES`` of float32 before or after the channel policy."""
        self._block_frames = capped_block_frames(max(1, int(frames)), 1, max(self.info.channels, self.channels))

    def __iter__(self) -> Iterator[torch.Tensor]:
        """One pass, decoded a block ahead on a worker thread (``prefetch.py``), except for formats
        whose decoders print on stderr (MP3, Ogg): ``NativeStderr`` holds their messages back only
        on the main thread of a single-threaded process."""
        if self.info.decoder == "ffmpeg" or self.info.format.upper() in QUIET_FORMATS:  # FFmpeg's log is off
            return prefetched(self._decode())
        return self._decode()

    def _decode(self) -> Generator[torch.Tensor, None, None]:
        frames, bad = 0, 0
        quiet = NativeStderr()  # around each libsndfile call, never across a yield
        try:
            try:
                with quiet:
                    f = open_decoder(self.info)  # libsndfile or FFmpeg (ffmpeg.py)
            except SF_ERRORS as err:
                raise decode_error(self.info.path, err) from None
            with f:
                while True:
                    data = np.empty((self.block_frames, self.info.channels), np.float32)  # (n, C)
                    try:  # as in audio.py's whole-file decode: libsndfile decides where the audio ends
                        with quiet:
                            got = f.buffer_read_into(data, dtype="float32")
                    except SF_ERRORS as err:
                        raise damaged_error(self.info.path, err) from None
                    if got == 0:
                        break
                    data = data[:got]
                    frames += data.shape[0]
                    finite = np.isfinite(data)
                    if bad or not finite.all():  # count them all, as load_audio does, then refuse
                        bad += int(data.size - np.count_nonzero(finite))
                        continue
                    block = torch.from_numpy(data).t()  # (n, C) -> (C, n), a view
                    yield apply_channel_policy(block, self.policy, self.info.path)
        finally:
            quiet.close()
        if frames == 0:
            raise no_frames_error(self.name, self.info)
        if bad:
            raise non_finite_error(self.name, bad)
        if self.frames_read is None:  # once, however many passes the stream takes
            warn_truncated(self.name, self.info, frames)
        self.frames_read = frames


def open_blocks(path: Union[str, os.PathLike], audio: AudioConfig | None = None, block_frames: int = 16000) -> BlockReader:
    """Check ``path`` and ``audio`` as ``load_audio`` does, from the header alone (missing, empty,
    non-audio, zero frames, a channel index the file lacks, an impossible resampling), and return
    a ``BlockReader``."""
    audio = audio or AudioConfig()
    validate_audio(audio)
    info = probe(path, getattr(audio, "decoder", "auto"))
    if info.frames == 0:
        raise no_frames_error(path, info)
    check_resample(path, info.sample_rate, audio.sample_rate or info.sample_rate, getattr(audio, "resampler", "torchaudio"))
    return BlockReader(path, info, audio.channels, block_frames)
