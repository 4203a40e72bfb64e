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
from typing import Any, Iterator, Mapping, Optional

from conv_pipeline.errors import ConfigError, InputError, OutputError

# Protocols without a rename: a single PUT of the complete object is the atomic commit.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2", "memory"})


_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


_LOCAL_PREFIXES = ("file://", "local://")


# ---------------------------------------------------------------- specs
def is_url(spec: object) -> bool:
    """True for a remote location: a URL (or a chained ``a::b://`` URL) other than ``file://``."""
    s = str(spec)
    if s.startswith(_LOCAL_PREFIXES):
        return False
    return bool(_URL_RE.match(s)) or ("::" in s and "://" in s)


def local_path(spec: object) -> str:
    """A local spec as a path: ``file:///data/x`` -> ``/data/x``; anything else unchanged."""
    s = str(spec)
    for prefix in _LOCAL_PREFIXES:
        if s.startswith(prefix):
            return s[len(prefix) :] or "/"
    return s


def join(base: object, rel: str) -> str:
    """``base`` (a path or URL) joined with a POSIX relative path, in ``base``'s own style."""
    base = str(base)
    if is_url(base):
        return base.rstrip("/") + "/" + rel
    return os.path.join(base, rel)


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def filesystem(url: str, options: Optional[Mapping[str, Any]] = None) -> tuple[Any, str]:
    """``(fsspec filesystem, path within it)`` for ``url``; ``ConfigError`` (one line) when the
    URL cannot be opened (fsspec or the protocol's package missing, bad options)."""
    try:
        import fsspec
    except ImportError:
        raise ConfigError(
            f"{url}: URLs need fsspec; install the ray extra (pip install -e '.[ray]') or fsspec and s3fs"
        ) from None
    try:
        return fsspec.core.url_to_fs(url, **dict(options or {}))
    except ImportError as err:
        raise ConfigError(f"{url}: {one_line(err)}; install the package it names") from None
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"{url}: cannot open this URL ({one_line(err)}); check it and storage.options") from None


def fs_protocol(fs: Any) -> str:
    proto = fs.protocol
    return proto[0] if isinstance(proto, (tuple, list)) else str(proto)


def split_url(url: str) -> tuple[str, str]:
    """``s3://b/x/y`` -> ``("s3://", "b/x/y")``."""
    head, sep, rest = url.partition("://")
    return head + sep, rest


def normjoin(base_url: str, rel: str) -> str:
    prefix, path = split_url(base_url)
    joined = posixpath.normpath(posixpath.join(path, rel))
    if joined.startswith("../") or joined == "..":
        raise InputError(f"{rel}: a list entry that leaves {base_url}; give full URLs in the list")
    return prefix + joined


# ---------------------------------------------------------------- outputs
def check_rel(rel: str) -> str:
    """``rel`` if it is a plain relative POSIX path that stays under its folder, else ``OutputError``."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts) or _URL_RE.match(rel):
        raise OutputError(f"{rel!r}: would write outside output.dir; outputs must stay under it")
    return rel


@contextlib.contextmanager
def staging() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="conv_pipeline-out-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
