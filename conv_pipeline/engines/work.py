"""The per-file work of the batch job, shared by the local and Ray engines.

``decode_item`` (in a decode worker: a header probe, then the decode, or nothing for a long
file), ``Work.accept`` (the decoded file checked against the stack: channels, length),
``Work.compute`` (a padded batch through the stack, a failing batch split into single files,
features that overflow refused), ``Work.write`` (the features written atomically, a manifest
record for every outcome) and ``Work.long_file`` (one long file, chunked). ``Work`` pickles without
its stack, so Ray actors build their own.

Identity: every ``ok`` record ties its output to its input (``input_key``: one canonical key
however the input was spelled; ``input_fingerprint``: size, modification time and a hash of its
first bytes) and to the weights that made it (``weights_digest``, also in a ``.npz``'s ``config``
metadata as ``weights_sha256``), so a resumed job can tell an output it may keep from one it must
recompute.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from conv_pipeline.config.channels import ChannelRule
from conv_pipeline.config.plan import Plan
from conv_pipeline.config.schema import AudioConfig
from conv_pipeline.errors import InputError, PipelineError
from conv_pipeline.execute.whole import check_finite, extract, extract_batch
from conv_pipeline.fs import filesystem, is_url, local_path, one_line, staging
from conv_pipeline.geometry import StackGeometry
from conv_pipeline.load.audio import Audio, load_audio
from conv_pipeline.load.remote import fetched, probe
from conv_pipeline.sink.formats import Entry, FormatOptions, FormatWriter, Location, open_writer
from conv_pipeline.sink.manifest import ManifestRecord
from conv_pipeline.sink.outputs import OutputDir
from conv_pipeline.sink.writer import write_features
from conv_pipeline.stack.checkpoint import weights_metadata
from conv_pipeline.stack.stack import ConvStack

log = logging.getLogger("conv_pipeline.batch")


# ---------------------------------------------------------------- identity
HEADER_BYTES = 4096  # hashed into an input's fingerprint (its header and first samples)
WEIGHTS_KEY = "weights_sha256"  # the weights' digest in a feature file's ``config`` metadata
URL_STAMPS = ("ETag", "etag", "md5Hash", "crc32c", "LastModified", "last_modified", "mtime", "updated", "created")


def input_key(path: str) -> str:
    """One canonical name per input however it was spelled (``c1/a.wav``, ``./c1//a.wav``,
    ``/abs/c1/a.wav``): a local path made absolute and normalised, as ``source.inputs`` tells
    inputs apart (a symbolic link stays its own input); a URL as given."""
    if is_url(path):
        return str(path)
    return os.path.normcase(os.path.abspath(local_path(path)))


def input_fingerprint(path: str, options: Optional[dict] = None) -> Optional[str]:
    """A cheap fingerprint of the input as it is now: ``size:mtime_ns:hash of the first 4 KiB``
    (a URL: its size and the store's version stamp, else the hash of its first bytes). None when
    it cannot be taken (gone, unreadable, not a regular file): unknown, so never trusted."""
    try:
        if is_url(path):
            fs, rpath = filesystem(path, options)
            info = fs.info(rpath)
            stamp = next((str(info[k]) for k in URL_STAMPS if info.get(k) not in (None, "")), None)
            if stamp is None:
                stamp = hashlib.sha256(fs.cat_file(rpath, 0, HEADER_BYTES)).hexdigest()[:16]
            return f"{info.get('size')}:{stamp}"
        local = local_path(path)
        st = os.stat(local)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device: never opened here
            return None
        with open(local, "rb") as f:
            head = f.read(HEADER_BYTES)
        return f"{st.st_size}:{st.st_mtime_ns}:{hashlib.sha256(head).hexdigest()[:16]}"
    except Exception:  # noqa: BLE001 - unknown; the file fails on its own when it is read
        return None


def weights_digest(stack: ConvStack) -> str:
    """A hash of the stack's layer config and every tensor of its weights: equal for the same model."""
    h = hashlib.sha256(weights_metadata(stack)["model"].encode("utf-8"))
    for name, tensor in sorted(stack.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"\0{name}:{t.dtype}:{tuple(t.shape)}\0".encode("utf-8"))
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def process_long_file(
    path: str,
    out_path: Path,
    stack: ConvStack,
    audio: AudioConfig,
    device: torch.device,
    config: dict[str, Any],
    chunk_seconds: Optional[float],
) -> tuple[int, int, list[int]]:
    """One file longer than ``batch.long_file_seconds``, alone, in the main thread: decode, stack,
    write. Returns ``(sample_rate, num_samples, shape)``.

    The single place that decides how a long file is computed: with ``runtime.chunk_seconds``
    the chunked executor (``execute/chunked.py``: the file read block by block, the
    features written as they come into a preallocated temporary file, renamed when complete;
    bounded memory, the same frames as the whole-file computation), else the whole file at once.
    """
    if chunk_seconds:
        from conv_pipeline.execute.stream_file import extract_file_chunked, file_writer

        result = extract_file_chunked(
            path, stack, audio, chunk_seconds, device, file_writer(out_path, stack.geometry, config)
        )
        return result.sample_rate, result.num_samples, list(result.shape)
    decoded = load_audio(path, audio)
    features = extract(decoded, stack, device)  # checks the length; the stack checks channels
    write_features(out_path, features.numpy(), stack.geometry, decoded.sample_rate, config)
    return decoded.sample_rate, decoded.frames, list(features.shape)


# ---------------------------------------------------------------- the job's pieces
def _check_item(audio: Audio, geometry: StackGeometry, channels: ChannelRule, path: str) -> None:
    """Raise ``InputError`` unless the decoded file fits the job's stack (channels, length)."""
    channels.stack_channels(audio.info.channels, path)
    geometry.check_input_length(audio.frames, what=path)


@dataclass
class Decoded:
    audio: Optional[Audio]  # None: a long file, for process_long_file
    seconds: float
    fingerprint: Optional[str] = None  # input_fingerprint(path) just before it was read


def decode_item(
    path: str, audio: AudioConfig, long_after_s: Optional[float], decode: Callable, options: Optional[dict] = None
) -> Decoded:
    """Runs in a decode worker (thread, process or Ray task). ``path``: a path or URL (its
    header is read in place; ``decode`` must take URLs: ``load.remote.UrlDecoder``). The input's
    fingerprint is taken here, just before it is read (in the workers, not up front). The header
    read for the long-file check is handed to ``decode`` when it takes one (``UrlDecoder.takes_info``)."""
    t0 = time.perf_counter()
    fingerprint = input_fingerprint(path, options)
    if long_after_s is not None:
        info = probe(path, options, getattr(audio, "decoder", "auto"))
        if info.duration_s > long_after_s:
            return Decoded(None, time.perf_counter() - t0, fingerprint)
        if getattr(decode, "takes_info", False):
            return Decoded(decode(path, audio, info=info), time.perf_counter() - t0, fingerprint)
    return Decoded(decode(path, audio), time.perf_counter() - t0, fingerprint)


def _error_message(path: str, err: BaseException, stage: str, debug: bool) -> str:
    if isinstance(err, PipelineError):
        return str(err)
    if debug:
        log.error("%s: %s failed:\n%s", path, stage, "".join(traceback.format_exception(err)))
    detail = one_line(str(err)) or type(err).__name__
    return f"{path}: unexpected error while {stage} ({type(err).__name__}: {detail}); rerun with debug=true for a traceback"


@dataclass(slots=True)
class Item:
    index: int
    path: str
    out_rel: str
    decoded: Optional[Decoded] = None
    compute_s: float = 0.0
    key: str = ""  # input_key(path); "" = not yet known
    fingerprint: Optional[str] = None  # input_fingerprint(path) before it was read

    def row(self) -> dict[str, Any]:
        """What a Ray row carries of this item (``from_row`` reads it back)."""
        return {"index": self.index, "input": self.path, "output": self.out_rel, "key": self.key, "fingerprint": self.fingerprint or ""}

    @classmethod
    def from_row(cls, row: Any, pos: Optional[int] = None) -> "Item":
        """The item of a row (``pos``: its position in a batch of columns)."""
        get = (lambda k: row[k]) if pos is None else (lambda k: row[k][pos])
        return cls(int(get("index")), str(get("input")), str(get("output")), key=str(get("key")), fingerprint=str(get("fingerprint")) or None)


class Work:
    """What happens to a batch of decoded files, or to one long file, in either engine (the local
    engine's main and writer threads, a Ray actor): the stack (a batch that fails is split into
    single files), each file's features written atomically under ``output.dir`` (a folder or a
    URL), and a manifest record for every outcome. Nothing here touches the manifest.

    Picklable without its stack: the Ray engine ships it to each actor, which ``bind``s its own
    stack and device.
    """

    def __init__(
        self,
        plan: Plan,
        stack: Optional[ConvStack],
        channels: ChannelRule,
        out: OutputDir,
        device: torch.device,
        config: dict[str, Any],
        weights: Optional[str] = None,
    ) -> None:
        self.plan, self.cfg = plan, plan.config
        self.stack, self.channels, self.out, self.device = stack, channels, out, device
        self.weights = weights  # weights_digest of the job's stack, in every ok record and .npz
        self.config = {**config, WEIGHTS_KEY: weights} if weights else config
        self.options = plan.storage_options
        self.chunk_seconds = plan.chunk_seconds
        self.long_after_s = plan.batch.long_file_seconds  # longer files: long_file()
        self.debug = bool(plan.config.debug)
        self.formats = FormatOptions.from_config(plan.config.output)
        self._writer: Optional[FormatWriter] = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "stack": None, "_writer": None}  # each process opens its own writer

    @property
    def writer(self) -> FormatWriter:
        """The ``output.format`` writer (``sink/formats/``), opened on first use in each process."""
        if self._writer is None:
            self._writer = open_writer(self.out, self.formats, self.geometry, self.config, self.channels.count or 1)
        return self._writer

    def bind(self, stack: ConvStack, device: torch.device) -> "Work":
        self.stack, self.device = stack, device
        return self

    @property
    def geometry(self) -> StackGeometry:
        if self.stack is not None:
            return self.stack.geometry
        if getattr(self, "_geometry", None) is None:  # a Ray decode task: no stack, same geometry
            self._geometry = self.plan.geometry
        return self._geometry

    def accept(self, item: Item, decoded: Optional[Decoded], err: Optional[BaseException]) -> Optional[ManifestRecord]:
        """A decode finished (``decoded``, or the exception ``err``): a ``failed`` record, or None
        when the file goes on (``item.decoded`` set; its audio is None for a long file)."""
        if err is not None:
            return self.failed(item, _error_message(item.path, err, "decoding", self.debug))
        assert decoded is not None
        item.decoded = decoded
        if item.fingerprint is None:  # taken up front only for an output a resumed job may keep
            item.fingerprint = decoded.fingerprint
        if decoded.audio is None:
            return None
        try:
            _check_item(decoded.audio, self.geometry, self.channels, item.path)
        except PipelineError as e:
            return self.failed(item, str(e), decoded.audio)
        return None

    @staticmethod
    def item_seconds(item: Item) -> float:
        return (item.decoded.seconds if item.decoded else 0.0) + item.compute_s

    def failed(self, item: Item, error: str, audio: Optional[Audio] = None) -> ManifestRecord:
        return ManifestRecord(
            input=item.path,
            key=item.key or input_key(item.path),
            status="failed",
            error=one_line(error),
            sample_rate=audio.sample_rate if audio else None,
            num_samples=audio.frames if audio else None,
            duration_s=audio.frames / audio.sample_rate if audio else None,
            seconds=round(self.item_seconds(item), 4),
        )

    def compute(self, batch: list[Item]) -> list[tuple[Item, Any]]:
        """``(item, features)`` for every file the stack ran on, ``(item, failed record)`` for the others."""
        assert self.stack is not None
        t0 = time.perf_counter()
        waves = [it.decoded.audio.waveform for it in batch]  # type: ignore[union-attr]
        try:
            feats = extract_batch(waves, self.stack, self.device)
        except Exception as err:  # noqa: BLE001
            if len(batch) > 1:  # find the file that breaks the stack; the others go on
                return [res for it in batch for res in self.compute([it])]
            it = batch[0]
            return [(it, self.failed(it, _error_message(it.path, err, "running the stack", self.debug), it.decoded.audio))]  # type: ignore[union-attr]
        share = (time.perf_counter() - t0) / len(batch)
        out: list[tuple[Item, Any]] = []
        for it, y in zip(batch, feats):
            it.compute_s = share
            try:  # float32 overflow: refuse, naming the input, never write it
                check_finite(y, it.path, it.decoded.audio.waveform)  # type: ignore[union-attr]
            except InputError as err:
                out.append((it, self.failed(it, str(err), it.decoded.audio)))  # type: ignore[union-attr]
            else:
                out.append((it, y))
        return out

    def write(self, item: Item, features: torch.Tensor, sync: bool = True) -> list[ManifestRecord]:
        """Hand one file's features to the ``output.format`` writer; the records of the inputs now
        committed (this one for npy/npz, a whole segment or none for the sharded formats; ``failed``
        ones when a write failed). ``features`` come from ``compute`` (checked finite there).
        ``sync=False``: npy/npz files are not fsynced; the caller syncs before it records them."""
        assert item.decoded is not None and item.decoded.audio is not None
        audio = item.decoded.audio
        array = features.numpy() if self.writer.per_input else features.numpy().copy()  # kept: not a view of the batch
        entry = Entry(item.path, item.key or input_key(item.path), item.out_rel, array, audio.sample_rate,
                      audio.frames, audio.info.sample_rate, audio.info.frames, tag=(item, time.perf_counter()))
        return self.store(entry, sync)

    def store(self, entry: Entry, sync: bool = True) -> list[ManifestRecord]:
        """``entry`` through the writer: the records of what was committed or failed."""
        try:
            return [self.committed(e, place) for e, place in self.writer.write(entry, sync)]
        except Exception as err:  # noqa: BLE001 - a write problem fails the inputs it concerns only
            lost = self.writer.abandon() if self.writer.holds(entry) else [entry]
            return [self.failed(e.tag[0], self._write_error(e, err)) for e in lost]

    def finish(self) -> list[ManifestRecord]:
        """The job's end: the segment in progress committed; its records (``failed`` if it failed)."""
        if self._writer is None:
            return []
        try:
            return [self.committed(e, place) for e, place in self.writer.flush()]
        except Exception as err:  # noqa: BLE001
            return [self.failed(e.tag[0], self._write_error(e, err)) for e in self.writer.abandon()]

    def _write_error(self, entry: Entry, err: BaseException) -> str:
        if isinstance(err, PipelineError):
            return str(err)
        return f"cannot write {self.out.url(entry.out_rel)}: {one_line(str(err)) or type(err).__name__}"

    def committed(self, entry: Entry, place: Location) -> ManifestRecord:
        item, t0 = entry.tag
        item.decoded = None  # its audio is no longer needed
        return self.done(item, entry.sample_rate, entry.num_samples, list(entry.features.shape), t0, place)

    def done(self, item: Item, sample_rate: int, num_samples: int, shape: list[int], t0: float,
             place: Optional[Location] = None) -> ManifestRecord:
        """The ``ok`` record of ``item`` (written since ``t0``, at ``place``), tied to its input and the weights."""
        place = place or Location(item.out_rel)
        return ManifestRecord(
            input=item.path, status="ok", output=place.output, sample_rate=sample_rate, num_samples=num_samples,
            duration_s=num_samples / sample_rate, shape=shape,
            seconds=round(self.item_seconds(item) + time.perf_counter() - t0, 4),
            key=item.key or input_key(item.path), fingerprint=item.fingerprint, weights=self.weights,
            item=place.item, offset=place.offset,
        )

    def long_file(self, item: Item) -> list[ManifestRecord]:
        """A file longer than ``batch.long_file_seconds``: ``process_long_file`` on a local copy
        of a remote input, into a local file committed to ``output.dir`` (npy/npz with the default
        settings), else into a staging ``.npy`` (bounded memory) handed to the writer mapped."""
        assert self.stack is not None
        t0 = time.perf_counter()
        direct = self.formats.plain  # npy/npz as process_long_file writes them
        try:
            info = probe(item.path, self.options, self.cfg.audio.decoder)
            self.channels.stack_channels(info.channels, item.path)
            with fetched(item.path, self.options) as local_in, contextlib.ExitStack() as stack:
                out_path = stack.enter_context(self.out.writing(item.out_rel)) if direct else Path(stack.enter_context(staging())) / "long.npy"
                sr, n, shape = process_long_file(
                    local_in, out_path, self.stack, self.cfg.audio, self.device, self.config, self.chunk_seconds
                )
                if not direct:  # mapped: the mapping outlives the staging file's name
                    entry = Entry(item.path, item.key or input_key(item.path), item.out_rel, np.load(out_path, mmap_mode="r"),
                                  sr, n, info.sample_rate, info.frames, tag=(item, t0))
        except Exception as err:  # noqa: BLE001
            item.compute_s = time.perf_counter() - t0
            return [self.failed(item, _error_message(item.path, err, "processing a long file", self.debug))]
        return [self.done(item, sr, n, shape, t0)] if direct else self.store(entry)
