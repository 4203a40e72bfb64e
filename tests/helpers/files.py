"""What a folder holds: its files, the atomic writes' leftovers."""

from __future__ import annotations

from pathlib import Path


def files_under(folder: Path) -> set[str]:
    """Every file below ``folder``, as POSIX paths relative to it."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def temp_files(folder: Path) -> list[Path]:
    """The temporary files of atomic writes (``.NAME.tmp-XXXXXXXX``) below ``folder``, if it exists."""
    return [p for p in folder.rglob("*") if ".tmp-" in p.name] if folder.exists() else []
