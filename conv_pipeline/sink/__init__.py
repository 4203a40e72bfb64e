"""The sink stage: features, manifest records and the model's files written into ``output.dir``.

Flow: source -> load -> stack -> execute -> **sink** -> engines. ``execute`` produces float32
features ``(out_channels, frames)``; this stage writes them atomically (a killed run never leaves
a partial file under a final name) on a local folder or an fsspec URL, and records every input in
``manifest.jsonl``; ``engines`` decide what to write when.

* ``writer.py``: feature files (``.npy``/``.npz``, whole or streamed) and ``atomic_write``.
* ``formats/``: the one feature-writer interface (``FormatWriter``, ``open_writer``) and its
  formats: npy/npz (one file per input), parquet, kaldi, lhotse (shards; the manifest records the
  shard and the input's item and offset in it).
* ``outputs.py``: ``OutputDir``, the storage interface, and its ``LocalOutputDir`` /
  ``RemoteOutputDir`` implementations.
* ``manifest.py``: ``ManifestRecord``; appending to and reading a local ``manifest.jsonl``.
* ``manifest_sink.py``: the batch job's manifest writer, local (appends) or remote (rewrites).
* ``jobdir.py``: the weights, config and lock kept beside the features.
"""
