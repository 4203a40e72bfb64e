"""Where the batch job's inputs and outputs live: local paths or fsspec URLs.

Both engines (``batch.py``'s local one and ``ray_engine.py``) read and write through this module,
so every worker reads its inputs and writes its outputs where they live, with nothing passing
through the driver. A spec is

* a local path, or a ``file://`` / ``local://`` URL (the same thing: ``file:///data/x`` is
  ``/data/x``): the existing path-based code runs unchanged;
* any other URL fsspec knows (``s3://bucket/corpus``, ``gs://...``, ``memory://...``, chained
  ``simplecache::s3://...``): a *remote* location, opened with ``fsspec.core.url_to_fs(url,
  **storage.options)`` in each process that needs it (filesystem objects never travel; the
  options do, so every Ray worker builds its own client with the same endpoint and credentials).

Reading remote inputs: headers are read through a file object (``soundfile`` decodes by
content); a file to decode is copied to a local temporary file (``fs.get_file``: streamed,
bounded memory) and decoded by the same ``load_audio`` / chunked executor as a local file;
messages name the URL, never the temporary copy.

Writing remote outputs, atomically, the way the filesystem allows (``OutputDir.commit``):

* object stores (``s3``, ``gs``, ``az``/``abfs``, ``memory``, ...; ``OBJECT_STORES``): one PUT
  of the complete file (``fs.put_file``; a large file is one multipart upload, which becomes
  visible only when completed): readers see no object or the whole object;
* any other remote filesystem: upload under a temporary name in the same folder
  (``.<name>.tmp-xxxxxxxx``, the name ``writer.atomic_write`` uses, so temp clean-up finds it),
  then ``fs.mv`` it into place.

A feature file is produced locally first (``writer.write_features``, or the chunked executor's
streaming writer, unchanged) in a staging folder, then committed with one upload.

The manifest (``ManifestSink``): a local ``manifest.jsonl`` is appended to, one write + fsync per
call, as before. Object stores cannot append, so a remote manifest is rewritten whole, atomically
(one PUT of the previous content plus every new record), at most every ``storage.manifest_flush_s``
seconds and when the job ends (also on errors and interrupts). A run killed in between loses
only those manifest lines: their feature files exist, so the next run records them as
``skipped`` (without their metadata, which was in the lost lines).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from conv_pipeline.errors import OutputError
from conv_pipeline.fs import staging
from conv_pipeline.sink.manifest import MANIFEST_NAME, ManifestRecord, read_manifest
from conv_pipeline.sink.outputs import OutputDir


# ---------------------------------------------------------------- the manifest
class ManifestSink:
    """``output.dir/manifest.jsonl``, record by record (one writer: the local engine's writer
    thread or the Ray driver). See the module docstring for object stores."""

    def __init__(self, out: OutputDir, flush_s: float = 30.0) -> None:
        self.out = out
        self.flush_s = float(flush_s)
        self._pending: list[str] = []
        self._base = b""
        self._last = time.monotonic()
        if out.remote:
            self._base = out.read_bytes(MANIFEST_NAME) or b""
            if self._base and not self._base.endswith(b"\n"):
                self._base += b"\n"  # a torn last line stays torn (skipped when read)
        else:
            self._repair_tail()

    def _repair_tail(self) -> None:
        """A run killed mid-append can leave a last line without its newline; end it, so the next
        record starts on a line of its own (the torn line is skipped by ``read_manifest``)."""
        assert self.out.path is not None
        try:  # never through a symbolic link (``add`` refuses one with a message)
            fd = os.open(self.out.path / MANIFEST_NAME, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.pwrite(fd, b"\n", size)
                os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> dict[str, ManifestRecord]:
        """The current record of every input (``manifest.read_manifest``)."""
        if not self.out.remote:
            return read_manifest(self.out.path)  # type: ignore[arg-type]
        with staging() as folder:
            Path(folder, MANIFEST_NAME).write_bytes(self._base)
            return read_manifest(folder)

    def add(self, records: Sequence[ManifestRecord]) -> None:
        """Append ``records`` (local: one write and one fsync; remote: flushed every ``flush_s``)."""
        if not records:
            return
        lines = "".join(r.to_json() + "\n" for r in records)
        if not self.out.remote:  # one write and one fsync for all of them (as manifest.append_record)
            assert self.out.path is not None
            path = self.out.path / MANIFEST_NAME
            data = lines.encode("utf-8")
            try:  # never through a symbolic link: it could point outside output.dir
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except OSError as err:
                if path.is_symlink():
                    raise OutputError(f"{path} is a symbolic link; the manifest is never written through one (remove it)") from None
                raise OutputError(f"cannot append to {path}: {err.strerror or err}") from None
            try:
                written = os.write(fd, data)
                os.fsync(fd)
            except OSError as err:
                raise OutputError(f"cannot append to {path}: {err.strerror or err}") from None
            finally:
                os.close(fd)
            if written != len(data):
                raise OutputError(f"cannot append to {path}: only {written} of {len(data)} bytes written (disk full?)")
            return
        self._pending.append(lines)
        if time.monotonic() - self._last >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Remote: rewrite the manifest object with everything so far (one atomic PUT)."""
        if not self.out.remote or not self._pending:
            return
        data = self._base + "".join(self._pending).encode("utf-8")
        self.out.write_bytes(MANIFEST_NAME, data)  # on failure everything stays pending
        self._base, self._pending = data, []
        self._last = time.monotonic()

    def close(self) -> None:
        self.flush()
