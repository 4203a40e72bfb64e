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
``duration_s``, ``shape`` (``[out_channels, frames]``), ``seconds`` (wall time spent), for the
formats that pack many inputs into one file (``sink/formats/``) ``item`` (the input's id in
``output``: a parquet row's ``id``, a Kaldi utterance id, a lhotse cut id) and ``offset`` (the
parquet row; the byte offset of the matrix in the Kaldi ark), and the
output's identity: ``key`` (the input's canonical name: its resolved absolute path, or its URL;
one key per input however it was spelled), ``fingerprint`` (the input when it was read: size,
modification time and a hash of its first bytes) and ``weights`` (a hash of the weights that made
the features). A record from an older version lacks the last three (null: unknown), so a resumed
job recomputes its output instead of trusting it.

Records are appended with one ``write`` of whole lines, then ``fsync`` (so concurrent appenders
never interleave, and a record is on disk once the call returns); a last line torn by a killed or
full-disk writer is ended first. Reading treats the manifest as untrusted: a line that is not a
record (torn, even inside a character; not JSON; not an object; a field of the wrong type; nested
too deep) is skipped and reported. When an input (its ``key``) appears more than once, its last
record is the current one; a record whose output (and item) a later record of another input
claims is no longer current (that place now holds the other input's features).

One output name, one input: a run never writes an input's features over a file whose current
record ties it to another input (``a/speech.wav`` then ``b/speech.ogg``, both ``speech.npy``, in
one ``output.dir``). ``name_clash`` says so in one line naming both and the fixes (another
``output.dir``, or ``overwrite=true`` to replace it); the single-file run raises it
(``check_output_name``), the batch job records it as that input's ``failed`` record. The first
input's features and record stay.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

from conv_pipeline.errors import OutputError
from conv_pipeline.fs import one_line
from conv_pipeline.sink.names import MANIFEST_NAME
from conv_pipeline.sink.writer import check_regular_files

STATUSES = ("ok", "failed", "skipped")
SHARD_FIELDS = ("item", "offset")  # written only when set (parquet, kaldi, lhotse outputs)


@dataclass(slots=True)
class ManifestRecord:
    input: str
    status: str
    output: Optional[str] = None
    error: Optional[str] = None
    sample_rate: Optional[int] = None
    num_samples: Optional[int] = None
    duration_s: Optional[float] = None
    shape: Optional[list[int]] = None
    key: Optional[str] = None
    fingerprint: Optional[str] = None
    weights: Optional[str] = None
    seconds: Optional[float] = None  # last of the fields every record has, as in older versions
    item: Optional[str] = None  # parquet/kaldi/lhotse: the input's id inside ``output`` (a shard)
    offset: Optional[int] = None  # parquet: its row; kaldi: the byte offset of its matrix in the ark

    @property
    def place(self) -> tuple[Optional[str], Optional[str]]:
        """Where the features are: ``(output, item)`` (one file, or one item of a shard)."""
        return (self.output, self.item)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    @property
    def identity(self) -> str:
        """The input's canonical key (``input`` itself for a record of an older version)."""
        return self.key or self.input

    def to_json(self) -> str:
        """One line of JSON. Non-ASCII names stay readable; a name that is not valid UTF-8 (Python
        holds its bytes as lone surrogates) is escaped (``\\udcff``), so the line still encodes to
        UTF-8 and reads back to the same name."""
        data = asdict(self)
        for name in SHARD_FIELDS:  # only where a shard holds the features: other lines stay as they were
            if data[name] is None:
                del data[name]
        text = json.dumps(data, ensure_ascii=False, sort_keys=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(data, ensure_ascii=True, sort_keys=False)
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
MAX_LINE_BYTES = 1 << 20  # a record is a few hundred bytes (names up to a few KiB): longer is not one

_NUMBER = (int, float)
FIELD_TYPES: dict[str, tuple[type, ...]] = {  # every field but ``input`` and ``status`` may be null
    "input": (str,), "status": (str,), "output": (str,), "error": (str,), "sample_rate": (int,),
    "num_samples": (int,), "duration_s": _NUMBER, "shape": (list,), "seconds": _NUMBER,
    "key": (str,), "fingerprint": (str,), "weights": (str,), "item": (str,), "offset": (int,),
}


def record_from_data(data: object) -> ManifestRecord:
    """The record a decoded JSON line holds; ``ValueError`` (one line) unless it is an object whose
    fields have their types (``input`` and ``status`` required, ``shape`` a list of integers;
    unknown keys ignored)."""
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__}, not an object")
    values = {}
    for name, types in FIELD_TYPES.items():
        value = data.get(name)
        if value is None and name not in ("input", "status"):
            values[name] = None
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"field {name!r} is not a {types[0].__name__}")
        values[name] = value
    shape = values["shape"]
    if shape is not None and not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
        raise ValueError("field 'shape' is not a list of integers")
    return ManifestRecord(**values)  # checks the status


