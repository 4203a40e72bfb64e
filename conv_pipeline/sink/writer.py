"""Feature files written atomically: every file is written under a temporary name in the same
folder, flushed to disk, then renamed into place, so a killed run never leaves a partial file
under a final name.

Flow: source -> load -> stack -> execute -> **sink** -> engines. ``execute`` hands over float32
features ``(out_channels, frames)``, whole (``write_features``) or chunk by chunk
(``write_features_stream``); ``sink.outputs.OutputDir.writing`` says where (the final path, or a
staging file uploaded after). ``atomic_write`` is also how ``stack.checkpoint``, ``inspect.plot``
and ``sink.jobdir`` write their files; its temporary names (``.<name>.tmp-<host>-<pid>-<random>``,
``TMP_MARKER`` then ``temp_token``: their owner in the name) are what
``sink.outputs.clean_temp_files`` removes after a killed run, once their owner is dead. Under a
folder a batch job has locked (``guard_folder``, from ``sink.jobdir.OutputLock``), every write
first checks the folder is still the locked one (``check_guarded``: ``OutputDirLost`` when it was
removed or replaced), so a job never writes into a folder recreated by someone else.

Feature files: ``<stem>.npy`` holds float32 ``(out_channels, frames)``; ``<stem>.npz`` holds
``features`` plus ``frame_times`` (seconds, frame centres), ``frame_starts`` (first input
sample of each frame, negative inside the left padding), ``sample_rate``, ``hop``,
``receptive_field``, ``left_padding``, ``config`` (the resolved config as JSON) and ``versions``
(conv_pipeline, torch, torchaudio, soundfile, libsndfile, hydra-core, numpy, Python, as JSON). Both read
back with ``numpy.load(..., allow_pickle=False)``. Features holding NaN/Inf are never written.

Chunked execution writes features as they come (``write_features_stream``): ``.npy`` goes into a
file preallocated with the predicted shape (``NpyStreamWriter``), so memory stays bounded
whatever the file's length; ``.npz`` is written the same way into a temporary ``.npy`` that is
then copied into the archive block by block (bounded too, one more pass over the disk).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from conv_pipeline.errors import OutputError
from conv_pipeline.geometry import StackGeometry
from conv_pipeline.sink.names import CONFIG_NAME, MANIFEST_NAME, WEIGHTS_NAME
from conv_pipeline.version import versions

TMP_MARKER = ".tmp-"


def host_tag() -> str:
    """This machine, as 8 hex digits (a hash of its host name): the owner part of temporary names."""
    import hashlib
    import socket

    return hashlib.sha1(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]


def temp_token() -> str:
    """What follows ``TMP_MARKER`` in a temporary name: ``<host>-<pid>-<random>``, so a clean-up
    (``sink.outputs.clean_temp_files``) removes only the temporaries of writers that are dead
    (same host, process gone), never those another live run (a CLI run, a job in a nested
    folder) is still writing."""
    return f"{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class OutputDirLost(OutputError):
    """The locked ``output.dir`` was removed or replaced while the job wrote into it."""


_GUARDED: dict[str, tuple[int, int]] = {}  # folder (absolute) -> (st_dev, st_ino) it must still be


def guard_folder(folder: Path | str, identity: Optional[tuple[int, int]]) -> None:
    """From now on, files written under ``folder`` (by this process) must land in the folder whose
    ``(st_dev, st_ino)`` is ``identity`` (the locked one); ``None`` lifts the guard."""
    key = os.path.abspath(folder)
    if identity is None:
        _GUARDED.pop(key, None)
    else:
        _GUARDED[key] = (int(identity[0]), int(identity[1]))


def guarded_identity(folder: Path | str) -> Optional[tuple[int, int]]:
    """The identity ``folder`` is guarded with in this process, if any."""
    return _GUARDED.get(os.path.abspath(folder))


def check_guarded(path: Path | str) -> None:
    """``OutputDirLost`` when ``path`` lies under a guarded folder that is no longer the same folder
    (removed, or removed and created again by someone else): the job must not write into it."""
    target = os.path.abspath(path)
    for root, identity in list(_GUARDED.items()):
        if target != root and not target.startswith(root.rstrip(os.sep) + os.sep):
            continue
        try:
            st = os.stat(root)
            now: Optional[tuple[int, int]] = (st.st_dev, st.st_ino)
        except OSError:
            now = None
        if now != identity:
            raise OutputDirLost(
                f"output.dir={root!r} was removed or replaced while this job was writing to it; "
                "the job stops and writes nothing more there (another job may own the new folder); "
                "run it again to finish"
            )


def _discard(path: Path) -> None:
    """Remove a temporary file if it is there; never raises (on a read-only or vanished folder the
    clean-up itself fails, and must not hide the error that matters)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def check_regular_files(out_dir: Path | str, names: tuple[str, ...] = (WEIGHTS_NAME, CONFIG_NAME, MANIFEST_NAME)) -> None:
    """Refuse an ``output.dir`` whose ``names`` (the run's own files there) exist as anything but
    regular files: opening a FIFO blocks forever, a device reads without end. Checked with
    ``stat`` (links followed), before anything opens them. Torch-free: readers
    (``dataset/``, ``inspect/``) can use it too."""
    for name in names:
        path = Path(out_dir) / name
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            continue
        except OSError as err:
            raise OutputError(f"cannot use {path}: {err.strerror or err}") from None
        if not stat.S_ISREG(mode):
            kind = next((what for test, what in _KINDS if test(mode)), "not a regular file")
            raise OutputError(
                f"{path} is {kind}, not a regular file; the run never opens one (it could wait forever): "
                "remove it or choose another output.dir"
            )


