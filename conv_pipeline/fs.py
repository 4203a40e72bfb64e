"""Local paths and fsspec URLs: the helpers every stage that touches storage shares.

Flow: source -> load -> stack -> execute -> sink -> engines. ``source`` finds inputs, ``load``
reads them and ``sink`` writes outputs, each on a local path or a URL; this module says which a
spec is and opens it. A spec is

* a local path, or a ``file://`` / ``local://`` URL (the same thing: ``file:///data/x`` is
  ``/data/x``, ``local_path``);
* any other URL fsspec knows (``s3://bucket/corpus``, ``gs://...``, ``memory://...``, chained
  ``simplecache::s3://...``): a *remote* location (``is_url``), opened with
  ``fsspec.core.url_to_fs(url, **storage.options)`` (``filesystem``) in each process that needs
  it. Filesystem objects never travel between processes; the options do, so every Ray worker
  builds its own client with the same endpoint and credentials.

Also here: the rules shared by the stages' error messages (``one_line``; ``storage_error`` for a
failed listing or read; ``renamed_error`` to name a URL instead of its local copy), the check that
keeps outputs under ``output.dir`` (``check_rel``), local temporary folders (``staging``) and the
protocols whose single PUT is an atomic commit (``OBJECT_STORES``, used by ``sink.outputs``).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import tempfile
from typing import Any, Iterator, Mapping, Optional

from conv_pipeline.errors import ConfigError, InputError, OutputError, PipelineError

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


def split_url(url: str) -> tuple[str, str]:
    """``s3://b/x/y`` -> ``("s3://", "b/x/y")``."""
    head, sep, rest = url.partition("://")
    return head + sep, rest


def normjoin(base_url: str, rel: str) -> str:
    """``base_url`` joined with ``rel`` and normalised (``s3://b/l`` + ``../x`` -> ``s3://b/x``);
    ``InputError`` when ``rel`` climbs above the bucket."""
    prefix, path = split_url(base_url)
    joined = posixpath.normpath(posixpath.join(path, rel))
    if joined.startswith("../") or joined == "..":
        raise InputError(f"{rel}: a list entry that leaves {base_url}; give full URLs in the list")
    return prefix + joined


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
    """The filesystem's main protocol (``s3``, ``memory``, ``file``, ...)."""
    proto = fs.protocol
    return proto[0] if isinstance(proto, (tuple, list)) else str(proto)


# ---------------------------------------------------------------- messages
def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())


def storage_error(url: str, err: BaseException, what: str) -> InputError:
    """The one-line ``InputError`` for ``err``, raised while ``what`` (``list it``, ``read it``)
    on ``url``: missing, permission denied, or the exception's own first words."""
    if isinstance(err, PipelineError):
        return InputError(str(err))
    if isinstance(err, FileNotFoundError):
        return InputError(f"{url}: no such file or folder; check the URL")
    if isinstance(err, PermissionError):
        return InputError(f"{url}: permission denied while {what}; check the credentials in storage.options")
    return InputError(f"{url}: cannot {what} ({type(err).__name__}: {one_line(err) or 'no detail'}); check the URL and storage.options")


def renamed_error(err: PipelineError, local: str, url: str) -> PipelineError:
    """The same error, naming ``url`` where it named the local copy ``local``."""
    return type(err)(str(err).replace(local, url))


# ---------------------------------------------------------------- outputs
def check_rel(rel: str) -> str:
    """``rel`` if it is a plain relative POSIX path that stays under its folder, else ``OutputError``."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts) or _URL_RE.match(rel):
        raise OutputError(f"{rel!r}: would write outside output.dir; outputs must stay under it")
    return rel


@contextlib.contextmanager
def staging(prefix: str = "conv_pipeline-out-") -> Iterator[str]:
    """A new local temporary folder (named ``prefix...``), removed with its content on exit."""
    folder = tempfile.mkdtemp(prefix=prefix)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