def parse_records(lines: Iterable[bytes], problems: Optional[list[str]] = None) -> Iterator[ManifestRecord]:
    """The records in ``lines`` (a manifest's lines, as bytes), in order. A line that is not a
    record (torn anywhere, even inside a character; not JSON; too long or nested too deep; not an
    object with typed fields) is skipped, and noted in ``problems`` (one line each) when given."""
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            if len(line) > MAX_LINE_BYTES:
                raise ValueError(f"{len(line)} bytes long")
            yield record_from_data(json.loads(line))  # UTF-8 bytes; a torn character is a ValueError too
        except RecursionError:
            _note(problems, number, "nested too deep")
        except (TypeError, ValueError) as err:
            _note(problems, number, one_line(str(err)) or type(err).__name__)


def _note(problems: Optional[list[str]], number: int, why: str) -> None:
    if problems is not None:
        problems.append(f"{MANIFEST_NAME} line {number}: not a record ({why[:200]}); skipped")


def iter_records(out_dir: Path | str, problems: Optional[list[str]] = None) -> Iterator[ManifestRecord]:
    """Every record in ``out_dir/manifest.jsonl``, in file order; lines that are not records are
    skipped (and noted in ``problems``, see ``parse_records``)."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return
    check_regular_files(out_dir, (MANIFEST_NAME,))  # a FIFO planted there would block forever
    with open(path, "rb") as f:
        yield from parse_records(f, problems)


def current_records(records: Iterable[ManifestRecord]) -> dict[str, ManifestRecord]:
    """The current record of every input (the last record of its ``identity``: one however the
    input was spelled), in first-seen order, keyed by ``input`` as that record spells it (by its
    identity where two inputs are spelled alike, e.g. one relative path run from two folders). A
    record whose output file a later record of another input claims (an ``ok``/``skipped`` record
    naming the same output) is dropped: the file holds that input's features now."""
    current: dict[str, ManifestRecord] = {}
    owner: dict[tuple, str] = {}  # (output, item) -> the identity of the input whose features it holds
    for rec in records:
        current[rec.identity] = rec
        if rec.output and rec.status in ("ok", "skipped"):
            owner[rec.place] = rec.identity
    keyed: dict[str, ManifestRecord] = {}
    for ident, rec in current.items():
        if not rec.output or owner.get(rec.place, ident) == ident:
            keyed[rec.input if rec.input not in keyed else ident] = rec
    return keyed


def name_clash(owner: Optional[ManifestRecord], input: str, key: str, where: str) -> Optional[str]:
    """The one-line refusal when ``owner`` (the current record naming the output file ``where``)
    ties that file to another input than ``input`` (canonical ``key``); None when it is this input's
    (or unknown: no such record, not ``ok``/``skipped``, or a record of an older version without
    ``key``), so the output may be written."""
    if owner is None or owner.status not in ("ok", "skipped") or owner.key is None or owner.key == key:
        return None
    return (
        f"{where} already holds the features of {owner.input}; {input} has the same output name and would "
        "replace them: use another output.dir to keep both, or overwrite=true to replace them"
    )


def check_output_name(out_dir: Path | str, output: str, input: str, key: str, overwrite: bool = False) -> None:
    """Refuse (``OutputError``, one line naming both inputs) to write ``input``'s features (its
    canonical ``key``) to ``out_dir/output`` when that file exists and the manifest's current record
    for it is another input's (``name_clash``): the first input's features are kept. Nothing is
    checked with ``overwrite`` (the file is replaced; its old record stops being current)."""
    path = Path(out_dir) / output
    if overwrite or not path.is_file():
        return
    owner = None
    for rec in read_manifest(out_dir).values():
        if rec.output == output and rec.status in ("ok", "skipped"):
            owner = rec
    message = name_clash(owner, input, key, str(path))
    if message is not None:
        raise OutputError(message)


def read_manifest(out_dir: Path | str, problems: Optional[list[str]] = None) -> dict[str, ManifestRecord]:
    """The current record of every input in ``out_dir/manifest.jsonl`` (``current_records``);
    lines that are not records are skipped and noted in ``problems``."""
    return current_records(iter_records(out_dir, problems))