NAME_MAX = 255  # bytes in one file name (Linux, macOS)


def _bounded_name(name: str, suffix: str) -> str:
    """``name + suffix``, ``name`` shortened (whole characters) so that it fits ``NAME_MAX`` bytes:
    a temporary name adds 14+ bytes to a final name that may already be near the limit."""
    while len(name) > 1 and len(os.fsencode(name + suffix)) > NAME_MAX:
        name = name[:-1]
    return name + suffix


def atomic_write(path: Path, write: Callable[[Path], None], sync: bool = True) -> Path:
    """Call ``write(tmp)`` for a temporary path beside ``path``, fsync it, rename it to ``path``.

    ``sync=False`` leaves out the fsync: the name still never holds a partial file in a running
    system, but only a later ``sync_filesystem`` makes the content durable (the batch job syncs a
    group of files once, before the manifest records that vouch for them). An ``OSError`` (full disk, read-only or missing folder, a folder in the way) becomes a one-line
    ``OutputError``; the temporary file is removed whatever happens."""
    path = Path(path)
    check_guarded(path)  # a locked output.dir that is gone: write nothing (not even the temporary)
    tmp = path.with_name(_bounded_name(f".{path.name}", f"{TMP_MARKER}{temp_token()}"))
    try:
        write(tmp)
        if sync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        check_guarded(path)  # ... nor rename into a folder that replaced it meanwhile
        os.replace(tmp, path)
    except OSError as err:
        _discard(tmp)
        # numpy reports a short write (a full disk) as an OSError without errno: say what it means
        detail = err.strerror or (f"{err}: the disk is probably full" if err.errno is None else str(err))
        raise OutputError(f"cannot write {path}: {detail}") from None
    except BaseException:
        _discard(tmp)
        raise
    return path


def _syncfs(folder: Path) -> bool:
    """``syncfs`` of ``folder``'s filesystem (Linux); False where the C library has none."""
    import ctypes

    try:
        call = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError, TypeError):
        return False
    fd = os.open(folder, os.O_RDONLY)
    try:
        if call(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)
    return True


def sync_filesystem(folder: Path, paths: Iterable[Path] = ()) -> None:
    """Make every file written under ``folder`` so far durable: one ``syncfs`` of its filesystem
    (Linux), else an ``fsync`` of each of ``paths``. ``OSError`` becomes a one-line ``OutputError``."""
    try:
        if _syncfs(Path(folder)):
            return
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as err:
        raise OutputError(f"cannot write to {folder}: {err.strerror or err}") from None


def feature_path(out_dir: Path, stem: str, fmt: str) -> Path:
    return Path(out_dir) / f"{stem}.{fmt}"


