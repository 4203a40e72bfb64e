"""The local engine: the batch job's processing step in this process.

Decode workers (threads by default, processes with ``batch.workers=process``, inline with
``runtime.num_workers=0``) decode and resample files ahead; decoded files wait in a pool from
which each padded batch takes the files of most similar length (``take_batch``); the main thread
runs the stack on the batch (``Work.compute``); one writer thread writes each file's features
atomically and appends its manifest record, in order. Files longer than
``batch.long_file_seconds`` run alone through the chunked executor (``Work.long_file``). A worker
process that dies costs the file it was decoding, not the job.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Optional

import torch

from conv_pipeline.engines.progress import BatchSummary, Progress, count_record
from conv_pipeline.engines.work import Item, Work, decode_item
from conv_pipeline.errors import OutputError
from conv_pipeline.fs import join, one_line
from conv_pipeline.load.audio import Audio
from conv_pipeline.load.remote import UrlDecoder
from conv_pipeline.sink.manifest import MANIFEST_NAME, ManifestRecord
from conv_pipeline.sink.manifest_sink import ManifestSink

log = logging.getLogger("conv_pipeline.batch")


# Decoded files wait in a pool of up to SORT_WINDOW batches; each batch takes the run of files
# of most similar length from it (``take_batch``), so little padding is computed: on 300
# files of 1-30 s, padding cost 53% extra stack work taking the shortest files of a 4-batch
# pool, 15% with the best run of a 4-batch pool, 7.5% with an 8-batch pool.
SORT_WINDOW = 8


# ... and the pool never holds more than this many samples (bounded memory with long files).
POOL_MAX_SAMPLES = 64 * 2**20


class _InlineExecutor(cf.Executor):
    """``runtime.num_workers=0``: decode in the main thread."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the caller like a worker's error
            if isinstance(err, KeyboardInterrupt):
                raise
            fut.set_exception(err)
        return fut


