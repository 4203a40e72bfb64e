"""Decoding a whole file to float32 samples, and the memory check made before allocating; no torch.

Flow: source -> **load** -> stack -> execute -> sink -> engines. ``decode_frames(name, info)``
returns every frame of a probed file (``info.py: probe``) as float32 ``(frames, channels)``, read
block by block into a buffer sized from the header; ``audio.py: load_audio`` turns it into a
waveform (``info.py`` and this module import no torch, so a decode needs none). ``check_memory``
refuses (one-line ``InputError``) a request larger than the memory available, before anything is
allocated; ``audio.py``, ``blocks.py`` and ``signal.py`` use it too.
"""

from __future__ import annotations

import os
import time
from typing import Optional, Union

import numpy as np

from conv_pipeline.config.checks import available_bytes
from conv_pipeline.errors import InputError
from conv_pipeline.load.info import (
    ESTIMATE_SLACK_S,
    SF_ERRORS,
    AudioInfo,
    NativeStderr,
    damaged_error,
    decode_error,
    open_decoder,
)


def _available_bytes() -> Optional[int]:
    """Memory available now (``config.checks.available_bytes``); tests replace it."""
    return available_bytes()


# A reading of the memory available is reused for this long by requests under 1/REUSE_SHARE of it:
# a batch job decoding thousands of short files otherwise spent 13% of its decode threads reading
# /proc and cgroup files (issue 13); a large request always reads afresh.
REUSE_S = 0.5
REUSE_SHARE = 16
_last_reading: list = [None, 0.0, None]  # (the reader, when, bytes available)


def _recent_available(nbytes: int) -> Optional[int]:
    """``_available_bytes()``, or its reading of the last ``REUSE_S`` seconds when ``nbytes`` is a
    small share of it (threads may race here: each then reads afresh, never wrongly)."""
    reader, when, avail = _last_reading
    now = time.monotonic()
    if reader is _available_bytes and avail is not None and now - when < REUSE_S and nbytes * REUSE_SHARE <= avail:
        return avail
    avail = _available_bytes()
    _last_reading[:] = [_available_bytes, now, avail]
    return avail


def check_memory(path: Union[str, os.PathLike], nbytes: int, what: str) -> None:
    """``InputError`` when ``nbytes`` (for ``what``) exceed the memory available, before allocating."""
    avail = _recent_available(nbytes)
    if avail is not None and nbytes > avail:
        raise InputError(
            f"{path}: too large to load whole ({what} needs {nbytes / 2**30:.1f} GiB, "
            f"{avail / 2**30:.1f} GiB available); set runtime.chunk_seconds (e.g. 30) to stream it"
        )


# Blocks of the whole-file decoder; the buffer starts at the header's frame count, capped at
# this many samples per byte of file (a header can claim anything; a real codec's silence can
# exceed it, and the buffer then grows).
_DECODE_BLOCK = 1 << 16


_SAMPLES_PER_BYTE = 64


def decode_frames(name: Union[str, os.PathLike], info: AudioInfo) -> np.ndarray:
    """Every frame of the file, float32 ``(T, C)``, read block by block into a buffer sized from the
    header (as far as the file's size makes it plausible), so a header that lies allocates nothing
    it claims."""
    c = info.channels
    size = os.path.getsize(info.path)
    expected = info.frames if info.frames_exact else info.frames + int(ESTIMATE_SLACK_S * info.sample_rate)
    capacity = max(1, min(expected, _SAMPLES_PER_BYTE * size // c))  # an estimate (FFmpeg) gets its slack
    check_memory(name, 4 * capacity * c, f"{capacity} frames x {c} channel(s)")
    out = np.empty((capacity, c), np.float32)
    n = 0
    quiet = NativeStderr()
    try:
        with quiet:  # nothing is yielded inside: one redirection for the whole decode
            try:
                f = open_decoder(info)  # libsndfile or FFmpeg (ffmpeg.py)
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