def write_features(
    path: Path,
    features: np.ndarray,
    geometry: StackGeometry,
    sample_rate: int,
    config: dict[str, Any] | None = None,
    sync: bool = True,
    checked: bool = False,
) -> Path:
    """Write ``features`` ``(out_channels, frames)`` as ``.npy`` or ``.npz`` (chosen by suffix).
    ``sync``: as ``atomic_write``; ``checked``: the caller has refused NaN/Inf already
    (``execute.whole.check_finite``), so they are not looked for again."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be (channels, frames), got shape {features.shape}")
    path = Path(path)
    if not checked:
        _check_finite(path, features)
    if path.suffix == ".npy":

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, features, allow_pickle=False)

    elif path.suffix == ".npz":
        arrays = dict(features=features, **npz_metadata(features.shape[1], geometry, sample_rate, config))

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    else:
        raise ValueError(f"unknown feature format {path.suffix!r}; use .npy or .npz")
    return atomic_write(path, write, sync)


def overflow_error(path: str, bad: int, peak: Optional[float] = None):
    """The ``InputError`` for features with NaN/Inf values, naming the input ``path``: its samples
    were too large for float32 arithmetic (``peak``: their largest magnitude, when known)."""
    from conv_pipeline.errors import InputError

    where = f" (peak {peak:.3g}; audio is expected within [-1, 1])" if peak is not None else ""
    return InputError(
        f"{path}: the features overflow float32 ({bad} NaN/Inf value(s)): the samples are too large{where}; "
        "rescale the file; nothing was written"
    )


def _check_finite(path: Path, features: np.ndarray) -> None:
    """Never write NaN/Inf features: ``InputError`` naming the file they were for."""
    finite = np.isfinite(features)
    if not finite.all():
        from conv_pipeline.errors import InputError

        raise InputError(
            f"{path}: not written: the features hold {features.size - np.count_nonzero(finite)} NaN/Inf "
            "value(s) (the input's samples are too large for float32 features; audio is expected within "
            "[-1, 1]); rescale the input"
        )


def _finite(path: Path, chunks: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    for chunk in chunks:
        _check_finite(path, np.asarray(chunk))
        yield chunk


def npz_metadata(
    n_frames: int, geometry: StackGeometry, sample_rate: int, config: dict[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` feature file but ``features``, in the archive's order; ``versions``
    is a JSON object of the versions that computed it (``conv_pipeline.version.versions``)."""
    return dict(
        frame_times=np.asarray(geometry.frame_times(n_frames, sample_rate), dtype=np.float64),
        frame_starts=np.asarray(geometry.frame_starts(n_frames), dtype=np.int64),
        sample_rate=np.int64(sample_rate),
        hop=np.int64(geometry.hop),
        receptive_field=np.int64(geometry.receptive_field),
        left_padding=np.int64(geometry.left_padding),
        config=np.str_(json.dumps(config or {}, sort_keys=True)),
        versions=np.str_(json.dumps(versions(), sort_keys=True)),
    )


def _aux_path(tmp: Path, tag: str) -> Path:
    """Another temporary file beside ``tmp``, named so that temp-file clean-ups recognise it."""
    return tmp.with_name(_bounded_name(tmp.name, f".{tag}{TMP_MARKER}{temp_token()}"))


def _preallocate(path: Path, channels: int, frames: int) -> int:
    """Create a float32 ``(channels, frames)`` ``.npy`` (header, then a sparse data area); return
    the data's offset. Nothing stays mapped."""
    if channels * frames == 0:
        with open(path, "wb") as f:
            np.lib.format.write_array(f, np.zeros((channels, frames), np.float32), allow_pickle=False)
            return f.tell()
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(channels, frames))
    offset = int(mm.offset)
    del mm  # unmapped: dirty pages of a kept mapping would count as resident memory
    return offset


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def _write_rows(fd: int, offset: int, row_frames: int, start: int, block: np.ndarray) -> None:
    """Write ``block`` ``(C, m)`` at frames ``start..start+m`` of every row of a ``(C, row_frames)`` file."""
    for c in range(block.shape[0]):
        row = np.ascontiguousarray(block[c], dtype=np.float32)
        _pwrite_all(fd, memoryview(row).cast("B"), offset + 4 * (c * row_frames + start))


