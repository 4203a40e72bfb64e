"""Reading the arrays of one feature file safely: feature files are untrusted input.

A feature file is a ``.npy`` holding the features, or a ``.npz`` holding a ``features`` array
beside its metadata arrays (``sample_rate``, ``hop``, ``frame_times``, a JSON ``config``, ...).
The headers are parsed here, not by ``np.load``: nothing is allocated before the shape a header
claims has been checked against the bytes the file (or the zip member) really holds, no object
array is ever read (so nothing is unpickled), and the features must be what conv_pipeline writes,
a 2-D little-endian float32 (or float16) array ``(channels, frames)``, or ``(frames, channels)``
with ``output.time_major=true`` (``reader.py`` turns it round). Whatever else (a missing, empty,
damaged, foreign or lying file) raises a one-line ``InputError`` naming the file.

``mmap=True`` maps a ``.npy``'s features read-only instead of reading them (for ``inspect``,
whose memory then stays flat whatever the file's size).
"""

from __future__ import annotations

import math
import os
import stat
import tokenize
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Optional

import numpy as np

from conv_pipeline.errors import InputError

# The scalar metadata arrays a .npz is written with.
NPZ_SCALARS = ("sample_rate", "hop", "receptive_field", "left_padding")

# What conv_pipeline writes as features (sink/writer.py): float32, little-endian (output.dtype=float16: float16).
FEATURE_DTYPE = np.dtype("<f4")
FEATURE_DTYPES = (FEATURE_DTYPE, np.dtype("<f2"))

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_READ_BLOCK = 1 << 22  # bytes read at a time into a checked, preallocated array
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand data more than this: a larger claim is a lie
_UNREADABLE = "not a readable .npy/.npz feature file"
_NOT_REGULAR = "is not a regular file (a FIFO, device or socket); not a feature file"


def read_array_file(path: Path, mmap: bool = False) -> tuple[np.ndarray, Optional[dict]]:
    """``(features (channels, frames), the .npz's other arrays by name, or None for a .npy)``.

    Raises ``InputError`` (one line) for anything that is not a feature file.
    """
    size = _regular_size(path)
    try:
        # O_NONBLOCK: a FIFO swapped in since the check above is refused below, not waited on
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise _fail(path, _NOT_REGULAR)
            magic = f.read(len(_NPY_MAGIC))
            if magic == _NPY_MAGIC:
                f.seek(0)
                return _read_npy(path, f, size, mmap), None
            if magic.startswith(_ZIP_MAGIC):
                return _read_npz(path, size)
    except PermissionError:
        raise _fail(path, "permission denied; make the file readable") from None
    except MemoryError:
        raise _fail(path, "too large to read into memory") from None
    except (ValueError, OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
            tokenize.TokenError) as err:  # RuntimeError: also RecursionError; TokenError: a damaged header
        raise _fail(path, f"{_UNREADABLE} ({_first_line(err)})") from None
    raise _fail(path, f"{_UNREADABLE} (it starts with neither the .npy nor the .npz signature)")


def npz_scalar(arrays: dict, name: str, kind: type) -> Any:
    """The 0-d array ``name`` as ``kind``; None when it is absent or not a scalar."""
    if name not in arrays:
        return None
    value = arrays[name]
    if np.ndim(value) != 0:
        return None
    try:
        return kind(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, OverflowError):
        return None


