"""Decoding with FFmpeg through PyAV: the header (``probe_ffmpeg``) and the samples (``FFmpegFile``), without torch.

Flow: source -> **load** -> stack -> execute -> sink -> engines. What libsndfile cannot read (AAC
in ``.m4a``/``.mp4``/``.aac``, Opus or Vorbis in WebM/Matroska, the first audio stream of a video
file, ALAC, WMA) is decoded by FFmpeg's libavformat and libavcodec, through PyAV (the ``av``
package, whose wheels bundle FFmpeg: ``pip install 'conv_pipeline[ffmpeg]'``). ``info.probe``
picks the decoder (``audio.decoder``: ``auto``, ``soundfile`` or ``ffmpeg``); ``audio.py`` and
``blocks.py`` read an ``FFmpegFile`` exactly as they read a ``soundfile.SoundFile``
(``buffer_read_into`` of float32 ``(n, channels)`` blocks), so the whole-file load, the
block-by-block stream, the channel policy, resampling and the checks are the same code.

The samples are what FFmpeg's decoder returns, in order, converted to float32 (integer formats
scaled as libsndfile does: ``x / 2**15`` for 16-bit, ``x / 2**31`` for 32-bit). Codec priming and
padding are handled the way FFmpeg reports them, as ``ffmpeg -i in.m4a out.wav`` does:
libavcodec drops the samples the container marks as priming (the ``skip_samples`` FFmpeg derives
from an MP4 edit list, Opus pre-skip / Matroska CodecDelay, a LAME/Xing gapless header) and the
padding it marks at the end (WebM DiscardPadding, the last Ogg granule); the decoded frames' pts
then start at the stream's ``start_time``. Priming a container does not mark (AAC in an MP4 without
an edit list, raw ``.aac``) is not marked as such by FFmpeg either and is kept, as is the
encoder's padding of the last AAC frame (up to 1023 samples past the edit list's duration).

The frame count in the header (``AudioInfo.frames``) is an estimate for FFmpeg inputs
(``frames_exact=False``): the container's stream or file duration times the rate, at least the
first frame's samples. Nothing needs the exact count up front: the whole-file buffer grows as it
fills, and chunked runs preallocate with the estimate and keep the true count
(``sink.writer.write_features_stream``); ``frames_read`` is exact after a pass. Getting the exact
count up front would mean decoding every file twice. The probe decodes the first audio frame, so a
file FFmpeg opens but cannot decode, and an HE-AAC stream whose header names the core rate, are
known from the header. FFmpeg's log is switched off (``av.logging.set_level(None)``): decoder
messages never reach stderr; problems are one-line ``InputError``s.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import IO, Any, Optional, Union

import numpy as np

from conv_pipeline.errors import InputError

# Extensions ``audio.decoder=auto`` sends to FFmpeg without trying libsndfile (it reads none of them).
FFMPEG_EXTENSIONS = frozenset({
    ".m4a", ".m4b", ".mp4", ".m4v", ".mov", ".3gp", ".aac", ".adts", ".webm", ".mkv", ".mka", ".wma", ".wmv",
    ".asf", ".avi", ".flv", ".ac3", ".eac3", ".ts",
})

INSTALL_HINT = "pip install 'conv_pipeline[ffmpeg]'"

# Integer sample formats and the divisor libsndfile uses for them (float formats pass as they are).
_SCALE = {np.dtype(np.uint8): 128.0, np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31,
          np.dtype(np.int64): 2.0**63}

_QUIETED = False


def load_av(name: Union[str, os.PathLike]) -> Any:
    """The ``av`` module with FFmpeg's log switched off; ``InputError`` naming ``name`` when PyAV is missing."""
    global _QUIETED
    try:
        import av
        import av.logging
    except ImportError:
        raise InputError(
            f"{name}: needs FFmpeg to decode (libsndfile cannot read it) and PyAV is not installed: {INSTALL_HINT}, "
            "or convert the file to WAV or FLAC"
        ) from None
    if not _QUIETED:
        av.logging.set_level(None)  # PyAV drops FFmpeg's messages: nothing on stderr
        _QUIETED = True
    return av


def ffmpeg_detail(err: BaseException) -> str:
    """FFmpeg's reason for ``err`` in a few words, without the file name PyAV appends."""
    text = str(err).strip()
    reason = getattr(err, "strerror", None) or (text.splitlines()[0] if text else type(err).__name__)
    return f"FFmpeg: {reason}"


def ffmpeg_errors(av: Any) -> tuple:
    """What PyAV raises for a file it cannot open or decode."""
    return (av.FFmpegError, OSError, ValueError, EOFError)


def _audio_stream(container: Any, name: Union[str, os.PathLike]) -> Any:
    """The first audio stream; ``InputError`` naming what the file holds when it has none."""
    if container.streams.audio:
        return container.streams.audio[0]
    kinds = [f"{s.type} ({s.codec_context.name})" if s.codec_context is not None else str(s.type)
             for s in container.streams]
    held = ", ".join(kinds) if kinds else "no streams at all"
    raise InputError(f"{name}: has no audio stream (FFmpeg finds {held}); give a file with an audio track")


