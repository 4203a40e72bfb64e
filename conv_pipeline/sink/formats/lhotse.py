"""``lhotse``: a ``cuts.jsonl.gz`` CutSet whose features live in ``features-00000.h5`` segments.

Flow: source -> load -> stack -> execute -> **sink** -> engines. A ``ShardedWriter``: each
segment is one HDF5 file written with a lhotse storage backend (``NumpyHdf5Writer``, lossless, by
default; ``LilcomHdf5Writer``, lossy, with ``output.lilcom=true``), committed atomically; then
``cuts.jsonl.gz`` is rewritten whole, atomically, with one ``MonoCut`` per input (the earlier cuts
kept, a redone input's cut replaced). Each cut:

* ``id``: ``base.item_id`` (unique, stable); ``start`` 0; ``duration`` = ``num_frames * hop /
  sampling_rate``, so that ``cut.load_features()`` returns every frame, ``(frames, channels)``,
  equal to the npy output transposed;
* ``channel``: 0 for a one-channel input, else the list of channels the stack read;
* ``recording``: a ``Recording`` whose source is the input (its own sample rate and length);
* ``features``: ``frame_shift`` = hop / sampling rate, ``num_frames``, ``num_features`` (the
  stack's output channels), ``sampling_rate`` (the rate the stack ran at), ``start`` 0,
  ``storage_type``/``storage_path``/``storage_key`` (the segment and the cut's id in it);
* ``custom``: ``hop``, ``receptive_field``, ``left_padding``, ``frame_start`` (first input
  sample of frame 0), ``input``.

``CutSet.from_file("cuts.jsonl.gz")`` reads it. In a local ``output.dir`` ``storage_path`` is the
segment's absolute path; on a URL its name relative to ``output.dir``
(``cuts.with_features_path_prefix(...)`` after copying it somewhere readable).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path
from typing import Any

from conv_pipeline.fs import staging
from conv_pipeline.sink.formats.base import Entry, Location, ShardedWriter, frame_start, item_id
from conv_pipeline.sink.writer import atomic_write

CUTS_NAME = "cuts.jsonl.gz"


class LhotseWriter(ShardedWriter):
    prefix = "features"
    suffix = "h5"
    index_name = CUTS_NAME
    storage_type = "numpy_hdf5"  # the backend's name, set by write_segment

    def storage_writer(self, path: str) -> Any:
        from lhotse.features.io import LilcomHdf5Writer, NumpyHdf5Writer

        return LilcomHdf5Writer(path) if self.options.lilcom else NumpyHdf5Writer(path)

    def write_segment(self, path: Any, name: str, entries: list[Entry]) -> list[tuple[str, int]]:
        ids = [item_id(e) for e in entries]
        with staging() as folder:  # lhotse names its file itself (it adds .h5): staged, then moved in
            writer = self.storage_writer(os.path.join(folder, name))
            with writer:
                for ident, entry in zip(ids, entries):
                    writer.write(ident, self.stored(entry))
            self.storage_type = writer.name
            atomic_write(Path(path), lambda tmp: shutil.move(writer.storage_path, tmp))
        return [(ident, row) for row, ident in enumerate(ids)]

    def index_entry(self, entry: Entry, place: Location) -> Any:
        from lhotse import AudioSource, Features, MonoCut, Recording

        channels, frames = (int(n) for n in entry.features.shape[:2])
        in_channels = self.in_channels
        rate = entry.source_rate or entry.sample_rate
        samples = entry.source_samples or entry.num_samples
        ids = list(range(in_channels))
        recording = Recording(
            id=place.item, sources=[AudioSource(type="file", channels=ids, source=entry.input)],
            sampling_rate=rate, num_samples=samples, duration=samples / rate, channel_ids=ids,
        )
        shift = self.geometry.hop / entry.sample_rate
        duration = frames * self.geometry.hop / entry.sample_rate
        channel = 0 if in_channels == 1 else ids
        features = Features(
            type="conv_pipeline", num_frames=frames, num_features=channels, frame_shift=shift,
            sampling_rate=entry.sample_rate, start=0.0, duration=duration, storage_type=self.storage_type,
            storage_path=self.storage_path(place.output), storage_key=place.item, recording_id=place.item, channels=channel,
        )
        custom = {"hop": self.geometry.hop, "receptive_field": self.geometry.receptive_field,
                  "left_padding": self.geometry.left_padding, "frame_start": frame_start(self.geometry), "input": entry.input}
        cut = MonoCut(id=place.item, start=0.0, duration=duration, channel=channel, features=features,
                      recording=recording, custom=custom)
        return cut.to_dict()

    def parse_index(self, data: bytes) -> dict[str, Any]:
        cuts = (json.loads(line) for line in gzip.decompress(data).splitlines() if line.strip())
        return {cut["id"]: cut for cut in cuts if isinstance(cut, dict) and "id" in cut}

    def index_bytes(self, index: dict[str, Any]) -> bytes:
        text = "".join(json.dumps(cut, ensure_ascii=False) + "\n" for _, cut in sorted(index.items()))
        return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)
