"""``parquet``: shards ``data/part-00000.parquet`` ..., one row per input (pyarrow).

Flow: source -> load -> stack -> execute -> **sink** -> engines. A ``ShardedWriter``: a shard
holds at most ``output.shard_items`` inputs or ``output.shard_mb`` MB of features and is written
atomically (a temporary name, then a rename; one PUT on an object store), so a killed job loses
at most the shard in progress. Columns, one row per input:

* ``input`` (the input as given), ``key`` (its canonical key), ``id`` (stable, unique: ``base.item_id``);
* ``features``: ``list<list<float>>``, time-major ``(frames, channels)`` (``float`` or ``halffloat``
  as ``output.dtype`` says);
* ``num_frames``, ``num_channels``, ``sample_rate`` (Hz the stack ran at), ``num_samples``,
  ``hop``, ``receptive_field``, ``frame_start`` (the first input sample of frame 0; negative inside
  the left padding): int64;
* ``config``: the resolved config as JSON (the same string in every row; dictionary-encoded).

The shards sit in ``data/`` (``output.dir``'s root holds the manifest, config and weights), so
``pyarrow.parquet.read_table("<output.dir>/data")`` (the shards as one table),
``datasets.load_dataset("parquet", data_dir="<output.dir>/data")`` and
``ray.data.read_parquet("<output.dir>/data")`` read them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from conv_pipeline.sink.formats.base import Entry, ShardedWriter, frame_start, item_id
from conv_pipeline.sink.writer import atomic_write

ROWS_PER_GROUP = 64  # rows per parquet row group: a reader fetching one row reads one group


def features_column(arrays: list[np.ndarray]) -> Any:
    """``(frames, channels)`` arrays as one ``list<list<value>>`` pyarrow array (no per-value Python work)."""
    import pyarrow as pa

    channels = [int(a.shape[1]) for a in arrays]
    frames = [int(a.shape[0]) for a in arrays]
    flat = pa.array(np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, np.float32))
    inner_offsets = np.zeros(sum(frames) + 1, dtype=np.int64)  # one list per frame
    inner_offsets[1:] = np.cumsum(np.repeat(channels, frames))
    rows = pa.ListArray.from_arrays(pa.array(inner_offsets.astype(np.int32)), flat)  # shard_mb keeps it < 2**31
    outer_offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    outer_offsets[1:] = np.cumsum(frames)
    return pa.ListArray.from_arrays(pa.array(outer_offsets), rows)


class ParquetWriter(ShardedWriter):
    prefix = "data/part"
    suffix = "parquet"

    def write_segment(self, path: Any, name: str, entries: list[Entry]) -> list[tuple[str, int]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        stored = [self.stored(e) for e in entries]
        ids = [item_id(e) for e in entries]
        n = len(entries)
        ints = lambda values: pa.array(values, type=pa.int64())  # noqa: E731
        table = pa.table({
            "input": pa.array([e.input for e in entries], type=pa.string()),
            "key": pa.array([e.key for e in entries], type=pa.string()),
            "id": pa.array(ids, type=pa.string()),
            "features": features_column(stored),
            "num_frames": ints([a.shape[0] for a in stored]),
            "num_channels": ints([a.shape[1] for a in stored]),
            "sample_rate": ints([e.sample_rate for e in entries]),
            "num_samples": ints([e.num_samples for e in entries]),
            "hop": ints([self.geometry.hop] * n),
            "receptive_field": ints([self.geometry.receptive_field] * n),
            "frame_start": ints([frame_start(self.geometry)] * n),
            "config": pa.array([json.dumps(self.config, sort_keys=True)] * n, type=pa.string()).dictionary_encode(),
        })
        atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp, row_group_size=ROWS_PER_GROUP))
        return [(ident, row) for row, ident in enumerate(ids)]
