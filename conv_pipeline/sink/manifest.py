"""``output.dir/manifest.jsonl``: one JSON record per processed input.

Fields: ``input`` (the input as given, a path or URL), ``output`` (feature file path relative to
``output.dir``, POSIX separators; null when failed), ``status`` (``ok``, ``failed`` or
``skipped``), ``error`` (one line, for failures, else null), ``sample_rate`` (Hz the features
were computed at, after resampling), ``num_samples`` (samples per channel at that rate),
``duration_s``, ``shape`` (``[out_channels, frames]``), ``seconds`` (wall time spent).

Records are appended (one ``write`` of one line, so concurrent appenders never interleave);
when an input appears more than once, its last record is the current one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

MANIFEST_NAME = "manifest.jsonl"


STATUSES = ("ok", "failed", "skipped")


@dataclass
class ManifestRecord:
    input: str
    status: str
    output: Optional[str] = None
    error: Optional[str] = None
    sample_rate: Optional[int] = None
    num_samples: Optional[int] = None
    duration_s: Optional[float] = None
    shape: Optional[list[int]] = None
    seconds: Optional[float] = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def to_json(self) -> str:
        """One line of JSON. Non-ASCII names stay readable; a name that is not valid UTF-8 (Python
        holds its bytes as lone surrogates) is escaped (``\\udcff``), so the line still encodes to
        UTF-8 and reads back to the same name."""
        text = json.dumps(asdict(self), ensure_ascii=False, sort_keys=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(asdict(self), ensure_ascii=True, sort_keys=False)
        return text


def append_record(out_dir: Path | str, record: ManifestRecord) -> None:
    """Append ``record`` as one line, flushed and fsynced, with a single ``write`` call.

    A ``manifest.jsonl`` that is a symbolic link is never written through (it could point
    anywhere outside ``output.dir``). Raises ``OutputError`` (one line) when the line cannot be
    appended."""
    from conv_pipeline.errors import OutputError

    path = Path(out_dir) / MANIFEST_NAME
    line = (record.to_json() + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as err:
        if path.is_symlink():
            raise OutputError(
                f"{path} is a symbolic link; the manifest is never written through one (remove it)"
            ) from None
        raise OutputError(f"cannot append to {path}: {err.strerror or err}") from None
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn last line (a killed or full-disk writer)
            line = b"\n" + line
        written = os.write(fd, line)
        os.fsync(fd)
    except OSError as err:
        raise OutputError(f"cannot append to {path}: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if written != len(line):  # a full disk can cut a write short: end the torn line
        raise OutputError(f"cannot append to {path}: only {written} of {len(line)} bytes written (disk full?)")


def iter_records(out_dir: Path | str) -> Iterator[ManifestRecord]:
    """Every record in file order; a torn last line (a killed writer) is skipped."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                data = json.loads(line)
                yield ManifestRecord(**{k: data.get(k) for k in ManifestRecord.__dataclass_fields__})
            except (json.JSONDecodeError, TypeError, ValueError):
                continue


def read_manifest(out_dir: Path | str) -> dict[str, ManifestRecord]:
    """The current record of every input (the last one written), in first-seen order."""
    current: dict[str, ManifestRecord] = {}
    for rec in iter_records(out_dir):
        current[rec.input] = rec
    return current
