"""The rules that name inputs, the same on local paths and URLs (``source.local``, ``source.remote``).

Flow: **source** -> load -> stack -> execute -> sink -> engines. ``source.inputs.find_inputs``
turns ``input=`` into a list of files; whichever filesystem holds them, an audio file is known by
its extension (``has_ext``), a glob by its wildcards (``GLOB_CHARS``), the folder an output tree
mirrors for a glob is its literal leading part (``glob_root``), and a list file is one path per
line (``list_entries``).
"""

from __future__ import annotations

import os
from typing import Optional

from conv_pipeline.errors import InputError

GLOB_CHARS = frozenset("*?[")


def has_ext(name: str, exts: frozenset[str]) -> bool:
    """True when ``name``'s extension (case-insensitive, without its dot) is one of ``exts``."""
    return os.path.splitext(name)[1][1:].lower() in exts


def glob_root(pattern: str) -> str:
    """The literal folder before the first component with a wildcard, in ``pattern``'s spelling
    with ``/`` separators: ``corpus/**/*.wav`` -> ``corpus``, ``s3://b/corpus/*.wav`` ->
    ``s3://b/corpus``; ``.`` when the first component has one, ``/`` for ``/x*/...``."""
    literal: list[str] = []
    for part in pattern.split("/")[:-1]:
        if GLOB_CHARS & set(part):
            break
        literal.append(part)
    if not literal:
        return "."
    return "/".join(literal) or "/"


def list_entries(text: Optional[str], spec: str, example_glob: str) -> list[str]:
    """The entries of a list file read as ``text``: its lines stripped, blank lines and ``#``
    comments left out. ``text`` that is ``None`` (not decodable) or holds NULs is not a list:
    ``InputError`` naming ``input=spec`` and what to give instead (``example_glob``)."""
    if text is None or "\x00" in text:
        raise InputError(
            f"input={spec!r} is neither a folder, a glob nor a text list; give a folder, a glob "
            f"like {example_glob!r} or a text file with one audio path per line"
        )
    entries = (line.strip() for line in text.splitlines())
    return [entry for entry in entries if entry and not entry.startswith("#")]
