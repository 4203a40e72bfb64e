"""Finding inputs on the local filesystem: a folder walked recursively, or a list file read.

Flow: **source** -> load -> stack -> execute -> sink -> engines. ``source.inputs.find_inputs``
calls these for a local ``input=`` (``source.remote`` does the same on URLs); the naming rules
both share are ``source.patterns``'.
"""

from __future__ import annotations

import os

from conv_pipeline.errors import InputError
from conv_pipeline.source.patterns import has_ext, list_entries


def posix_rel(path: str, root: str) -> str:
    """``path`` relative to ``root``, with ``/`` separators."""
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


def read_list(list_path: str) -> list[str]:
    """The paths a list file names, one per line; relative ones are relative to the list's folder."""
    try:
        with open(list_path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise InputError(f"input={list_path!r}: cannot read the list file ({err.strerror or err})") from None
    # names that are not UTF-8 survive as surrogates, as os.fsdecode gives them; NULs mean binary
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    base = os.path.dirname(list_path)
    return [
        entry if os.path.isabs(entry) else os.path.normpath(os.path.join(base, entry))
        for entry in list_entries(text, list_path, "corpus/**/*.wav")
    ]
