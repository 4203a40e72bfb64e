"""The one feature-writer interface every ``output.format`` implements, and what the formats share.

Flow: source -> load -> stack -> execute -> **sink** -> engines. ``execute`` hands over float32
features ``(out_channels, frames)`` for one input (an ``Entry``); a ``FormatWriter`` turns them
into the stored form (``cast_features``: ``output.dtype``, time-major where the format wants it)
and returns, for every input whose features are now committed, a ``Location``: the file under
``output.dir`` that holds them (``output``), and for the formats that pack many inputs into one
file the item inside it (``item``: a parquet row's key, a Kaldi utterance id, a lhotse cut id)
and ``offset`` (the parquet row, the byte offset in the ark). The engines make one manifest
record per ``Location`` only after ``write`` or ``flush`` returned it: the manifest is the
commit point.

Two kinds:

* per input (``npy``, ``npz``: ``files.py``): ``write`` commits the input's own file at once;
* sharded (``parquet``, ``kaldi``, ``lhotse``; ``ShardedWriter``): ``write`` adds the input to the
  segment in progress and commits the segment (one file, written atomically through
  ``OutputDir.writing``) when it holds ``output.shard_items`` inputs or ``output.shard_mb`` MB;
  ``flush`` commits what is pending (the job's end). A killed job loses at most the segment in
  progress, whose inputs have no record, so resume redoes only those. Segments are numbered after
  the highest one already in ``output.dir``, so a resumed job never replaces a committed segment.
  Formats with an index file (``feats.scp``, ``cuts.jsonl.gz``) rewrite it whole, atomically,
  after each segment: the previous index (read when the writer opens) plus the new entries, one
  entry per input key (a redone input replaces its old entry).
"""

from __future__ import annotations

import abc
import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from conv_pipeline.errors import InputError
from conv_pipeline.geometry import StackGeometry

FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


@dataclass(frozen=True)
class FormatOptions:
    """The ``output.*`` settings a writer needs (``output.dir`` is the ``OutputDir``)."""

    format: str = "npy"
    dtype: str = "float32"
    time_major: bool = False  # npy/npz only; the sharded formats are always time-major
    compress: bool = False  # npz: savez_compressed
    shard_items: int = 1000
    shard_mb: float = 256.0
    lilcom: bool = False  # lhotse: lilcom (lossy) instead of lossless numpy arrays in HDF5

    @property
    def plain(self) -> bool:
        """npy/npz, float32, channel-major, uncompressed: what ``sink.writer`` writes as it is."""
        return self.format in ("npy", "npz") and self.dtype == "float32" and not self.time_major and not self.compress

    @classmethod
    def from_config(cls, output: Any) -> "FormatOptions":
        """From an ``OutputConfig`` (or anything with its attributes); absent ones keep the defaults."""
        fmt = getattr(output, "format", "npy")
        fmt = getattr(fmt, "value", fmt)
        values = {name: getattr(output, name) for name in cls.__dataclass_fields__ if name != "format" and hasattr(output, name)}
        return cls(format=str(fmt), **values)


@dataclass
class Entry:
    """One input's features on their way to the output. ``features``: float32 ``(channels, frames)``
    (as ``execute`` makes them; a read-only memory map is fine). ``key``: the input's canonical key
    (``engines.work.input_key``); ``out_rel``: its planned per-input name (``<stem>.<format>``);
    ``sample_rate``/``num_samples``: the rate the stack ran at and the samples per channel there;
    ``source_rate``/``source_samples``: the input file's own (a lhotse ``Recording``; 0 = the same)."""

    input: str
    key: str
    out_rel: str
    features: np.ndarray
    sample_rate: int
    num_samples: int
    source_rate: int = 0
    source_samples: int = 0
    tag: Any = None  # the caller's own (the engines: the job's item), handed back with the Location

    @property
    def nbytes(self) -> int:
        return int(self.features.size) * 4


@dataclass(frozen=True)
class Location:
    """Where an input's features are: ``output`` (a file under ``output.dir``, POSIX), and for the
    sharded formats ``item`` (the key inside it) and ``offset`` (parquet row; ark byte offset)."""

    output: str
    item: Optional[str] = None
    offset: Optional[int] = None


