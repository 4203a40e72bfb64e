"""Decoding a whole file: the header (``probe``) and the waveform (``load_audio``).

Flow: source -> **load** -> stack -> execute -> sink -> engines. ``load_audio(path, audio)``
returns ``Audio``: ``waveform`` float32 ``(channels, frames)`` at ``audio.sample_rate`` (or the
file's own rate), after ``signal.py``'s channel policy, resampling and optional normalisation;
``execute/whole.py`` runs the stack on it. Chunked execution reads the file through
``blocks.py`` and ``stream.py`` instead, with the same checks and messages.

Any format libsndfile reads (WAV, FLAC, OGG, MP3, AIFF, AU; 8/16/24/32-bit integer, float,
A-law/µ-law) decodes to float32 ``(channels, frames)``. Files are decoded by content, not by
extension. Every problem with a file is a one-line ``InputError`` naming it; the error
builders (``decode_error``, ``damaged_error``, ``no_frames_error``, ``non_finite_error``) and the
libsndfile helpers (``NativeStderr``, ``rewind``, ``sf_name``, ``SF_ERRORS``) are shared with
``blocks.py``.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import soundfile as sf
import torch

from conv_pipeline.config.checks import validate_audio
from conv_pipeline.config.schema import AudioConfig
from conv_pipeline.errors import InputError
from conv_pipeline.fs import PRINTABLE_LOG
from conv_pipeline.load.signal import (
    apply_channel_policy,
    check_memory,
    check_rate,
    check_resample,
    normalize_waveform,
    resample,
    resampled_length,
)

log = logging.getLogger("conv_pipeline.audio")
log.addFilter(PRINTABLE_LOG)  # names are shown with control characters escaped




@dataclass(frozen=True)
class AudioInfo:
    """What the file's header says."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str
    truncated: bool = False  # the header declares more audio than the file holds (libsndfile's log)

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


_NOT_REGULAR = ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISCHR, "character device"),
                (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def _check_path(path: Union[str, os.PathLike]) -> str:
    """``path`` as a string once it names a readable regular file; ``InputError`` (one line) otherwise.

    A FIFO, device or socket is refused from its type: opening one could block forever or never end.
    """
    spath = os.fspath(path)
    try:
        st = os.stat(spath)
    except FileNotFoundError:
        if os.path.islink(spath):
            raise InputError(f"{path}: is a symbolic link to a missing file; fix or remove the link") from None
        raise InputError(f"{path}: no such file; check the path") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputError(f"{path}: is a symbolic link loop (it leads back to itself); fix or remove the link") from None
        if err.errno in (errno.EACCES, errno.EPERM):
            raise InputError(f"{path}: permission denied; make the file and its folders readable") from None
        raise InputError(f"{path}: cannot be read ({err.strerror or err}); check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(
            f"{path}: is a directory, expected an audio file (use scripts/batch_process.py for folders)"
        )
    for is_kind, kind in _NOT_REGULAR:
        if is_kind(st.st_mode):
            raise InputError(f"{path}: is not a regular file (a {kind}); give an audio file")
    if not os.access(spath, os.R_OK):
        raise InputError(f"{path}: permission denied; make the file readable")
    return str(Path(spath))


def sf_name(spath: str) -> bytes:
    """The name to hand libsndfile: bytes, so a file name that is not valid UTF-8 opens too."""
    return os.fsencode(spath)


class NativeStderr:
    """While active (``with``), hold back what the C decoders print on file descriptor 2
    (libmpg123 prints warnings and errors about damaged MP3 frames there), so that a
    command-line user sees one line per problem; ``close()`` sends the text to this module's debug
    log. Reusable: one temporary file per decode, however many blocks.

    Active only when this is the process's only thread: redirecting the descriptor is
    process-wide, and another thread's messages must never be swallowed.
    """

    def __init__(self) -> None:
        self.held: Optional[Any] = None
        self.saved = -1

    def __enter__(self) -> "NativeStderr":
        if threading.active_count() != 1 or threading.current_thread() is not threading.main_thread():
            return self
        try:
            sys.stderr.flush()
            if self.held is None:
                self.held = tempfile.TemporaryFile()
            self.saved = os.dup(2)
            os.dup2(self.held.fileno(), 2)
        except (OSError, ValueError, AttributeError):
            self.saved = -1
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved >= 0:
            os.dup2(self.saved, 2)
            os.close(self.saved)
            self.saved = -1

    def close(self) -> None:
        if self.held is None:
            return
        try:
            self.held.seek(0)
            text = self.held.read(4096).decode("utf-8", "replace").strip()
        finally:
            self.held.close()
            self.held = None
        if text:
            log.debug("decoder messages: %s", " | ".join(text.splitlines()))


def _sf_info(spath: str) -> Any:
    quiet = NativeStderr()
    try:
        with quiet:
            return sf.info(sf_name(spath))
    finally:
        quiet.close()


def _libsndfile_detail(err: Exception) -> str:
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    detail = re.sub(r"^Error opening .*?: ", "", detail).strip()
    if "does not exist or is not a regular file" in detail:  # libsndfile's words for an unrecognised RIFF
        detail = "unrecognised or damaged header"
    if "Permission denied" in detail:
        detail = "permission denied"
    return detail or type(err).__name__


def decode_error(path: str, err: Exception) -> InputError:
    """The file could not be opened as audio (its header)."""
    return InputError(f"{path}: not a readable audio file ({_libsndfile_detail(err)})")


def damaged_error(path: str, err: Exception) -> InputError:
    """The header was read but decoding the audio data failed."""
    return InputError(
        f"{path}: decoding failed ({_libsndfile_detail(err)}): the audio data is truncated or corrupt; "
        "repair or re-encode it"
    )


SF_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError)