def _regular_size(path: Path) -> int:
    """The size of ``path``, a non-empty regular file (never opened when it is a FIFO or device)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _fail(path, "no such file; check the path") from None
    except PermissionError:
        raise _fail(path, "permission denied; make the file readable") from None
    except (OSError, ValueError) as err:
        raise _fail(path, f"cannot be read ({_first_line(err)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise _fail(path, "is a folder; load its files with FeatureDataset (or inspect the folder)")
    if not stat.S_ISREG(st.st_mode):
        raise _fail(path, _NOT_REGULAR)
    if st.st_size == 0:
        raise _fail(path, "empty file (0 bytes), not a feature file")
    return st.st_size


def _read_header(path: Path, f: BinaryIO, what: str) -> tuple[tuple, bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from a ``.npy`` header (its size is bounded by numpy)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise _fail(path, f"{_UNREADABLE} ({what}: .npy format version {version} is not one conv_pipeline writes)")
    if dtype.hasobject:
        raise _fail(path, f"{_UNREADABLE} ({what} holds Python objects (pickled data), which are never loaded)")
    return tuple(shape), bool(fortran), dtype


def _check_data(path: Path, shape: tuple, dtype: np.dtype, available: int, what: str) -> int:
    """The byte count the header promises; ``InputError`` when the file holds fewer."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > available:
        raise _fail(
            path,
            f"{_UNREADABLE} ({what}: its header promises shape {shape} of {dtype}, {nbytes} bytes, "
            f"but only {max(available, 0)} follow it: truncated or damaged)",
        )
    return nbytes


def _check_features(path: Path, shape: tuple, dtype: np.dtype) -> None:
    if len(shape) != 2:
        raise _fail(path, f"holds a {len(shape)}-D array of shape {shape}; features are 2-D (channels, frames)")
    if dtype not in FEATURE_DTYPES:
        raise _fail(path, f"holds {dtype} values; conv_pipeline features are float32 or float16, little-endian (not a feature file)")


def _read_npy(path: Path, f: BinaryIO, size: int, mmap: bool) -> np.ndarray:
    shape, fortran, dtype = _read_header(path, f, "features")
    _check_features(path, shape, dtype)
    offset = f.tell()
    _check_data(path, shape, dtype, size - offset, "features")
    if mmap and math.prod(shape):
        order = "F" if fortran else "C"
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)
    return _read_data(path, f, shape, fortran, dtype, "features")


def _read_data(path: Path, f: BinaryIO, shape: tuple, fortran: bool, dtype: np.dtype, what: str) -> np.ndarray:
    """The array whose header was just read, read block by block into one checked allocation."""
    flat = np.empty(math.prod(shape), dtype=dtype)
    if flat.nbytes:
        raw = flat.view(np.uint8)
        done = 0
        while done < raw.size:
            got = f.readinto(raw[done : done + _READ_BLOCK])
            if not got:
                raise _fail(path, f"{_UNREADABLE} ({what}: the data ends early: truncated)")
            done += got
    return flat.reshape(shape, order="F" if fortran else "C")


def _read_npz(path: Path, size: int) -> tuple[np.ndarray, dict]:
    """The ``features`` of a ``.npz`` and its other arrays by name, each checked before it is read."""
    with zipfile.ZipFile(path) as zf:
        members = {info.filename[: -len(".npy")]: info for info in zf.infolist() if info.filename.endswith(".npy")}
        if "features" not in members:
            names = ", ".join(members) or "nothing"
            raise _fail(path, f".npz has no 'features' array (it has {names}); not a conv_pipeline feature file")
        arrays = {name: _read_member(path, zf, info, size) for name, info in members.items()}
    return arrays.pop("features"), arrays  # checked as features by _read_member


def _read_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int) -> np.ndarray:
    """One array of a ``.npz``; its header's claim is checked against the member's real size."""
    what = f"array {info.filename[: -len('.npy')]!r}"
    limit = info.compress_size if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_MAX_RATIO * info.compress_size
    if info.compress_size > size or info.file_size > limit:
        raise _fail(path, f"{_UNREADABLE} (damaged .npz: {what} claims {info.file_size} bytes in a {size}-byte file)")
    with zf.open(info) as f:
        shape, fortran, dtype = _read_header(path, f, what)
        if info.filename == "features.npy":
            _check_features(path, shape, dtype)
        _check_data(path, shape, dtype, info.file_size - f.tell(), what)
        return _read_data(path, f, shape, fortran, dtype, what)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _fail(path: Path, what: str) -> InputError:
    return InputError(f"{path}: {what}")