def cast_features(features: np.ndarray, dtype: str, time_major: bool) -> np.ndarray:
    """``features`` ``(channels, frames)`` as stored: ``dtype`` (float32 or float16), transposed to
    ``(frames, channels)`` when ``time_major``, C-contiguous. The writers' ``write`` refuses values
    beyond float16's range first (``check_float16``, naming the input), once per input."""
    features = np.asarray(features)
    out = features.T if time_major else features
    return np.ascontiguousarray(out, dtype=np.float16 if dtype == "float16" else np.float32)


def check_float16(features: np.ndarray, what: str) -> None:
    """``InputError`` (one line, naming ``what``) when ``features`` hold values float16 cannot hold."""
    peak = float(np.max(np.abs(features))) if features.size else 0.0
    if peak > FLOAT16_MAX:
        raise InputError(
            f"{what}: the features reach {peak:.4g}, beyond float16's largest value {FLOAT16_MAX:g}; "
            "nothing was written: use output.dtype=float32 (or a model with smaller outputs)"
        )


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def item_id(entry: Entry) -> str:
    """A key for ``entry`` inside a shared file: unique (a hash of the input's canonical key), stable
    (the same for the same input in every run) and a valid Kaldi utterance id / lhotse cut id (ASCII
    letters, digits, ``._-``; no spaces): ``<output name, its extension dropped, other characters as
    _>-<8 hex digits>``."""
    stem = entry.out_rel.rsplit(".", 1)[0] if "." in entry.out_rel.rsplit("/", 1)[-1] else entry.out_rel
    safe = _UNSAFE.sub("_", stem.replace("/", "__")).strip("_")[:120] or "input"
    digest = hashlib.sha1(entry.key.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{safe}-{digest}"


def frame_start(geometry: StackGeometry) -> int:
    """The first input sample of frame 0 (negative inside the left padding)."""
    return -int(geometry.left_padding)


class FormatWriter(abc.ABC):
    """Writes the features of a run's inputs into ``output.dir`` in one format (see the module
    docstring). ``out``: a ``sink.outputs.OutputDir``; ``geometry``: the stack's; ``config``: the
    resolved config as plain data (stored where the format has room for it); ``in_channels``: the
    channels the stack reads (a lhotse cut's)."""

    per_input: bool = True  # True: one file per input (npy/npz); False: many inputs per file

    def __init__(self, out: Any, options: FormatOptions, geometry: StackGeometry, config: Optional[dict] = None,
                 in_channels: int = 1) -> None:
        self.out, self.options, self.geometry = out, options, geometry
        self.config = dict(config or {})
        self.in_channels = max(1, int(in_channels))

    def stored(self, entry: Entry, time_major: bool = True) -> np.ndarray:
        """``entry``'s features as this writer stores them (``cast_features``)."""
        return cast_features(entry.features, self.options.dtype, time_major)

    @abc.abstractmethod
    def write(self, entry: Entry, sync: bool = True) -> list[tuple[Entry, Location]]:
        """Take one input's features; return the inputs committed by this call (for a per-input
        format, ``entry`` itself; for a sharded one, a whole segment or nothing). Raises
        ``PipelineError`` (one line) when ``entry`` cannot be stored (float16 overflow: nothing
        of it is kept) or a segment cannot be written (then none of its inputs is committed)."""

    def flush(self) -> list[tuple[Entry, Location]]:
        """Commit what is pending; the inputs committed."""
        return []

    def abandon(self) -> list[Entry]:
        """Drop what is pending (after ``flush`` raised: none of it is committed); the inputs dropped."""
        return []

    def holds(self, entry: Entry) -> bool:
        """True when ``entry`` is pending in a segment (so a failed ``write`` failed the segment)."""
        return False


@dataclass
class Segment:
    """The inputs of one sharded segment in progress."""

    entries: list[Entry] = field(default_factory=list)
    nbytes: int = 0


class ShardedWriter(FormatWriter):
    """A format that packs many inputs into one segment file (``<prefix>-<index:05d>.<suffix>``).
    Subclasses implement ``write_segment`` (write the pending entries into a local file, return each
    entry's ``(item, offset)``) and, when they keep an index file, ``update_index``."""

    per_input = False
    prefix = "part"
    suffix = "bin"
    tag = ""  # 8 hex digits set by a writer that shares output.dir with others (a Ray actor): in its names

    def __init__(self, out: Any, options: FormatOptions, geometry: StackGeometry, config: Optional[dict] = None,
                 in_channels: int = 1) -> None:
        super().__init__(out, options, geometry, config, in_channels)
        self.segment = Segment()
        self.next_index = self.first_free_index()

    def segment_name(self, index: int) -> str:
        return f"{self.prefix}-{index:05d}{'-' + self.tag if self.tag else ''}.{self.suffix}"

    def first_free_index(self) -> int:
        """One past the highest segment already in ``output.dir`` (0 in a new one)."""
        pattern = re.compile(rf"^{re.escape(self.prefix)}-(\d+)(?:-[0-9a-f]{{8}})?\.{re.escape(self.suffix)}$")
        found = [int(m.group(1)) for rel in self.out.files() if (m := pattern.match(rel))]
        return max(found) + 1 if found else 0

    def write(self, entry: Entry, sync: bool = True) -> list[tuple[Entry, Location]]:
        if self.options.dtype == "float16":  # overflow refused now, for this input only
            check_float16(entry.features, entry.input)
        self.segment.entries.append(entry)
        self.segment.nbytes += entry.nbytes
        full = len(self.segment.entries) >= self.options.shard_items or self.segment.nbytes >= self.options.shard_mb * 1e6
        return self.flush() if full else []

    def flush(self) -> list[tuple[Entry, Location]]:
        entries = self.segment.entries
        if not entries:
            return []
        name = self.segment_name(self.next_index)
        with self.out.writing(name) as path:  # on an error the segment stays pending: see abandon
            places = self.write_segment(path, name, entries)
        self.next_index += 1
        done = [(e, Location(name, item, offset)) for e, (item, offset) in zip(entries, places)]
        self.update_index(done)
        self.segment = Segment()
        return done

    def abandon(self) -> list[Entry]:
        dropped, self.segment = self.segment.entries, Segment()
        return dropped

    def holds(self, entry: Entry) -> bool:
        return any(e is entry for e in self.segment.entries)

    @abc.abstractmethod
    def write_segment(self, path: Any, name: str, entries: list[Entry]) -> list[tuple[str, int]]:
        """Write ``entries`` into the segment file ``path`` (atomically: ``sink.writer.atomic_write``),
        known as ``name`` under ``output.dir``; each entry's ``(item, offset)``."""

    # -- the index file (feats.scp, cuts.jsonl.gz): rewritten whole after every segment
    index_name: Optional[str] = None

    def update_index(self, done: list[tuple[Entry, Location]]) -> None:
        """Record the committed entries in the format's index file, if it has one: the index read
        when the writer opened, updated by id (a redone input replaces its entry), written atomically."""
        if self.index_name is None:
            return
        if self.index is None:
            data = self.out.read_bytes(self.index_name)
            self.index = self.parse_index(data) if data else {}
        for entry, place in done:
            self.index[place.item or ""] = self.index_entry(entry, place)
        self.out.write_bytes(self.index_name, self.index_bytes(self.index))

    index: Optional[dict[str, Any]] = None  # id -> entry of the index file, once read

    def parse_index(self, data: bytes) -> dict[str, Any]:
        """The entries of an existing index file, by id."""
        raise NotImplementedError

    def index_entry(self, entry: Entry, place: Location) -> Any:
        """``entry``'s entry in the index file."""
        raise NotImplementedError

    def index_bytes(self, index: dict[str, Any]) -> bytes:
        """The index file's content."""
        raise NotImplementedError

    def storage_path(self, name: str) -> str:
        """How an index file names the segment ``name``: its absolute path in a local ``output.dir``
        (the index then works from any folder), ``name`` itself (relative to ``output.dir``) on a URL."""
        return os.path.abspath(self.out.path / name) if self.out.path is not None else name
