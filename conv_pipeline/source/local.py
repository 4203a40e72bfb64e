"""Finding inputs on the local filesystem: a folder walked recursively, or a list file read.

Flow: **source** -> load -> stack -> execute -> sink -> engines. ``source.inputs.find_inputs``
calls these for a local ``input=`` (``source.remote`` does the same on URLs); the naming rules
both share are ``source.patterns``'.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from collections.abc import Callable, Iterator

from conv_pipeline.errors import InputError
from conv_pipeline.source.patterns import glob_root, has_ext, list_entries


def posix_rel(path: str, root: str) -> str:
    """``path`` relative to ``root``, with ``/`` separators."""
    return os.path.relpath(os.path.abspath(path), os.path.abspath(root)).replace(os.sep, "/")


def walk_folder(folder: str, exts: frozenset[str]) -> list[str]:
    """Audio files under ``folder`` (recursively, symlinks followed once, hidden names skipped)."""
    return [
        path for path, rel in walk_files(folder, lambda rel: not posixpath.basename(rel).startswith("."))
        if has_ext(rel, exts) and not posixpath.basename(rel).startswith(".")
    ]


def glob_files(pattern: str, exts: frozenset[str]) -> list[str]:
    """Audio files matching a glob (``*``, ``?``, ``[...]`` within a name; ``**`` for any depth;
    names starting with ``.`` matched only by a pattern part starting with ``.``), found by the
    folder walk's rule: every real folder is searched once, so a symlink loop or a second link to
    a folder neither repeats nor hangs. Paths in ``pattern``'s spelling (``pattern`` uses ``/``)."""
    if pattern.endswith("/"):  # matches folders only
        return []
    root = glob_root(pattern)
    parts = [p for p in pattern[len(root):].split("/") if p] if root != "." or pattern.startswith("./") else pattern.split("/")
    prefix = "" if root == "." and not pattern.startswith("./") else root.rstrip("/") + "/"

    def viable(rel: str) -> bool:  # a folder some match may lie under
        states = glob_states(parts, rel.split("/"))
        return any(i < len(parts) for i in states)

    found = []
    for path, rel in walk_files(root, viable):
        if len(parts) in glob_states(parts, rel.split("/")) and has_ext(rel, exts) and os.path.isfile(path):
            found.append(prefix + rel)
    return found


def walk_files(folder: str, descend: Callable[[str], bool]) -> Iterator[tuple[str, str]]:
    """``(path, rel)`` of every file name under ``folder``, into the subfolders whose relative
    path ``descend`` accepts; symlinked folders followed, but every real folder searched once (a
    symlink loop or a second link to a folder already searched is not entered again)."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop or a second link to a folder already searched
            dirnames[:] = []
            continue
        seen.add(real)
        base = posix_rel(dirpath, folder)
        base = "" if base == "." else base + "/"
        dirnames[:] = sorted(d for d in dirnames if descend(base + d))
        for name in filenames:
            yield os.path.join(dirpath, name), base + name


def glob_states(parts: list[str], names: list[str]) -> set[int]:
    """The positions in the glob ``parts`` reachable after matching the path components
    ``names`` (``len(parts)`` in it: a whole match)."""

    def closure(states: set[int]) -> set[int]:  # ``**`` may match no folder at all
        out = set(states)
        for i in sorted(states):
            j = i
            while j < len(parts) and parts[j] == "**":
                j += 1
                out.add(j)
        return out

    states = closure({0})
    for name in names:
        step: set[int] = set()
        for i in states:
            if i >= len(parts):
                continue
            part = parts[i]
            if name.startswith(".") and not part.startswith("."):
                continue  # wildcards never match hidden names, as glob's
            if part == "**":
                step.add(i)
            elif fnmatch.fnmatch(name, part):
                step.add(i + 1)
        states = closure(step)
        if not states:
            break
    return states


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
