"""The batch job's manifest writer: ``output.dir/manifest.jsonl`` kept record by record, on a
local folder or a remote prefix.

Flow: source -> load -> stack -> execute -> **sink** -> engines. The batch job
(``engines.job``) opens one ``ManifestSink`` per run; its single writer (the local engine's
writer thread, or the Ray driver) adds every input's record. ``ManifestSink(out, flush_s)``
returns the implementation ``out`` (a ``sink.outputs.OutputDir``) needs:

* ``LocalManifestSink``: ``sink.manifest``'s appends (one write + fsync per call, a torn last line
  ended, never through a symbolic link), the same code the single-file CLI uses.
* ``RemoteManifestSink``: object stores cannot append, so the manifest is rewritten whole,
  atomically (one ``OutputDir.write_bytes`` of the previous content plus every new record), at
  most every ``storage.manifest_flush_s`` seconds and when the job ends (``close``, also on errors
  and interrupts). A run killed in between loses only those manifest lines: their feature files
  exist but nothing ties them to their input and weights any more, so the next run recomputes them.
"""

from __future__ import annotations

import abc
import time
from typing import Optional, Sequence

from conv_pipeline.sink.manifest import (
    MANIFEST_NAME,
    ManifestRecord,
    append_records,
    current_records,
    end_torn_line,
    manifest_lines,
    parse_records,
    read_manifest,
)
from conv_pipeline.sink.outputs import OutputDir
from conv_pipeline.sink.writer import check_guarded


class ManifestSink(abc.ABC):
    """``output.dir/manifest.jsonl``, record by record, for one writer: ``ManifestSink(out,
    flush_s)`` is a ``LocalManifestSink`` or, for a remote ``out``, a ``RemoteManifestSink``."""

    def __new__(cls, out: OutputDir, flush_s: float = 30.0) -> ManifestSink:  # noqa: PYI034 - returns the subclass
        """``ManifestSink(...)`` builds the implementation the folder needs (a subclass builds itself)."""
        impl = cls
        if cls is ManifestSink:
            impl = RemoteManifestSink if out.remote else LocalManifestSink
        return super().__new__(impl)

    def __init__(self, out: OutputDir, flush_s: float = 30.0) -> None:
        self.out = out
        self.flush_s = float(flush_s)

    @abc.abstractmethod
    def read(self, problems: Optional[list[str]] = None) -> dict[str, ManifestRecord]:
        """The current record of every input, as the run found it (``manifest.read_manifest``);
        lines that are not records are skipped and noted in ``problems``."""

    @abc.abstractmethod
    def add(self, records: Sequence[ManifestRecord]) -> None:
        """Record ``records``, in order."""

    def flush(self) -> None:
        """Make every record added so far durable where it is not yet."""

    def close(self) -> None:
        """The job's end (also on errors and interrupts): flush."""
        self.flush()


class LocalManifestSink(ManifestSink):
    """A local ``manifest.jsonl``: each ``add`` is one append, on disk when it returns. A torn last
    line left by a killed run is ended when the sink opens."""

    def __init__(self, out: OutputDir, flush_s: float = 30.0) -> None:
        super().__init__(out, flush_s)
        assert out.path is not None
        self.folder = out.path
        end_torn_line(self.folder)

    def read(self, problems: Optional[list[str]] = None) -> dict[str, ManifestRecord]:
        return read_manifest(self.folder, problems)

    def add(self, records: Sequence[ManifestRecord]) -> None:
        check_guarded(self.folder / MANIFEST_NAME)  # the locked folder, not one made again in its place
        append_records(self.folder, records)


class RemoteManifestSink(ManifestSink):
    """A remote ``manifest.jsonl``: the previous content read once; every ``flush`` rewrites the
    object with it and the records added since (one atomic write), at most every ``flush_s``
    seconds (and on ``close``)."""

    def __init__(self, out: OutputDir, flush_s: float = 30.0) -> None:
        super().__init__(out, flush_s)
        self._pending: list[str] = []
        self._base = out.read_bytes(MANIFEST_NAME) or b""
        if self._base and not self._base.endswith(b"\n"):
            self._base += b"\n"  # a torn last line stays torn (skipped when read)
        self._last = time.monotonic()

    def read(self, problems: Optional[list[str]] = None) -> dict[str, ManifestRecord]:
        return current_records(parse_records(self._base.split(b"\n"), problems))

    def add(self, records: Sequence[ManifestRecord]) -> None:
        if not records:
            return
        self._pending.append(manifest_lines(records))
        if time.monotonic() - self._last >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Rewrite the manifest object with everything so far (one atomic write); on failure
        everything stays pending."""
        if not self._pending:
            return
        data = self._base + "".join(self._pending).encode("utf-8")
        self.out.write_bytes(MANIFEST_NAME, data)
        self._base, self._pending = data, []
        self._last = time.monotonic()
