"""Where the batch job's inputs and outputs live: local paths or fsspec URLs.

Both engines (``batch.py``'s local one and ``ray_engine.py``) read and write through this module,
so every worker reads its inputs and writes its outputs where they live, with nothing passing
through the driver. A spec is

* a local path, or a ``file://`` / ``local://`` URL (the same thing: ``file:///data/x`` is
  ``/data/x``): the existing path-based code runs unchanged;
* any other URL fsspec knows (``s3://bucket/corpus``, ``gs://...``, ``memory://...``, chained
  ``simplecache::s3://...``): a *remote* location, opened with ``fsspec.core.url_to_fs(url,
  **storage.options)`` in each process that needs it (filesystem objects never travel; the
  options do, so every Ray worker builds its own client with the same endpoint and credentials).

Reading remote inputs: headers are read through a file object (``soundfile`` decodes by
content); a file to decode is copied to a local temporary file (``fs.get_file``: streamed,
bounded memory) and decoded by the same ``load_audio`` / chunked executor as a local file;
messages name the URL, never the temporary copy.

Writing remote outputs, atomically, the way the filesystem allows (``OutputDir.commit``):

* object stores (``s3``, ``gs``, ``az``/``abfs``, ``memory``, ...; ``OBJECT_STORES``): one PUT
  of the complete file (``fs.put_file``; a large file is one multipart upload, which becomes
  visible only when completed): readers see no object or the whole object;
* any other remote filesystem: upload under a temporary name in the same folder
  (``.<name>.tmp-xxxxxxxx``, the name ``writer.atomic_write`` uses, so temp clean-up finds it),
  then ``fs.mv`` it into place.

A feature file is produced locally first (``writer.write_features``, or the chunked executor's
streaming writer, unchanged) in a staging folder, then committed with one upload.

The manifest (``ManifestSink``): a local ``manifest.jsonl`` is appended to, one write + fsync per
call, as before. Object stores cannot append, so a remote manifest is rewritten whole, atomically
(one PUT of the previous content plus every new record), at most every ``storage.manifest_flush_s``
seconds and when the job ends (also on errors and interrupts). A run killed in between loses
only those manifest lines: their feature files exist, so the next run records them as
``skipped`` (without their metadata, which was in the lost lines).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import tempfile
from typing import Any, Callable, Iterator, Mapping, Optional

from conv_pipeline.errors import InputError, PipelineError
from conv_pipeline.fs import filesystem, is_url, local_path, one_line
from conv_pipeline.source.remote import storage_error


def probe(path: str, options: Optional[Mapping[str, Any]] = None):
    """``audio.probe`` for a path or URL: the header only (a remote file is read through a file
    object, never copied). Raises ``InputError`` as ``audio.probe`` does."""
    from conv_pipeline.load.audio import AudioInfo
    from conv_pipeline.load.audio import probe as probe_local

    if not is_url(path):
        return probe_local(local_path(path))
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
    try:
        with fs.open(p, "rb") as f:
            header = sf.info(f)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        detail = one_line(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        detail = re.sub(r"^Error opening .*?: ", "", detail)
        raise InputError(f"{path}: not a readable audio file ({detail})") from None
    except Exception as err:  # noqa: BLE001
        raise storage_error(path, err, "read it") from None
    return AudioInfo(path, int(header.samplerate), int(header.channels), int(header.frames), header.format, header.subtype)


def renamed_error(err: PipelineError, local: str, url: str) -> PipelineError:
    """The same error, naming ``url`` where it named the local copy ``local``."""
    return type(err)(str(err).replace(local, url))


@contextlib.contextmanager
def fetched(path: str, options: Optional[Mapping[str, Any]] = None) -> Iterator[str]:
    """A local path to read ``path`` from: the path itself, or for a URL a temporary copy
    (removed on exit). ``PipelineError``s raised inside name the URL, not the copy."""
    if not is_url(path):
        yield local_path(path)
        return
    fs, p = filesystem(path, options)
    tmpdir = tempfile.mkdtemp(prefix="conv_pipeline-in-")
    local = os.path.join(tmpdir, posixpath.basename(p.rstrip("/")) or "input")
    try:
        try:
            fs.get_file(p, local)
        except Exception as err:  # noqa: BLE001
            raise storage_error(path, err, "read it") from None
        try:
            yield local
        except PipelineError as err:
            raise renamed_error(err, local, path) from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


class UrlDecoder:
    # a class so that worker processes can pickle it
    """``decode(path, audio)`` for paths and URLs: ``inner`` (``audio.load_audio`` by default) on
    the path, or on a local copy of the URL."""

    def __init__(self, inner: Callable, options: Optional[Mapping[str, Any]] = None) -> None:
        self.inner = inner
        self.options = dict(options or {})

    def __call__(self, path: str, audio: Any) -> Any:
        if not is_url(path):
            return self.inner(local_path(path), audio)
        with fetched(path, self.options) as local:
            return self.inner(local, audio)
