"""The header of an audio file (``probe`` -> ``AudioInfo``) and the libsndfile helpers, without torch.

Flow: source -> **load** -> stack -> execute -> sink -> engines. ``probe(path, decoder)`` reads
the header only (rate, channels, frames, format) and refuses, with a one-line ``InputError``
naming the file, a missing, unreadable, empty or non-audio file, a FIFO or device, or a header
rate outside ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE`` (``check_rate``). ``decoder`` is
``audio.decoder``: with ``auto`` a file libsndfile cannot read, or one with an FFmpeg-only
extension, is read by FFmpeg (``ffmpeg.py``; ``AudioInfo.decoder`` says which, and
``frames_exact=False`` that ``frames`` is the container's estimate); ``open_decoder`` opens the
file with the decoder its header names. Nothing here imports torch, so
``summary=true input=file.wav`` costs no torch import; ``audio.py`` (the whole file) and
``blocks.py`` (block by block) decode with the helpers and error builders defined here
(``NativeStderr``, ``rewind``, ``sf_name``, ``SF_ERRORS``, ``decode_error``, ``damaged_error``,
``no_frames_error``, ``non_finite_error``, ``warn_truncated``).
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import re
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import soundfile as sf

from conv_pipeline.config.checks import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from conv_pipeline.errors import InputError
from conv_pipeline.fs import PRINTABLE_LOG
from conv_pipeline.load.ffmpeg import FFMPEG_EXTENSIONS, INSTALL_HINT, FFmpegFile, probe_ffmpeg

log = logging.getLogger("conv_pipeline.audio")
log.addFilter(PRINTABLE_LOG)  # names are shown with control characters escaped


def check_rate(path: Union[str, os.PathLike], rate: int) -> None:
    """``InputError`` for a header rate outside ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE``."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InputError(
            f"{path}: its header says {rate} Hz, outside the rates this tool takes ({MIN_SAMPLE_RATE}.."
            f"{MAX_SAMPLE_RATE} Hz): the header is damaged or the file is not audio; repair or re-encode it"
        )



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
    decoder: str = "soundfile"  # what decodes it: soundfile (libsndfile) or ffmpeg (PyAV, ffmpeg.py)
    frames_exact: bool = True  # False: ``frames`` is the container's estimate (FFmpeg inputs)

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


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


def wants_ffmpeg(name: str, decoder: str) -> bool:
    """``audio.decoder`` sends ``name`` to FFmpeg without trying libsndfile: ``ffmpeg``, or
    ``auto`` and an extension libsndfile reads none of (``ffmpeg.FFMPEG_EXTENSIONS``)."""
    return decoder == "ffmpeg" or (decoder == "auto" and os.path.splitext(name)[1].lower() in FFMPEG_EXTENSIONS)


def ffmpeg_info(path: Union[str, os.PathLike], source: Any, spath: str) -> AudioInfo:
    """``AudioInfo`` of ``source`` (a local path or a file object) read by FFmpeg (``ffmpeg.probe_ffmpeg``)."""
    rate, channels, frames, container, codec = probe_ffmpeg(source, path)
    check_rate(path, rate)
    return AudioInfo(spath, rate, channels, frames, container.upper(), codec.upper(), False, "ffmpeg", False)


def ffmpeg_fallback(refused: InputError, read: Callable[[], AudioInfo]) -> AudioInfo:
    """``audio.decoder=auto`` after libsndfile refused a header (``refused``, its one line): FFmpeg's
    reading of the file (``read()``, local or remote), or the refusal when FFmpeg cannot read it
    either (FFmpeg takes random bytes named ``.flac`` for a FLAC stream that decodes to nothing),
    with how to install PyAV when it is not installed."""
    if importlib.util.find_spec("av") is None:
        raise InputError(f"{refused} (if FFmpeg reads it: {INSTALL_HINT})") from None
    try:
        return read()
    except InputError:
        raise refused from None


def _fallback(path: Union[str, os.PathLike], spath: str, err: Exception) -> AudioInfo:
    """``ffmpeg_fallback`` for a local file."""
    return ffmpeg_fallback(decode_error(spath, err), lambda: ffmpeg_info(path, spath, spath))


def probe(path: Union[str, os.PathLike], decoder: str = "auto") -> AudioInfo:
    """Read the header only, with ``decoder`` (``audio.decoder``: auto, soundfile or ffmpeg).
    Raises ``InputError`` for missing, unreadable or non-audio files."""
    spath = _check_path(path)
    if os.path.getsize(spath) == 0:
        raise InputError(f"{path}: empty file (0 bytes), not audio")
    if wants_ffmpeg(spath, decoder):
        return ffmpeg_info(path, spath, spath)
    try:
        info = _sf_info(spath)
    except SF_ERRORS as err:
        if decoder == "auto":
            return _fallback(path, spath, err)
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


# An FFmpeg input is called truncated when it decodes to less than its container's duration by
# more than this many seconds (the estimate's rounding and the codec's priming are far less).
ESTIMATE_SLACK_S = 0.1


def warn_truncated(name: Union[str, os.PathLike], info: AudioInfo, frames: int) -> None:
    """Say so when a file held less audio than its header declares (it is processed as it is)."""
    slack = 0 if info.frames_exact else int(ESTIMATE_SLACK_S * info.sample_rate)
    if info.truncated or frames < info.frames - slack:
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


def open_decoder(info: AudioInfo) -> Any:
    """The file ``info`` describes, opened at its first frame by its decoder: a ``soundfile.SoundFile``
    or an ``ffmpeg.FFmpegFile``; both read float32 ``(n, channels)`` with ``buffer_read_into``.
    libsndfile raises ``SF_ERRORS``; FFmpeg raises ``InputError`` itself."""
    if info.decoder == "ffmpeg":
        return FFmpegFile(info.path, info.path, info.sample_rate, info.channels)
    f = sf.SoundFile(sf_name(info.path))
    rewind(f)
    return f


def non_finite_error(path: Union[str, os.PathLike], bad: int) -> InputError:
    return InputError(f"{path}: contains {bad} NaN or Inf sample(s); repair or drop the file")