class NpyStreamWriter:
    """A float32 ``(channels, frames)`` ``.npy`` written chunk by chunk, in bounded memory.

    The file is preallocated with the expected shape (``numpy.lib.format.open_memmap``, then
    unmapped); chunks are gathered up to ``buffer_bytes`` and written into each channel's row with
    ``os.pwrite``, so resident memory holds one buffer, never the file (page-cache pages are the
    kernel's, not the process's). ``close()`` returns the frame count written; when it differs from
    the expected one (a header that predicted the wrong length), the file is rewritten with the
    true shape, row by row (bounded too).
    """

    def __init__(self, path: Path, channels: int, frames: int, buffer_bytes: int = 8 << 20) -> None:
        self.path = Path(path)
        self.channels, self.capacity = int(channels), int(frames)
        self.offset = _preallocate(self.path, self.channels, self.capacity)
        self._fd = os.open(self.path, os.O_RDWR)
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        self._buffer_frames = max(1, buffer_bytes // (4 * max(1, self.channels)))
        self._flushed = 0  # frames written to disk
        self._overflow: Optional[Path] = None  # frames past the capacity, time-major

    @property
    def frames(self) -> int:
        return self._flushed + self._pending_frames

    def write(self, chunk: np.ndarray) -> None:
        """Append ``chunk`` ``(channels, m)``."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[0] != self.channels:
            raise ValueError(f"chunk must be ({self.channels}, frames), got shape {chunk.shape}")
        self._pending.append(chunk)
        self._pending_frames += chunk.shape[1]
        if self._pending_frames >= self._buffer_frames:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        block = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending, axis=1)
        self._pending, self._pending_frames = [], 0
        start, m = self._flushed, block.shape[1]
        inside = max(0, min(m, self.capacity - start))
        if inside:
            _write_rows(self._fd, self.offset, self.capacity, start, block[:, :inside])
        if inside < m:
            if self._overflow is None:
                self._overflow = _aux_path(self.path, "overflow")
            with open(self._overflow, "ab") as f:
                f.write(np.ascontiguousarray(block[:, inside:].T).tobytes())  # (m', C)
        self._flushed += m

    def close(self) -> int:
        """Write what is buffered, fix the shape if needed; returns the frame count."""
        try:
            self._flush()
            if self._flushed != self.capacity:
                self._relayout()
        finally:
            self._release()
        return self._flushed

    def abort(self) -> None:
        """Give up: close and remove the helper files (the caller removes ``path``)."""
        self._release()

    def _release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._overflow is not None:
            _discard(self._overflow)
            self._overflow = None

    def _relayout(self) -> None:
        total, keep = self._flushed, min(self._flushed, self.capacity)
        fixed = _aux_path(self.path, "resized")
        try:
            offset = _preallocate(fixed, self.channels, total)
            fd = os.open(fixed, os.O_RDWR)
            try:
                for c in range(self.channels):
                    row = os.pread(self._fd, 4 * keep, self.offset + 4 * c * self.capacity)
                    _pwrite_all(fd, memoryview(row), offset + 4 * c * total)
                if self._overflow is not None:
                    step = self._buffer_frames * self.channels * 4
                    with open(self._overflow, "rb") as f:
                        start = keep
                        while data := f.read(step):
                            block = np.frombuffer(data, np.float32).reshape(-1, self.channels).T  # (C, m)
                            _write_rows(fd, offset, total, start, block)
                            start += block.shape[1]
            finally:
                os.close(fd)
            os.replace(fixed, self.path)
        except BaseException:
            _discard(fixed)
            raise


def _stream_npy(path: Path, chunks: Iterable[np.ndarray], shape: tuple[int, int]) -> int:
    writer = NpyStreamWriter(path, shape[0], shape[1])
    try:
        for chunk in chunks:
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def write_features_stream(
    path: Path,
    chunks: Iterable[np.ndarray],
    shape: tuple[int, int],
    geometry: StackGeometry,
    sample_rate: int,
    config: dict[str, Any] | None = None,
    before_commit: Optional[Callable[[], None]] = None,
) -> Path:
    """``write_features`` for features that arrive in chunks ``(out_channels, m)``, in bounded memory.

    ``shape`` is the expected ``(out_channels, frames)``: the ``.npy`` is preallocated with it (the
    true frame count wins if it differs). Written under a temporary name and renamed when
    complete, so an exception (or a kill) never leaves a partial file under ``path``;
    ``before_commit()`` runs just before the rename (e.g. writing the files that must exist first).
    """
    path = Path(path)
    chunks = _finite(path, chunks)  # NaN/Inf features: nothing committed
    if path.suffix == ".npy":

        def write(tmp: Path) -> None:
            _stream_npy(tmp, chunks, shape)
            if before_commit is not None:
                before_commit()

    elif path.suffix == ".npz":

        def write(tmp: Path) -> None:
            features = _aux_path(tmp, "features")
            try:
                n = _stream_npy(features, chunks, shape)
                with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:  # as np.savez
                    with open(features, "rb") as src, zf.open("features.npy", "w", force_zip64=True) as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    for key, value in npz_metadata(n, geometry, sample_rate, config).items():
                        with zf.open(f"{key}.npy", "w", force_zip64=True) as dst:
                            np.lib.format.write_array(dst, np.asanyarray(value), allow_pickle=False)
            finally:
                _discard(features)
            if before_commit is not None:
                before_commit()

    else:
        raise ValueError(f"unknown feature format {path.suffix!r}; use .npy or .npz")
    return atomic_write(path, write)


def write_text(path: Path, text: str) -> Path:
    return atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
