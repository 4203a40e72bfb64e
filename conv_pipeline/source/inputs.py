"""Batch processing of whole collections: many files -> features, resumable and failure-isolated.

Plain Python; Hydra stays in ``scripts/batch_process.py``. The job (``run_batch``):

1. checks the config (exit 2 before any audio is read), finds the inputs (a folder searched
   recursively, a glob, a text file with one path per line, or one audio file) and plans one
   output per input, mirroring the input tree under ``output.dir`` (``plan_outputs``);
2. fixes the stack's input channels once for the whole job (``model.in_channels``, the
   checkpoint, or with ``auto`` the first input's count after ``audio.channels``), builds the
   stack and writes ``model.safetensors`` and ``config.yaml`` to ``output.dir`` (refusing a
   different model or different audio settings unless ``overwrite=true``);
3. removes temporary files left by a killed run, records every input whose output already
   exists as ``skipped`` (outputs are written atomically, so existing means complete);
4. decodes and resamples the rest in ``runtime.num_workers`` threads (or worker processes with
   ``batch.workers=process``) while the main thread runs the stack on ``runtime.batch_size``
   files at a time (padded batch of files of similar length, each output trimmed to its own
   length, ``extract_batch``), and one writer thread writes each file's features atomically,
   then appends its manifest record.

Every input gets one record in ``output.dir/manifest.jsonl``. A file that cannot be used
(unreadable, corrupt, empty, too short, wrong channel count, NaN/Inf samples, a crashing
decoder) gets a ``failed`` record with a one-line message and the job goes on.

Step 4 is the engine (``engine.name``): ``local`` runs it in this process as above (``LocalEngine``);
``ray`` runs it as a Ray Data pipeline (``conv_pipeline.ray_engine``). Both share everything else
here: steps 1-3, what happens to a decoded batch or a long file (``Work``: the stack, the
atomic write, the record), the manifest and the summary. ``input`` and ``output.dir`` may be
local paths or fsspec URLs (``s3://...``); ``conv_pipeline.storage`` reads and writes them.
"""

from __future__ import annotations

import glob
import os
import posixpath
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from conv_pipeline.config.schema import AUDIO_EXTENSIONS
from conv_pipeline.errors import InputError
from conv_pipeline.fs import is_url, local_path
from conv_pipeline.source.local import (
    GLOB_CHARS,
    glob_root,
    has_ext,
    posix_rel,
    read_list,
    walk_folder,
)
from conv_pipeline.source.remote import list_inputs


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
      to the pattern's literal leading folder;
    * a text file: one path per line (blank lines and ``#`` comments ignored; relative paths
      are relative to the list file's folder; taken whatever their extension), relative to
      the entries' common folder, so ``../x.wav`` still gets an output inside ``output.dir``;
    * one audio file (an audio extension): that file.

    ``spec`` may be a URL (``s3://bucket/corpus``, ``gs://...``; opened with ``options``, see
    ``storage.list_inputs``): the same four kinds on that filesystem, each input named by its URL.
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
        kind, root = "glob", glob_root(spec)
        paths = [p for p in glob.glob(spec, recursive=True) if os.path.isfile(p) and has_ext(p, exts)]
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

    ``a/b/x.wav`` -> ``a/b/x.npy``. Inputs that would share an output (``x.wav`` and
    ``x.flac`` in one folder; compared case-insensitively) keep their extension instead:
    ``x.wav.npy``, ``x.flac.npy``. Deterministic: the same inputs always give the same names.
    """
    keep = [False] * len(rels)

    def name(rel: str, keep_ext: bool) -> str:
        folder, base = posixpath.split(rel)
        stem = base if keep_ext else (posixpath.splitext(base)[0] or base)
        return posixpath.join(folder, f"{stem}.{fmt}")

    while True:
        outs = [name(r, k) for r, k in zip(rels, keep)]
        groups: dict[str, list[int]] = defaultdict(list)
        for i, out in enumerate(outs):
            groups[out.casefold()].append(i)
        clash = [i for members in groups.values() if len(members) > 1 for i in members if not keep[i]]
        if not clash:
            break
        for i in clash:
            keep[i] = True
    for members in groups.values():
        if len(members) > 1:
            names = " and ".join(rels[i] for i in members[:2])
            raise InputError(f"{names} would write the same output {outs[members[0]]}; rename one of them")
    for rel, out in zip(rels, outs):
        parts = out.split("/")
        if out.startswith("/") or ".." in parts or "" in parts[:-1]:
            raise InputError(f"{rel}: would write outside output.dir ({out}); list paths inside one folder")
    return outs
