"""Inputs given as URLs (``s3://...``, ``memory://...``): the header read, the file fetched.

Flow: source -> **load** -> stack -> execute -> sink -> engines. ``source.remote`` names remote
inputs by URL; the engines read them here, in whichever process decodes them, so nothing passes
through the driver. A header is read through a file object (``probe``: ``soundfile`` decodes by
content, nothing is copied); a file to decode is copied to a local temporary file (``fetched``:
``fs.get_file``, streamed, bounded memory) and decoded by the same ``load.audio.load_audio`` or
chunked executor as a local file (``UrlDecoder``). Messages name the URL, never the temporary
copy. Local paths (and ``file://`` URLs) go straight to the local code.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import posixpath
import re
from typing import Any, Callable, Iterator, Mapping, Optional

from conv_pipeline.errors import InputError, PipelineError
from conv_pipeline.fs import (
    filesystem,
    is_url,
    local_path,
    one_line,
    renamed_error,
    staging,
    storage_error,
)


def probe(path: str, options: Optional[Mapping[str, Any]] = None, decoder: str = "auto"):
    """``info.probe`` for a path or URL, with ``decoder`` (``audio.decoder``): the header only (a
    remote file is read through a file object, never copied). Raises ``InputError`` as
    ``info.probe`` does."""
    from conv_pipeline.load.info import AudioInfo, ffmpeg_fallback, wants_ffmpeg
    from conv_pipeline.load.info import probe as probe_local

    if not is_url(path):
        return probe_local(local_path(path), decoder)
    import soundfile as sf

    fs, p = filesystem(path, options)
    try:
        info = fs.info(p)
    except Exception as err:  # noqa: BLE001
        raise storage_error(path, err, "read it") from None
    if info.get("type") == "directory":
        raise InputError(f"{path}: is a directory, expected an audio file")
    if not info.get("size"):
        raise InputError(f"{path}: empty file (0 bytes), not audio")
    if wants_ffmpeg(p, decoder):
        return _remote_ffmpeg(path, fs, p)
    try:
        with fs.open(p, "rb") as f:
            header = sf.info(f)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        detail = one_line(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        detail = re.sub(r"^Error opening .*?: ", "", detail)
        refused = InputError(f"{path}: not a readable audio file ({detail})")
        if decoder != "auto":
            raise refused from None
        return ffmpeg_fallback(refused, lambda: _remote_ffmpeg(path, fs, p))  # as info.probe
    except Exception as err:  # noqa: BLE001
        raise storage_error(path, err, "read it") from None
    return AudioInfo(path, int(header.samplerate), int(header.channels), int(header.frames), header.format, header.subtype)


def _remote_ffmpeg(path: str, fs: Any, p: str):
    """``info.ffmpeg_info`` of a remote file, read through a file object."""
    from conv_pipeline.load.info import ffmpeg_info

    try:
        with fs.open(p, "rb") as f:
            return ffmpeg_info(path, f, path)
    except PipelineError:
        raise
    except Exception as err:  # noqa: BLE001
        raise storage_error(path, err, "read it") from None


@contextlib.contextmanager
def fetched(path: str, options: Optional[Mapping[str, Any]] = None) -> Iterator[str]:
    """A local path to read ``path`` from: the path itself, or for a URL a temporary copy
    (removed on exit). ``PipelineError``s raised inside name the URL, not the copy."""
    if not is_url(path):
        yield local_path(path)
        return
    fs, p = filesystem(path, options)
    with staging("conv_pipeline-in-") as tmpdir:
        local = os.path.join(tmpdir, posixpath.basename(p.rstrip("/")) or "input")
        try:
            fs.get_file(p, local)
        except Exception as err:  # noqa: BLE001
            raise storage_error(path, err, "read it") from None
        try:
            yield local
        except PipelineError as err:
            raise renamed_error(err, local, path) from None


class UrlDecoder:
    """``decode(path, audio)`` for paths and URLs: ``inner`` (``audio.load_audio`` by default) on
    the path, or on a local copy of the URL. A class, so that worker processes can pickle it."""

    def __init__(self, inner: Callable, options: Optional[Mapping[str, Any]] = None) -> None:
        self.inner = inner
        self.options = dict(options or {})
        # the inner decoder takes the header its caller has read (``load_audio(..., info=)``)
        self.takes_info = "info" in inspect.signature(inner).parameters

    def __call__(self, path: str, audio: Any, info: Any = None) -> Any:
        """``inner`` on the path (with ``info``, a header already read, when ``inner`` takes it) or
        on a local copy of the URL (whose header is read again: ``info`` describes the remote file)."""
        if not is_url(path):
            if info is not None and self.takes_info:
                return self.inner(local_path(path), audio, info=info)
            return self.inner(local_path(path), audio)
        with fetched(path, self.options) as local:
            return self.inner(local, audio)