def _process_context() -> multiprocessing.context.BaseContext:
    """Worker processes start from a clean interpreter (never ``fork`` a process using torch)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["conv_pipeline.audio"])
        return ctx
    return multiprocessing.get_context("spawn")


class _Decoders:
    """The decode workers: threads (default), processes, or inline.

    With processes, a worker that dies (a decoder crash) breaks the pool: the files it had in
    flight are decoded again one at a time in a fresh pool, and the one that kills its worker
    again gets a ``failed`` record; the job goes on.
    """

    def __init__(self, kind: str, workers: int) -> None:
        self.kind = kind if workers > 0 else "inline"
        self.workers = workers
        self.pool = self._new_pool()

    def _new_pool(self) -> cf.Executor:
        if self.kind == "inline":
            return _InlineExecutor()
        if self.kind == "process":
            # the workers resample with torch: give them the job's thread count (the parent's
            # torch.set_num_threads does not reach them), or their OpenMP threads oversubscribe
            return cf.ProcessPoolExecutor(
                self.workers,
                mp_context=_process_context(),
                initializer=torch.set_num_threads,
                initargs=(torch.get_num_threads(),),
            )
        return cf.ThreadPoolExecutor(self.workers, thread_name_prefix="decode")

    def submit(self, *args: Any) -> cf.Future:
        return self.pool.submit(decode_item, *args)

    def restart(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()

    def run_alone(self, *args: Any) -> cf.Future:
        """Decode one file alone and wait; a dead worker gives a ``BrokenProcessPool`` result
        (and a fresh pool for what follows)."""
        fut = self.submit(*args)
        cf.wait([fut])
        if isinstance(fut.exception(), BrokenProcessPool):
            self.restart()
        return fut

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def compute_threads(num_workers: int, device: torch.device) -> int:
    """Torch intra-op threads while the job runs: the cores shared out between the decode
    workers (their resampling calls torch too) and the main thread's stack.

    Never more threads than cores in total: torch's OpenMP threads wait for each other at
    every parallel region, so an oversubscribed (or shared, busy) machine makes each region
    wait for a descheduled thread. Measured on the 2-core machine with another process
    busy: one 6 s resample took 160 ms with 2 threads and 3 ms with 1 (BENCHMARKS.md).
    """
    del device  # the same on GPU: the CPU work left is decoding and resampling
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // (num_workers + 1))


def take_batch(pool: list[Item], size: int) -> list[Item]:
    """Remove and return the ``size`` files of most similar length from ``pool``: among runs of
    consecutive files in length order, the one whose padding costs the least relative to its
    valid samples (new arrivals are random, so the shortest ones would not be similar)."""
    pool.sort(key=lambda it: it.decoded.audio.frames)  # type: ignore[union-attr]
    if len(pool) <= size:
        batch = pool[:]
        pool.clear()
        return batch
    frames = [it.decoded.audio.frames for it in pool]  # type: ignore[union-attr]
    best, best_waste = 0, float("inf")
    total = sum(frames[:size])
    for i in range(len(pool) - size + 1):
        if i:
            total += frames[i + size - 1] - frames[i - 1]
        waste = size * frames[i + size - 1] / total
        if waste < best_waste:
            best, best_waste = i, waste
    batch = pool[best : best + size]
    del pool[best : best + size]
    return batch


class LocalEngine:
    """Decode workers -> length-sorted pool -> padded batches in the main thread -> writer thread."""

    def __init__(self, work: Work, manifest: ManifestSink, decode: Callable, summary: BatchSummary) -> None:
        cfg = work.cfg
        self.work, self.cfg, self.opts = work, cfg, work.plan.batch
        self.out, self.manifest, self.summary = work.out, manifest, summary
        self.decode = UrlDecoder(decode, self.work.options)  # paths and URLs
        self.batch_size = cfg.runtime.batch_size
        self.chunk_seconds = cfg.runtime.chunk_seconds
        self.debug = bool(cfg.debug)
        self.writer = cf.ThreadPoolExecutor(1, thread_name_prefix="write")
        self.writes: list[cf.Future] = []
        self.max_writes = 2 * self.batch_size + 4

    # -- records: every record goes through the single writer thread, in order
    def _append(self, rec: ManifestRecord) -> ManifestRecord:
        self.manifest.add([rec])
        return rec

    def _record_failed(self, item: Item, error: str, audio: Optional[Audio] = None) -> None:
        rec = self.work.failed(item, error, audio)
        self._submit_write(lambda: self._append(rec))

    def _write_ok(self, item: Item, features: torch.Tensor) -> ManifestRecord:
        """Runs in the writer thread: write the features atomically, then append the record."""
        return self._append(self.work.write(item, features))

    def _submit_write(self, fn: Callable[[], ManifestRecord]) -> None:
        self.writes.append(self.writer.submit(fn))
        if len(self.writes) > self.max_writes:  # bounded backlog: wait for the oldest
            cf.wait([self.writes[0]])
        self._harvest_writes()

    def _harvest_writes(self, wait: bool = False) -> None:
        if wait:
            cf.wait(self.writes)
        pending = []
        for fut in self.writes:
            if not fut.done():
                pending.append(fut)
                continue
            err = fut.exception()
            if err is not None:  # the manifest itself cannot be written
                raise OutputError(f"cannot append to {join(self.out.display, MANIFEST_NAME)}: {one_line(str(err))}")
            rec = fut.result()
            count_record(self.summary, rec)
            self.progress.update(rec)
        self.writes = pending

    # -- compute
    def _compute(self, batch: list[Item]) -> None:
        for it, res in self.work.compute(batch):
            if isinstance(res, ManifestRecord):
                self._submit_write(lambda rec=res: self._append(rec))
            else:
                self._submit_write(lambda it=it, f=res: self._write_ok(it, f))

    def _long_file(self, item: Item) -> None:
        rec = self.work.long_file(item)
        self._submit_write(lambda: self._append(rec))

    def _accept(self, item: Item, fut: cf.Future, pool: list[Item]) -> None:
        """A decode finished: into the pool, to the long-file path, or a failed record."""
        err = fut.exception()
        if isinstance(err, BrokenProcessPool):
            raise err
        rec = self.work.accept(item, None if err is not None else fut.result(), err)
        if rec is not None:
            self._submit_write(lambda: self._append(rec))
        elif item.decoded.audio is None:  # type: ignore[union-attr]
            self._long_file(item)
        else:
            pool.append(item)

    def run(self, todo: list[Item]) -> None:
        self.progress = Progress(len(todo), self.opts.progress, self.opts.log_every_s)
        decoders = _Decoders(self.opts.workers, self.cfg.runtime.num_workers)
        args = (self.cfg.audio, self.work.long_after_s, self.decode, self.work.options)
        max_inflight = max(1, 2 * self.cfg.runtime.num_workers + self.batch_size)
        window = SORT_WINDOW * self.batch_size
        queue: Iterator[Item] = iter(todo)
        inflight: dict[cf.Future, Item] = {}
        pool: list[Item] = []
        pool_samples = 0
        exhausted = False
        try:
            while True:
                while not exhausted and len(inflight) < max_inflight:
                    item = next(queue, None)
                    if item is None:
                        exhausted = True
                        break
                    inflight[decoders.submit(item.path, *args)] = item
                # harvest finished decodes
                done = [f for f in inflight if f.done()]
                if not done and inflight and len(pool) < (self.batch_size if exhausted else window) and pool_samples < POOL_MAX_SAMPLES:
                    done = list(cf.wait(inflight, return_when=cf.FIRST_COMPLETED).done)
                broken = False
                for f in done:
                    if isinstance(f.exception(), BrokenProcessPool):
                        broken = True
                    else:
                        self._accept(inflight.pop(f), f, pool)
                if broken:  # a worker process died: its files are retried one at a time
                    self._recover(decoders, inflight, pool, args)
                pool_samples = sum(it.decoded.audio.waveform.numel() for it in pool)  # type: ignore[union-attr]
                drain = exhausted and not inflight
                # once every file is submitted, a full batch need not wait for a full window:
                # the stack then overlaps the last decodes
                target = self.batch_size if exhausted else window
                while pool and (len(pool) >= target or pool_samples >= POOL_MAX_SAMPLES or drain):
                    batch = take_batch(pool, self.batch_size)
                    pool_samples -= sum(it.decoded.audio.waveform.numel() for it in batch)  # type: ignore[union-attr]
                    self._compute(batch)
                    if not drain:
                        break
                self._harvest_writes()
                if drain and not pool:
                    break
            self._harvest_writes(wait=True)
        finally:
            decoders.close()
            self.writer.shutdown(wait=True)
            self.progress.close()

    def _recover(self, decoders: _Decoders, inflight: dict[cf.Future, Item], pool: list[Item], args: tuple) -> None:
        """A worker process died: decode each file it may have held alone, in a fresh pool."""
        suspects = list(inflight.values())
        inflight.clear()
        log.warning("batch: a decode worker died; retrying its %d file(s) one at a time", len(suspects))
        decoders.restart()
        for item in suspects:
            fut = decoders.run_alone(item.path, *args)
            if isinstance(fut.exception(), BrokenProcessPool):
                self._record_failed(
                    item,
                    f"{item.path}: the decoder crashed on this file (its worker process died); "
                    "the file is probably corrupt: check or re-encode it",
                )
            else:
                self._accept(item, fut, pool)
