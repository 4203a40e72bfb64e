"""Reading the arrays of one feature file safely.

A feature file is a ``.npy`` holding the features, or a ``.npz`` holding a ``features`` array
beside its metadata arrays (``sample_rate``, ``hop``, ``frame_times``, a JSON ``config``, ...).
Everything is read with ``allow_pickle=False``, and whatever is not a 2-D float array
``(channels, frames)`` (a missing, empty, damaged or foreign file) raises a one-line
``InputError`` naming the file.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from conv_pipeline.errors import InputError

# The scalar metadata arrays a .npz is written with.
NPZ_SCALARS = ("sample_rate", "hop", "receptive_field", "left_padding")


def read_array_file(path: Path) -> tuple[np.ndarray, Optional[dict]]:
    """``(features (channels, frames), the .npz's other arrays by name, or None for a .npy)``.

    Raises ``InputError`` (one line) for anything that is not a feature file.
    """
    if not path.exists():
        raise _fail(path, "no such file; check the path")
    if path.is_dir():
        raise _fail(path, "is a folder; load its files with FeatureDataset (or inspect the folder)")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file (0 bytes), not a feature file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except PermissionError:
        raise _fail(path, "permission denied; make the file readable") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise _fail(path, f"not a readable .npy/.npz feature file ({_first_line(err)})") from None
    if isinstance(loaded, np.ndarray):
        return _check_features(path, loaded), None
    with loaded:  # NpzFile
        arrays = _npz_arrays(path, loaded)
    return _check_features(path, arrays.pop("features")), arrays


def npz_scalar(arrays: dict, name: str, kind: type) -> Any:
    """The 0-d array ``name`` as ``kind``; None when it is absent or not a scalar."""
    if name not in arrays:
        return None
    value = arrays[name]
    if np.ndim(value) != 0:
        return None
    return kind(value.item() if hasattr(value, "item") else value)


def _npz_arrays(path: Path, loaded: Any) -> dict:
    """Every array of an open ``NpzFile``, by name; it must hold ``features``."""
    names = list(loaded.files)
    if "features" not in names:
        raise _fail(path, f".npz has no 'features' array (it has {', '.join(names) or 'nothing'}); not a conv_pipeline feature file")
    arrays = {}
    try:
        for name in names:
            arrays[name] = loaded[name]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise _fail(path, f"damaged .npz: array {name!r} is unreadable ({_first_line(err)})") from None
    return arrays


def _check_features(path: Path, arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 2:
        raise _fail(path, f"holds a {arr.ndim}-D array of shape {arr.shape}; features are 2-D (channels, frames)")
    if not np.issubdtype(arr.dtype, np.floating):
        raise _fail(path, f"holds {arr.dtype} values; conv_pipeline features are float32 (not a feature file)")
    return arr


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _fail(path: Path, what: str) -> InputError:
    return InputError(f"{path}: {what}")
