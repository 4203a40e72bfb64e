"""``output.dir/manifest.jsonl``: one JSON record per processed input, and the one way a local
manifest is appended to and read.

Flow: source -> load -> stack -> execute -> **sink** -> engines. Every run records what it did
here: the single-file CLI (``engines.single``, ``append_record``), the batch job through
``sink.manifest_sink.ManifestSink`` (``append_records`` on a local folder; a remote manifest is
rewritten whole, see there), and ``dataset.features`` reads it back (``read_manifest``).

Fields: ``input`` (the input as given, a path or URL), ``output`` (feature file path relative to
``output.dir``, POSIX separators; null when failed), ``status`` (``ok``, ``failed`` or
``skipped``), ``error`` (one line, for failures, else null), ``sample_rate`` (Hz the features
were computed at, after resampling), ``num_samples`` (samples per channel at that rate),
``duration_s``, ``shape`` (``[out_channels, frames]``), ``seconds`` (wall time spent).

Records are appended with one ``write`` of whole lines, then ``fsync`` (so concurrent appenders
never interleave, and a record is on disk once the call returns); a last line torn by a killed or
full-disk writer is ended first, and skipped when read. When an input appears more than once, its
last record is the current one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

from conv_pipeline.errors import OutputError
from conv_pipeline.sink.names import MANIFEST_NAME

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


# ---------------------------------------------------------------- writing (a local folder)
def manifest_lines(records: Iterable[ManifestRecord]) -> str:
    """``records`` as manifest lines, each ended by a newline."""
    return "".join(r.to_json() + "\n" for r in records)


def _torn(fd: int) -> bool:
    """True when the file's last byte is not a newline (a writer killed mid-line)."""
    size = os.fstat(fd).st_size
    return bool(size) and os.pread(fd, 1, size - 1) != b"\n"


def append_records(out_dir: Path | str, records: Sequence[ManifestRecord]) -> None:
    """Append ``records`` to ``out_dir/manifest.jsonl``, one line each, with a single ``write``
    call, then ``fsync``; a torn last line is ended first.

    A ``manifest.jsonl`` that is a symbolic link is never written through (it could point
    anywhere outside ``output.dir``). Raises ``OutputError`` (one line) when the lines cannot be
    appended, or only part of them (a full disk; the torn line is ended by the next append)."""
    if not records:
        return
    path = Path(out_dir) / MANIFEST_NAME
    data = manifest_lines(records).encode("utf-8")
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as err:
        if path.is_symlink():
            raise OutputError(f"{path} is a symbolic link; the manifest is never written through one (remove it)") from None
        raise OutputError(f"cannot append to {path}: {err.strerror or err}") from None
    try:
        if _torn(fd):
            data = b"\n" + data
        written = os.write(fd, data)
        os.fsync(fd)
    except OSError as err:
        raise OutputError(f"cannot append to {path}: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if written != len(data):
        raise OutputError(f"cannot append to {path}: only {written} of {len(data)} bytes written (disk full?)")


def append_record(out_dir: Path | str, record: ManifestRecord) -> None:
    """``append_records`` for one record."""
    append_records(out_dir, [record])


def end_torn_line(out_dir: Path | str) -> None:
    """End a last line left without its newline by a killed run, so the next record starts on a
    line of its own. Does nothing when there is no manifest, or it is a symbolic link (never
    written through; ``append_records`` refuses it with a message)."""
    try:
        fd = os.open(Path(out_dir) / MANIFEST_NAME, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return
    try:
        if _torn(fd):
            os.pwrite(fd, b"\n", os.fstat(fd).st_size)
            os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading
def parse_records(lines: Iterable[bytes]) -> Iterator[ManifestRecord]:
    """The records in ``lines`` (a manifest's lines, as bytes), in order; a line that is not a
    record (a torn last line, cut anywhere, even inside a character) is skipped."""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            data = json.loads(line)  # UTF-8 bytes; a torn character is a ValueError too
            if isinstance(data, dict):
                yield ManifestRecord(**{k: data.get(k) for k in ManifestRecord.__dataclass_fields__})
        except (TypeError, ValueError):
            continue


def iter_records(out_dir: Path | str) -> Iterator[ManifestRecord]:
    """Every record in ``out_dir/manifest.jsonl``, in file order; a torn last line is skipped."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return
    with open(path, "rb") as f:
        yield from parse_records(f)


def current_records(records: Iterable[ManifestRecord]) -> dict[str, ManifestRecord]:
    """The current record of every input (the last one), in first-seen order."""
    current: dict[str, ManifestRecord] = {}
    for rec in records:
        current[rec.input] = rec
    return current


def read_manifest(out_dir: Path | str) -> dict[str, ManifestRecord]:
    """The current record of every input in ``out_dir/manifest.jsonl`` (the last one written),
    in first-seen order."""
    return current_records(iter_records(out_dir))
