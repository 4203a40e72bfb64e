"""The job's inputs and where their outputs go: ``input=`` -> ``InputSet`` -> output names.

Flow: **source** -> load -> stack -> execute -> sink -> engines. The batch job
(``engines.job.run_batch``) calls ``find_inputs`` once, before any audio is read: ``input`` is a
folder searched recursively, a glob, a text file with one path per line, or one audio file, on a
local path (``source.local``) or an fsspec URL (``source.remote``). ``plan_outputs`` then gives
each input its output path under ``output.dir``, mirroring the input tree, so that the same
inputs always get the same names (what a resumed job relies on).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from conv_pipeline.config.schema import AUDIO_EXTENSIONS
from conv_pipeline.errors import InputError
from conv_pipeline.fs import is_url, local_path
from conv_pipeline.source.local import glob_files, posix_rel, read_list, walk_folder
from conv_pipeline.source.patterns import GLOB_CHARS, glob_root, has_ext
from conv_pipeline.source.remote import list_inputs

NAME_MAX = 255  # bytes in one file name on POSIX filesystems (ext4, xfs, btrfs, APFS)


# ---------------------------------------------------------------- finding inputs
@dataclass
class InputSet:
    """The job's inputs.

    ``kind``: ``folder``, ``glob``, ``list`` or ``file``. ``root``: the folder the output tree
    mirrors. ``paths``: each input as it is opened and recorded in the manifest (``input``).
    ``rels``: each input's path relative to ``root`` (POSIX), never starting with ``..``.
    """

    kind: str
    root: str
    paths: list[str]
    rels: list[str]


def find_inputs(
    spec: str, extensions: Sequence[str] = AUDIO_EXTENSIONS, options: Optional[dict[str, Any]] = None
) -> InputSet:
    """The inputs that ``input=spec`` names.

    * a folder: every audio file below it (by extension, case-insensitive; hidden names
      skipped), relative to the folder;
    * a glob (``*``, ``?``, ``[``; ``**`` spans folders): the matching audio files, relative
      to the pattern's literal leading folder, found by the folder's rule (every real folder
      searched once: a symlink loop neither repeats a file nor hangs);
    * a text file: one path per line (blank lines and ``#`` comments ignored; relative paths
      are relative to the list file's folder; taken whatever their extension), relative to
      the entries' common folder, so ``../x.wav`` still gets an output inside ``output.dir``;
    * one audio file (an audio extension): that file.

    ``spec`` may be a URL (``s3://bucket/corpus``, ``gs://...``; opened with ``options``, see
    ``source.remote.list_inputs``): the same four kinds on that filesystem, each input named by its URL.
    ``file://`` URLs are local paths.

    Duplicates (the same file named twice) are dropped. Raises ``InputError`` when nothing is
    found.
    """
    exts = frozenset(e.lower().lstrip(".") for e in extensions)
    spec = str(spec)
    if is_url(spec):
        kind, root, paths, rels = list_inputs(spec, exts, options)
        unique_rels = dict(zip(paths, rels))  # the same URL twice (a list): once
        return _ordered_inputs(spec, exts, kind, root, list(unique_rels), list(unique_rels.values()))
    spec = local_path(spec)
    if os.path.isdir(spec):
        kind, root, paths = "folder", spec, walk_folder(spec, exts)
    elif os.path.isfile(spec):
        if has_ext(spec, exts):
            kind, root, paths = "file", os.path.dirname(spec) or ".", [spec]
        else:
            kind, paths = "list", read_list(spec)
            root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) if paths else "."
    elif GLOB_CHARS & set(spec):
        kind, root = "glob", glob_root(spec.replace(os.sep, "/"))
        paths = glob_files(spec.replace(os.sep, "/"), exts)
    else:
        raise InputError(
            f"input={spec!r}: no such file or folder; give a folder, a glob like 'corpus/**/*.wav' "
            "or a text file with one audio path per line"
        )
    unique: dict[str, str] = {}
    for p in paths:
        unique.setdefault(os.path.normcase(os.path.abspath(p)), p)
    paths = list(unique.values())
    rels = [posix_rel(p, root) for p in paths]
    if any(r == ".." or r.startswith("../") for r in rels):  # cannot happen by construction; be sure
        root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
        rels = [posix_rel(p, root) for p in paths]
    return _ordered_inputs(spec, exts, kind, root, paths, rels)


def _ordered_inputs(spec: str, exts: frozenset[str], kind: str, root: str, paths: list[str], rels: list[str]) -> InputSet:
    """Sorted by relative path (a list keeps its order); ``InputError`` when there are none."""
    order = sorted(range(len(paths)), key=lambda i: rels[i]) if kind != "list" else list(range(len(paths)))
    paths, rels = [paths[i] for i in order], [rels[i] for i in order]
    if not paths:
        what = "lists no files" if kind == "list" else f"has no audio files (extensions: {', '.join(sorted(exts))})"
        raise InputError(f"input={spec!r} {what}; check the path, or set batch.extensions")
    return InputSet(kind, root, paths, rels)


def plan_outputs(rels: Sequence[str], fmt: str) -> list[str]:
    """Output path (POSIX, relative to ``output.dir``) of each input's relative path.

    ``a/b/x.wav`` -> ``a/b/x.npy``. Any name POSIX allows gets an output: a backslash (a
    separator elsewhere) is written ``_`` in the output's name. Inputs that would share an output
    (compared case-insensitively, and in one Unicode normal form, as a case- or
    normalisation-insensitive filesystem would) keep their extension: ``x.wav.npy``,
    ``x.flac.npy``; those that still share one (``x.wav`` and ``x.WAV``) also get the first 8 hex
    digits of their relative path's SHA-1: ``x.wav~1a2b3c4d.npy``, ``x.WAV~5e6f7a8b.npy``.
    Deterministic: the same inputs always give the same names (recorded in the manifest's
    ``output``).
    """
    level = [0] * len(rels)  # 0: the stem; 1: the whole name; 2: the whole name and a hash
    while True:
        outs = [output_name(r, k, fmt) for r, k in zip(rels, level)]
        groups: dict[str, list[int]] = defaultdict(list)
        for i, out in enumerate(outs):
            groups[clash_key(out)].append(i)
        clash = [  # in each clash, the names at its lowest level move one level up
            i for members in groups.values() if len(members) > 1
            for i in members if level[i] == min(level[j] for j in members) < 2
        ]
        if not clash:
            break
        for i in clash:
            level[i] += 1
    for members in groups.values():
        if len(members) > 1:  # level-2 names alike: a SHA-1 prefix collision
            names = " and ".join(rels[i] for i in members[:2])
            raise InputError(f"{names} would write the same output {outs[members[0]]}; rename one of them")
    for rel, out in zip(rels, outs):
        parts = out.split("/")
        if out.startswith("/") or ".." in parts or "" in parts[:-1]:
            raise InputError(f"{rel}: would write outside output.dir ({out}); list paths inside one folder")
    return outs


def output_name(rel: str, level: int, fmt: str) -> str:
    """``rel``'s output at disambiguation ``level`` (see ``plan_outputs``); a file name longer
    than ``NAME_MAX`` bytes is cut and given the hash, so that it can be written."""
    folder, base = posixpath.split(rel.replace("\\", "_"))
    stem = base if level else (posixpath.splitext(base)[0] or base)
    if level < 2 and name_bytes(f"{stem}.{fmt}") <= NAME_MAX:
        return posixpath.join(folder, f"{stem}.{fmt}")
    tail = f"~{hashlib.sha1(rel.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}.{fmt}"
    while name_bytes(stem + tail) > NAME_MAX:
        stem = stem[:-1]
    return posixpath.join(folder, stem + tail)


def name_bytes(name: str) -> int:
    """How many bytes ``name`` takes on a POSIX filesystem (names that are not UTF-8 included)."""
    return len(name.encode("utf-8", "surrogateescape"))


def clash_key(out: str) -> str:
    """What two outputs share on a case- and normalisation-insensitive filesystem (Unicode's
    canonical caseless match)."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", out).casefold())