_SHORTER_THAN_HEADER = re.compile(r"^(data|SSND)\s*:\s*\d+\s*\(should be \d+\)", re.MULTILINE)


def probe(path: Union[str, os.PathLike]) -> AudioInfo:
    """Read the header only. Raises ``InputError`` for missing, unreadable or non-audio files."""
    spath = _check_path(path)
    if os.path.getsize(spath) == 0:
        raise InputError(f"{path}: empty file (0 bytes), not audio")
    try:
        info = _sf_info(spath)
    except SF_ERRORS as err:
        raise decode_error(spath, err) from None
    if int(info.samplerate) < 1 or int(info.channels) < 1:
        raise InputError(
            f"{path}: not a readable audio file (its header says {info.samplerate} Hz, {info.channels} channel(s))"
        )
    check_rate(path, int(info.samplerate))
    truncated = bool(_SHORTER_THAN_HEADER.search(getattr(info, "extra_info", "") or ""))
    return AudioInfo(
        spath, int(info.samplerate), int(info.channels), int(info.frames), info.format, info.subtype, truncated
    )


def no_frames_error(name: Union[str, os.PathLike], info: AudioInfo) -> InputError:
    size = os.path.getsize(info.path)
    if size > 1024:  # more than a bare header: libsndfile found no frame it could decode
        return InputError(
            f"{name}: has no decodable audio frames although it holds {size} bytes: the file is truncated or "
            "damaged (an Ogg stream cut short loses its frame count); repair or re-encode it"
        )
    return InputError(f"{name}: has no audio frames (0 samples)")


def warn_truncated(name: Union[str, os.PathLike], info: AudioInfo, frames: int) -> None:
    """Say so when a file held less audio than its header declares (it is processed as it is)."""
    if info.truncated or frames < info.frames:
        log.warning(
            "%s: holds less audio than its header declares (truncated or damaged); processing the %d frame(s) "
            "it holds",
            name, frames,
        )


def rewind(f: sf.SoundFile) -> None:
    """Seek to the first frame, as ``soundfile.read`` does: libmpg123 rounds the first frames a
    hair differently (1 ulp) before its first seek, and decoding must equal ``soundfile.read``."""
    if f.seekable():
        try:
            f.seek(0)
        except SF_ERRORS:  # a damaged file may fail to seek; it is at its first frame anyway
            pass


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
    check_resample(path, info.sample_rate, target)
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
    wave = resample(wave, info.sample_rate, target)
    if audio.normalize:
        wave = normalize_waveform(wave)
    if decoded != info.frames:  # the header was wrong (truncated file): say what was decoded
        info = dataclasses.replace(info, frames=decoded)
    return Audio(wave.contiguous(), target, info)


def non_finite_error(path: Union[str, os.PathLike], bad: int) -> InputError:
    return InputError(f"{path}: contains {bad} NaN or Inf sample(s); repair or drop the file")
