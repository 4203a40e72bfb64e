"""Reading one input's features out of a shard file: a parquet shard, a Kaldi ark or a lhotse
HDF5 segment (``sink/formats/``), found through its manifest record (``output``, ``item``,
``offset``).

Flow: sink -> **dataset**. ``read_shard_item`` returns the features as the per-input formats
give them, ``(channels, frames)`` (a transposed view of the stored time-major array; float32, or
float16 when written so). Shard files are untrusted input: the item must be where the record
says (its id checked against the parquet row and the Kaldi ark), anything else is a one-line
``InputError`` naming the file. The libraries (pyarrow, kaldiio, h5py: the ``formats`` extra) are
imported only here, and only when such a file is read.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Optional

import numpy as np

from conv_pipeline.errors import InputError

SHARD_SUFFIXES = {".parquet": "parquet", ".ark": "kaldi", ".h5": "lhotse"}


def read_shard_item(path: Path, item: Optional[str], offset: Optional[int]) -> np.ndarray:
    """The features ``(channels, frames)`` of ``item`` (at ``offset``: the parquet row, the ark byte
    offset) in the shard ``path``."""
    fmt = SHARD_SUFFIXES[path.suffix]
    if not item:
        raise InputError(f"{path}: a {fmt} shard holds many inputs; read it through its output folder "
                         "(FeatureDataset, or load_features(path, item=ID) with an id from manifest.jsonl)")
    try:
        if fmt == "parquet":
            stored = _parquet_row(path, item, offset)
        elif fmt == "kaldi":
            stored = _ark_matrix(path, item, offset)
        else:
            stored = _h5_array(path, item)
    except InputError:
        raise
    except ImportError as err:
        raise InputError(f"{path}: reading {fmt} shards needs {err.name}: pip install 'conv_pipeline[formats]'") from None
    except Exception as err:  # noqa: BLE001 - each library raises its own types for damaged files
        raise InputError(f"{path}: cannot read {item!r} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                         "the shard is damaged or not one conv_pipeline wrote") from None
    if stored.ndim != 2:
        raise InputError(f"{path}: {item!r} holds a {stored.ndim}-D array; features are 2-D (frames, channels)")
    return stored.T


def _parquet_row(path: Path, item: str, offset: Optional[int]) -> np.ndarray:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    row = _find_row(pf, item, offset)
    if row is None:
        raise InputError(f"{path}: no row with id {item!r}; the manifest and the shard disagree (re-run the job)")
    group, index = row
    st = path.stat()
    features, num_channels = _row_group(str(path), (st.st_size, st.st_mtime_ns), group)
    one = features[index].values  # list<value> per frame
    channels = int(num_channels[index].as_py())
    flat = one.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(-1, channels) if channels else flat.reshape(0, 0)


@functools.lru_cache(maxsize=2)
def _row_group(path: str, stamp: tuple[int, int], group: int) -> tuple[Any, Any]:
    """The ``features`` and ``num_channels`` columns of one row group, decoded once for the items read
    one after another from it (a ``FeatureDataset`` pass); ``stamp`` (size, mtime) keys a rewritten file apart."""
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path).read_row_group(group, columns=["features", "num_channels"])
    return table.column("features"), table.column("num_channels")


def _find_row(pf, item: str, offset: Optional[int]) -> Optional[tuple[int, int]]:
    """``(row group, index in it)`` of the row whose id is ``item``: at ``offset`` when it says so,
    else searched."""
    start = 0
    for group in range(pf.num_row_groups):
        rows = pf.metadata.row_group(group).num_rows
        if offset is not None and start <= offset < start + rows:
            ids = pf.read_row_group(group, columns=["id"]).column("id").to_pylist()
            if ids[offset - start] == item:
                return group, offset - start
        start += rows
    for group in range(pf.num_row_groups):
        ids = pf.read_row_group(group, columns=["id"]).column("id").to_pylist()
        if item in ids:
            return group, ids.index(item)
    return None


def _ark_matrix(path: Path, item: str, offset: Optional[int]) -> np.ndarray:
    import kaldiio

    if offset is None or offset < len(item) + 1:
        raise InputError(f"{path}: the manifest gives no byte offset for {item!r}; re-run the job")
    with open(path, "rb") as f:  # the id before the matrix must be this item's
        f.seek(offset - len(item) - 1)
        if f.read(len(item) + 1) != item.encode("ascii") + b" ":
            raise InputError(f"{path}: no matrix {item!r} at byte {offset}; the manifest and the ark disagree (re-run the job)")
    return np.asarray(kaldiio.load_mat(f"{path}:{offset}"))


def _h5_array(path: Path, item: str) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        if item not in f:
            raise InputError(f"{path}: no array {item!r}; the manifest and the segment disagree (re-run the job)")
        data = f[item][()]
    if data.dtype.kind == "V":  # lilcom: lhotse stores the compressed bytes as an opaque value
        import lilcom

        return np.asarray(lilcom.decompress(data.tobytes()))
    return np.asarray(data)