def _channels(frame: Any) -> int:
    layout = frame.layout
    return int(getattr(layout, "nb_channels", 0) or len(layout.channels))


def frame_samples(frame: Any, channels: int) -> np.ndarray:
    """One decoded ``av.AudioFrame`` as float32 ``(n, channels)``."""
    a = frame.to_ndarray()  # planar: (C, n); packed: (1, n * C)
    a = a.T if frame.format.is_planar else a.reshape(-1, channels)
    scale = _SCALE.get(a.dtype)
    if scale is None:
        return a.astype(np.float32, copy=False)
    if a.dtype == np.uint8:
        return ((a.astype(np.float32) - 128.0) / np.float32(scale)).astype(np.float32)
    return (a.astype(np.float64) / scale).astype(np.float32)


def _estimate(container: Any, stream: Any, rate: int, first: int) -> int:
    """Frames the container's durations suggest (stream first, then the file's), at least ``first``."""
    seconds: Optional[Fraction] = None
    if stream.duration and stream.time_base:
        seconds = stream.duration * stream.time_base
    elif container.duration:
        seconds = Fraction(int(container.duration), 1_000_000)  # AV_TIME_BASE
    return max(first, int(round(seconds * rate)) if seconds else 0)


def open_error(name: Union[str, os.PathLike], err: BaseException) -> InputError:
    """FFmpeg could not open ``name`` (its container)."""
    return InputError(
        f"{name}: not a readable audio file ({ffmpeg_detail(err)}): truncated, damaged or not a media file; "
        "repair or re-encode it"
    )


def probe_ffmpeg(source: Union[str, IO[bytes]], name: Union[str, os.PathLike]) -> tuple:
    """The header of ``source`` (a local path or a binary file object) as FFmpeg reads it:
    ``(sample_rate, channels, frames_estimate, container, codec)``. Decodes the first audio frame.
    ``InputError`` (naming ``name``) for a file FFmpeg cannot open, without an audio stream, or
    whose first frame does not decode."""
    av = load_av(name)
    errors = ffmpeg_errors(av)
    try:
        container = av.open(source, "r")
    except errors as err:
        raise open_error(name, err) from None
    with container:
        stream = _audio_stream(container, name)
        try:
            frame = next(iter(container.decode(stream)), None)
        except errors as err:
            raise InputError(
                f"{name}: decoding failed ({ffmpeg_detail(err)}): the audio data is truncated or corrupt; "
                "repair or re-encode it"
            ) from None
        if frame is None:
            raise InputError(f"{name}: has no audio frames (its {stream.codec_context.name} stream decodes to nothing)")
        rate, channels = int(frame.sample_rate), _channels(frame)
        frames = _estimate(container, stream, rate, int(frame.samples))
        return rate, channels, frames, container.format.name.split(",")[0], stream.codec_context.name


class FFmpegFile:
    """The first audio stream of ``path``, read like a ``soundfile.SoundFile``:
    ``buffer_read_into(out)`` fills float32 ``out`` ``(k, channels)`` from the start and returns the
    frames it wrote (0 at the end). Holds one decoded frame beyond what it handed out.
    ``InputError`` (naming ``name``) when decoding fails or the stream changes its rate or
    channel count midway (``rate``, ``channels``: the probe's)."""

    def __init__(self, path: str, name: Union[str, os.PathLike], rate: int, channels: int) -> None:
        self.av = load_av(name)
        self.errors = ffmpeg_errors(self.av)
        self.name, self.rate, self.channels = name, int(rate), int(channels)
        try:
            self.container = self.av.open(path, "r")
        except self.errors as err:
            raise open_error(name, err) from None
        self.frames = self.container.decode(_audio_stream(self.container, name))
        self.pending = np.zeros((0, self.channels), np.float32)  # decoded, not yet handed out

    def __enter__(self) -> "FFmpegFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    def _next(self) -> Optional[np.ndarray]:
        try:
            frame = next(self.frames, None)
        except self.errors as err:
            raise InputError(
                f"{self.name}: decoding failed ({ffmpeg_detail(err)}): the audio data is truncated or corrupt; "
                "repair or re-encode it"
            ) from None
        if frame is None:
            return None
        if int(frame.sample_rate) != self.rate or _channels(frame) != self.channels:
            raise InputError(
                f"{self.name}: changes from {self.rate} Hz, {self.channels} channel(s) to {frame.sample_rate} Hz, "
                f"{_channels(frame)} channel(s) midway; re-encode it with one rate and channel count"
            )
        return frame_samples(frame, self.channels)

    def buffer_read_into(self, out: np.ndarray, dtype: str = "float32") -> int:
        """Fill ``out`` float32 ``(k, channels)``; the frames written (fewer only at the end)."""
        n = 0
        while n < out.shape[0]:
            if not self.pending.shape[0]:
                block = self._next()
                if block is None:
                    break
                self.pending = block
            k = min(out.shape[0] - n, self.pending.shape[0])
            out[n : n + k] = self.pending[:k]
            self.pending = self.pending[k:]
            n += k
        return n
