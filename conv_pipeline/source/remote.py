"""Finding inputs on a remote filesystem (an fsspec URL: ``s3://bucket/corpus``, ``memory://...``).

Flow: **source** -> load -> stack -> execute -> sink -> engines. ``source.inputs.find_inputs``
calls ``list_inputs`` for a URL ``input=``: the same four kinds as on local paths (a folder, a
glob, a list file, one audio file), each input named by its URL in the spec's own spelling, so
``load.remote`` can read it from any process. The naming rules are ``source.patterns``'; the
filesystem is opened with ``storage.options`` (``fs.filesystem``).
"""

from __future__ import annotations

import posixpath
from typing import Any, Mapping, Optional

from conv_pipeline.errors import InputError, PipelineError
from conv_pipeline.fs import (
    filesystem,
    is_url,
    join,
    normjoin,
    split_url,
    storage_error,
)
from conv_pipeline.source.patterns import GLOB_CHARS, glob_root, has_ext, list_entries


def list_inputs(
    spec: str, exts: frozenset[str], options: Optional[Mapping[str, Any]] = None
) -> tuple[str, str, list[str], list[str]]:
    """The inputs a remote ``spec`` names: ``(kind, root, inputs, rels)`` as in
    ``source.inputs.find_inputs`` (a folder searched recursively with hidden names skipped, a
    glob, a text list of paths or URLs, one audio file). ``inputs`` are URLs in ``spec``'s own
    spelling (``root`` + ``/`` + ``rel``); ``rels`` are POSIX paths under ``root``."""
    fs, path = filesystem(spec, options)
    spec = spec.rstrip("/") if not spec.endswith("://") else spec
    path = path.rstrip("/") or path
    try:
        fs.invalidate_cache()
        if GLOB_CHARS & set(path):
            root = glob_root(spec)
            root_path = fs._strip_protocol(root).rstrip("/")
            found = fs.glob(path, detail=True)
            files = [p for p, info in found.items() if info.get("type") == "file"]
            rels = [p[len(root_path) + 1 :] for p in files if p.startswith(root_path + "/")]
            rels = [r for r in rels if has_ext(r, exts)]
            return "glob", root, [join(root, r) for r in rels], rels
        if fs.isdir(path):
            found = fs.find(path, detail=True)
            rels = []
            for p, info in found.items():
                if info.get("type") != "file" or not p.startswith(path + "/"):
                    continue
                rel = p[len(path) + 1 :]
                if any(part.startswith(".") for part in rel.split("/")) or not has_ext(rel, exts):
                    continue
                rels.append(rel)
            return "folder", spec, [join(spec, r) for r in rels], rels
        if fs.isfile(path):
            parent, name = spec.rsplit("/", 1)
            if has_ext(name, exts):
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
    """A list file's entries (relative ones in the list's folder), under their common folder."""
    raw = fs.cat_file(path)
    try:
        text: Optional[str] = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    entries = [
        entry if is_url(entry) else normjoin(parent, entry)  # relative: in the list's filesystem
        for entry in list_entries(text, spec, "s3://bucket/corpus/**/*.wav")
    ]
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
