"""``npy`` and ``npz``: one feature file per input, the ``FormatWriter`` form of ``sink.writer``.

Flow: source -> load -> stack -> execute -> **sink** -> engines. ``write`` commits
``<stem>.npy``/``<stem>.npz`` (the planned per-input name) at once, through
``OutputDir.writing`` and ``sink.writer.atomic_write``. With the default settings
(float32, channel-major, uncompressed) this is exactly ``sink.writer.write_features``; otherwise:

* ``output.dtype=float16``: the features stored as float16 (overflow refused, never ``inf``);
* ``output.time_major=true``: stored ``(frames, channels)`` instead of ``(channels, frames)``;
* ``output.compress=true`` (npz): ``numpy.savez_compressed``.

A ``.npz``'s ``frame_times`` are float32 when every value is exactly a float32 (frame centres on a
coarse grid: hops of a power-of-two number of samples, say), else float64; ``time_major`` records
the layout (1 = ``(frames, channels)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from conv_pipeline.geometry import StackGeometry
from conv_pipeline.sink.formats.base import Entry, FormatOptions, FormatWriter, Location, cast_features, check_float16
from conv_pipeline.sink.writer import atomic_write, npz_metadata, write_features


def compact_times(times: np.ndarray) -> np.ndarray:
    """``times`` (float64) as float32 when that is exact for every value, else unchanged."""
    narrow = times.astype(np.float32)
    return narrow if np.array_equal(narrow.astype(np.float64), times) else times


def write_feature_file(
    path: Path,
    features: np.ndarray,
    geometry: StackGeometry,
    sample_rate: int,
    config: Optional[dict[str, Any]],
    options: FormatOptions,
    sync: bool = True,
) -> Path:
    """Write float32 ``features`` ``(channels, frames)`` to ``path`` (``.npy``/``.npz``) as
    ``options`` say (see the module docstring), atomically. Features that hold NaN/Inf are never
    written (checked by ``sink.writer.write_features`` or by the caller: ``execute.whole.check_finite``)."""
    path = Path(path)
    if options.plain:
        return write_features(path, features, geometry, sample_rate, config, sync, checked=True)
    stored = cast_features(features, options.dtype, options.time_major)
    if path.suffix == ".npy":

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, stored, allow_pickle=False)

    else:
        arrays = npz_metadata(int(np.shape(features)[1]), geometry, sample_rate, config)
        arrays["frame_times"] = compact_times(arrays["frame_times"])
        arrays["time_major"] = np.int64(bool(options.time_major))
        save = np.savez_compressed if options.compress else np.savez

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                save(f, features=stored, **arrays)

    return atomic_write(path, write, sync)


class FileWriter(FormatWriter):
    """``npy``/``npz``: each input's own file, committed by ``write``."""

    per_input = True

    def write(self, entry: Entry, sync: bool = True) -> list[tuple[Entry, Location]]:
        if self.options.dtype == "float16":
            check_float16(entry.features, entry.input)  # the message names the input
        with self.out.writing(entry.out_rel) as path:
            write_feature_file(path, entry.features, self.geometry, entry.sample_rate, self.config, self.options, sync)
        return [(entry, Location(entry.out_rel))]
