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

import posixpath
from typing import Any, Mapping, Optional

from conv_pipeline.errors import InputError, PipelineError
from conv_pipeline.fs import filesystem, is_url, join, normjoin, one_line, split_url

GLOB_CHARS = frozenset("*?[")


def _url_has_ext(name: str, exts: frozenset[str]) -> bool:
    return posixpath.splitext(name)[1][1:].lower() in exts


def _url_glob_root(pattern: str) -> str:
    parts = pattern.split("/")
    literal: list[str] = []
    for part in parts[:-1]:
        if GLOB_CHARS & set(part):
            break
        literal.append(part)
    return "/".join(literal)


def storage_error(url: str, err: BaseException, what: str) -> InputError:
    if isinstance(err, PipelineError):
        return InputError(str(err))
    if isinstance(err, FileNotFoundError):
        return InputError(f"{url}: no such file or folder; check the URL")
    if isinstance(err, PermissionError):
        return InputError(f"{url}: permission denied while {what}; check the credentials in storage.options")
    return InputError(f"{url}: cannot {what} ({type(err).__name__}: {one_line(err) or 'no detail'}); check the URL and storage.options")


# ---------------------------------------------------------------- inputs
def list_inputs(
    spec: str, exts: frozenset[str], options: Optional[Mapping[str, Any]] = None
) -> tuple[str, str, list[str], list[str]]:
    """The inputs a remote ``spec`` names: ``(kind, root, inputs, rels)`` as in
    ``batch.find_inputs`` (a folder searched recursively with hidden names skipped, a glob, a text
    list of paths or URLs, one audio file). ``inputs`` are URLs in ``spec``'s own spelling
    (``root`` + ``/`` + ``rel``); ``rels`` are POSIX paths under ``root``."""
    fs, path = filesystem(spec, options)
    spec = spec.rstrip("/") if not spec.endswith("://") else spec
    path = path.rstrip("/") or path
    try:
        fs.invalidate_cache()
        if GLOB_CHARS & set(path):
            root = _url_glob_root(spec)
            root_path = fs._strip_protocol(root).rstrip("/")
            found = fs.glob(path, detail=True)
            files = [p for p, info in found.items() if info.get("type") == "file"]
            rels = [p[len(root_path) + 1 :] for p in files if p.startswith(root_path + "/")]
            rels = [r for r in rels if _url_has_ext(r, exts)]
            return "glob", root, [join(root, r) for r in rels], rels
        if fs.isdir(path):
            found = fs.find(path, detail=True)
            rels = []
            for p, info in found.items():
                if info.get("type") != "file" or not p.startswith(path + "/"):
                    continue
                rel = p[len(path) + 1 :]
                if any(part.startswith(".") for part in rel.split("/")) or not _url_has_ext(rel, exts):
                    continue
                rels.append(rel)
            return "folder", spec, [join(spec, r) for r in rels], rels
        if fs.isfile(path):
            parent = spec.rsplit("/", 1)[0]
            name = spec.rsplit("/", 1)[1]
            if _url_has_ext(name, exts):
                return "file", parent, [spec], [name]
            return _list_file(fs, path, spec, parent)
    except PipelineError:
        raise
    except Exception as err:  # noqa: BLE001 - a listing failure is one line naming the URL
        raise storage_error(spec, err, "list it") from None
    raise InputError(
        f"input={spec!r}: no such file or folder; give a folder, a glob like "
        "'s3://bucket/corpus/**/*.wav' or a text file with one audio path per line"
    )


def _list_file(fs: Any, path: str, spec: str, parent: str) -> tuple[str, str, list[str], list[str]]:
    raw = fs.cat_file(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise InputError(
            f"input={spec!r} is neither a folder, a glob nor a text list; give a folder, a glob "
            "like 's3://bucket/corpus/**/*.wav' or a text file with one audio path per line"
        )
    entries = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if not is_url(entry):  # relative to the list's folder, in the list's filesystem
            entry = normjoin(parent, entry)
        entries.append(entry)
    if not entries:
        return "list", parent, [], []
    # rels under the entries' common folder, so outputs stay inside output.dir
    split = [split_url(e) for e in entries]
    prefixes = {p for p, _ in split}
    if len(prefixes) > 1:
        raise InputError(f"input={spec!r} lists files on several filesystems ({', '.join(sorted(prefixes))}); use one list per filesystem")
    prefix = prefixes.pop()
    paths = [p for _, p in split]
    common = posixpath.commonpath([posixpath.dirname(p) for p in paths])
    rels = [posixpath.relpath(p, common) for p in paths]
    return "list", prefix + common, entries, rels
