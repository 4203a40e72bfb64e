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

import os

from conv_pipeline.errors import InputError

GLOB_CHARS = frozenset("*?[")


def has_ext(name: str, exts: frozenset[str]) -> bool:
    return os.path.splitext(name)[1][1:].lower() in exts


def posix_rel(path: str, root: str) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(root)).replace(os.sep, "/")


def walk_folder(folder: str, exts: frozenset[str]) -> list[str]:
    """Audio files under ``folder`` (recursively, symlinks followed once, hidden names skipped)."""
    found: list[str] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop or a second link to a folder already searched
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and has_ext(name, exts):
                found.append(os.path.join(dirpath, name))
    return found


def glob_root(pattern: str) -> str:
    """The literal folder before the first component with a wildcard (``corpus/**/*.wav`` -> ``corpus``)."""
    parts = pattern.replace(os.sep, "/").split("/")
    literal: list[str] = []
    for part in parts[:-1]:
        if GLOB_CHARS & set(part):
            break
        literal.append(part)
    if not literal:
        return "."
    root = "/".join(literal)
    return root or "/"


def read_list(list_path: str) -> list[str]:
    try:
        with open(list_path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise InputError(f"input={list_path!r}: cannot read the list file ({err.strerror or err})") from None
    # names that are not UTF-8 survive as surrogates, as os.fsdecode gives them; NULs mean binary
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    if "\x00" in text:
        raise InputError(
            f"input={list_path!r} is neither a folder, a glob nor a text list; give a folder, a glob "
            "like 'corpus/**/*.wav' or a text file with one audio path per line"
        )
    base = os.path.dirname(list_path)
    entries = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        entries.append(entry if os.path.isabs(entry) else os.path.normpath(os.path.join(base, entry)))
    return entries
