"""Writing outputs atomically: every file is written under a temporary name in the same
folder, flushed to disk, then renamed into place, so a killed run never leaves a partial
file under a final name.

Feature files: ``<stem>.npy`` holds float32 ``(out_channels, frames)``; ``<stem>.npz`` holds
``features`` plus ``frame_times`` (seconds, frame centres), ``frame_starts`` (first input
sample of each frame, negative inside the left padding), ``sample_rate``, ``hop``,
``receptive_field``, ``left_padding`` and ``config`` (the resolved config as JSON). Both read
back with ``numpy.load(..., allow_pickle=False)``.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import OutputError
from .geometry import StackGeometry

__all__ = ["atomic_write", "write_features", "feature_path", "TMP_MARKER"]

TMP_MARKER = ".tmp-"


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` for a temporary path beside ``path``, fsync it, rename it to ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARKER}{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def feature_path(out_dir: Path, stem: str, fmt: str) -> Path:
    return Path(out_dir) / f"{stem}.{fmt}"


def write_features(
    path: Path,
    features: np.ndarray,
    geometry: StackGeometry,
    sample_rate: int,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write ``features`` ``(out_channels, frames)`` as ``.npy`` or ``.npz`` (chosen by suffix)."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be (channels, frames), got shape {features.shape}")
    path = Path(path)
    if path.suffix == ".npy":

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, features, allow_pickle=False)

    elif path.suffix == ".npz":
        n = features.shape[1]
        arrays = dict(
            features=features,
            frame_times=np.asarray(geometry.frame_times(n, sample_rate), dtype=np.float64),
            frame_starts=np.asarray(geometry.frame_starts(n), dtype=np.int64),
            sample_rate=np.int64(sample_rate),
            hop=np.int64(geometry.hop),
            receptive_field=np.int64(geometry.receptive_field),
            left_padding=np.int64(geometry.left_padding),
            config=np.str_(json.dumps(config or {}, sort_keys=True)),
        )

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    else:
        raise ValueError(f"unknown feature format {path.suffix!r}; use .npy or .npz")
    return atomic_write(path, write)


def write_text(path: Path, text: str) -> Path:
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
