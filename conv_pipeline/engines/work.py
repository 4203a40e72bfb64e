"""The per-file work of the batch job, shared by the local and Ray engines.

``decode_item`` (in a decode worker: a header probe, then the decode, or nothing for a long
file), ``Work.accept`` (the decoded file checked against the stack: channels, length),
``Work.compute`` (a padded batch through the stack, a failing batch split into single files,
features that overflow refused), ``Work.write`` (the features written atomically, a manifest
record for every outcome) and ``Work.long_file`` (one long file, chunked). ``Work`` pickles without
its stack, so Ray actors build their own.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from conv_pipeline.config.channels import ChannelRule
from conv_pipeline.config.plan import Plan
from conv_pipeline.config.schema import AudioConfig
from conv_pipeline.errors import InputError, PipelineError
from conv_pipeline.execute.whole import check_finite, extract, extract_batch
from conv_pipeline.fs import one_line
from conv_pipeline.geometry import StackGeometry
from conv_pipeline.load.audio import Audio, load_audio
from conv_pipeline.load.remote import fetched, probe
from conv_pipeline.sink.manifest import ManifestRecord
from conv_pipeline.sink.outputs import OutputDir
from conv_pipeline.sink.writer import write_features
from conv_pipeline.stack.stack import ConvStack

log = logging.getLogger("conv_pipeline.batch")


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
        from conv_pipeline.execute.chunked import extract_file_chunked, file_writer

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


def decode_item(
    path: str, audio: AudioConfig, long_after_s: Optional[float], decode: Callable, options: Optional[dict] = None
) -> Decoded:
    """Runs in a decode worker (thread, process or Ray task). ``path``: a path or URL (its
    header is read in place; ``decode`` must take URLs: ``load.remote.UrlDecoder``)."""
    t0 = time.perf_counter()
    if long_after_s is not None:
        info = probe(path, options)
        if info.duration_s > long_after_s:
            return Decoded(None, time.perf_counter() - t0)
    return Decoded(decode(path, audio), time.perf_counter() - t0)


def _error_message(path: str, err: BaseException, stage: str, debug: bool) -> str:
    if isinstance(err, PipelineError):
        return str(err)
    if debug:
        log.error("%s: %s failed:\n%s", path, stage, "".join(traceback.format_exception(err)))
    detail = one_line(str(err)) or type(err).__name__
    return f"{path}: unexpected error while {stage} ({type(err).__name__}: {detail}); rerun with debug=true for a traceback"


@dataclass
class Item:
    index: int
    path: str
    out_rel: str
    decoded: Optional[Decoded] = None
    compute_s: float = 0.0


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
    ) -> None:
        self.plan, self.cfg = plan, plan.config
        self.stack, self.channels, self.out, self.device, self.config = stack, channels, out, device, config
        self.options = plan.storage_options
        self.chunk_seconds = plan.chunk_seconds
        self.long_after_s = plan.batch.long_file_seconds  # longer files: long_file()
        self.debug = bool(plan.config.debug)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "stack": None}

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

    def write(self, item: Item, features: torch.Tensor) -> ManifestRecord:
        """Write one file's features atomically; its record (``failed`` if the write failed)."""
        assert item.decoded is not None and item.decoded.audio is not None
        audio = item.decoded.audio
        t0 = time.perf_counter()
        try:
            with self.out.writing(item.out_rel) as out_path:
                write_features(out_path, features.numpy(), self.geometry, audio.sample_rate, self.config)
        except Exception as err:  # noqa: BLE001 - one file's write problem fails that file only
            msg = str(err) if isinstance(err, PipelineError) else f"cannot write {self.out.url(item.out_rel)}: {one_line(str(err)) or type(err).__name__}"
            return ManifestRecord(input=item.path, status="failed", error=one_line(msg))
        return ManifestRecord(
            input=item.path,
            status="ok",
            output=item.out_rel,
            sample_rate=audio.sample_rate,
            num_samples=audio.frames,
            duration_s=audio.frames / audio.sample_rate,
            shape=list(features.shape),
            seconds=round(self.item_seconds(item) + time.perf_counter() - t0, 4),
        )

    def long_file(self, item: Item) -> ManifestRecord:
        """A file longer than ``batch.long_file_seconds``: ``process_long_file`` on a local copy
        of a remote input, into a local file committed to ``output.dir``."""
        assert self.stack is not None
        t0 = time.perf_counter()
        try:
            info = probe(item.path, self.options)
            self.channels.stack_channels(info.channels, item.path)
            with fetched(item.path, self.options) as local_in, self.out.writing(item.out_rel) as out_path:
                sr, n, shape = process_long_file(
                    local_in, out_path, self.stack, self.cfg.audio, self.device, self.config, self.chunk_seconds
                )
        except Exception as err:  # noqa: BLE001
            item.compute_s = time.perf_counter() - t0
            return self.failed(item, _error_message(item.path, err, "processing a long file", self.debug))
        return ManifestRecord(
            input=item.path, status="ok", output=item.out_rel, sample_rate=sr, num_samples=n,
            duration_s=n / sr, shape=shape, seconds=round(self.item_seconds(item) + time.perf_counter() - t0, 4),
        )
