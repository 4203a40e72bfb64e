"""Feature formats: one ``FormatWriter`` interface (``base.py``), one module per ``output.format``.

Flow: source -> load -> stack -> execute -> **sink** -> engines. ``open_writer`` returns the
writer the plan's ``output.format`` names:

* ``npy``, ``npz`` (``files.py``): one file per input;
* ``parquet`` (``parquet.py``): ``data/part-00000.parquet`` shards, one row per input;
* ``kaldi`` (``kaldi.py``): ``feats-00000.ark`` segments and ``feats.scp`` (kaldiio);
* ``lhotse`` (``lhotse.py``): ``features-00000.h5`` segments and ``cuts.jsonl.gz`` (lhotse).

The last three need the ``formats`` extra (``pip install "conv_pipeline[formats]"``: pyarrow,
kaldiio, lhotse, h5py, lilcom); they are imported only when used.
"""

from __future__ import annotations

from typing import Any, Optional

from conv_pipeline.geometry import StackGeometry
from conv_pipeline.sink.formats.base import (
    Entry,
    FormatOptions,
    FormatWriter,
    Location,
    cast_features,
    item_id,
)


__all__ = ["Entry", "FormatOptions", "FormatWriter", "Location", "cast_features",
           "item_id", "open_writer"]


def open_writer(out: Any, options: FormatOptions, geometry: StackGeometry, config: Optional[dict] = None,
                in_channels: int = 1) -> FormatWriter:
    """The writer of ``options.format`` into ``out`` (a ``sink.outputs.OutputDir``). ``in_channels``:
    the channels the stack reads (a lhotse cut's channels)."""
    fmt = options.format
    if fmt == "parquet":
        from conv_pipeline.sink.formats.parquet import ParquetWriter as cls
    elif fmt == "kaldi":
        from conv_pipeline.sink.formats.kaldi import KaldiWriter as cls
    elif fmt == "lhotse":
        from conv_pipeline.sink.formats.lhotse import LhotseWriter as cls
    else:
        from conv_pipeline.sink.formats.files import FileWriter as cls
    return cls(out, options, geometry, config, in_channels)
