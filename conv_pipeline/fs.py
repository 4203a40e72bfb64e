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

Also here: the rules shared by the stages' error messages (``one_line``; ``printable`` and
``PRINTABLE_LOG`` for names shown on a terminal; ``storage_error`` for a
failed listing or read; ``renamed_error`` to name a URL instead of its local copy), the check that
keeps outputs under ``output.dir`` (``check_rel``), local temporary folders (``staging``) and the
protocols whose single PUT is an atomic commit (``OBJECT_STORES``, used by ``sink.outputs``).
"""

from __future__ import annotations

import contextlib
import logging
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


# C0/C1 controls and DEL (as characters, or as bytes that are not UTF-8: os.fsdecode's surrogates
# U+DC80-U+DC9F), lone surrogates that stand for no byte, line and paragraph separators, and the
# bidirectional overrides and isolates that reorder what a terminal shows
_UNPRINTABLE_RE = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udc7f\udc80-\udc9f\udd00-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as os.fsdecode keeps it: shown as that byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: object, keep: str = "") -> str:
    """``text`` safe to show on a terminal: control characters (escape sequences, newlines, tabs,
    DEL, C1, also as bytes that are not UTF-8) and bidirectional overrides written as ``\\x1b``,
    ``\\x9b``, ``\\u202e``; letters of any script, spaces, backslashes and the other bytes that
    are not UTF-8 (printed as those bytes, as ``ls`` does) unchanged. Characters in ``keep``
    (``"\\n"`` for a message meant to span lines) are left as they are."""
    s = str(text)
    if not _UNPRINTABLE_RE.search(s):
        return s
    return _UNPRINTABLE_RE.sub(lambda m: m.group() if m.group() in keep else _escape(m), s)


class Lines(str):
    """Text made to span lines (a table, the model summary): logged through ``PrintableArgs``, it
    keeps its line breaks (other control characters are still escaped)."""


class PrintableArgs(logging.Filter):
    """A logger filter: every string argument of a record (the names a log line shows) goes
    through ``printable``; a message whose format spans lines keeps line breaks in its arguments
    (a traceback under ``debug=true``), and so does a ``Lines`` argument."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            keep = "\n" if "\n" in str(record.msg) else ""
            record.args = tuple(printable(a, "\n" if isinstance(a, Lines) else keep)
                                if isinstance(a, (str, os.PathLike)) else a for a in args)
        return True


PRINTABLE_LOG = PrintableArgs()  # one instance: adding it to a logger twice adds it once


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
