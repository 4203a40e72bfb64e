"""The local engine: the batch job's processing step in this process.

Decode workers (threads by default, processes with ``batch.workers=process``, inline with
``runtime.num_workers=0``) decode and resample files ahead; decoded files wait in a pool from
which each padded batch takes the files of most similar length (``take_batch``); the main thread
runs the stack on the batch (``Work.compute``); one writer thread writes each file's features
and appends the manifest records, in order, a group at a time (``RECORDS_PER_APPEND``,
``APPEND_EVERY_S``: one ``fsync`` of the features and one append per group, not per file). The
batch size is the plan's (``runtime.batch_size``, or the model's own when unset: ``config/plan.py``);
the allocator's arenas are bounded and its free pages returned between batches
(``engines/memory.py``), so memory stays flat however many files. Files longer than
``batch.long_file_seconds`` run alone through the chunked executor (``Work.long_file``). A worker
process that dies costs the file it was decoding, not the job.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Optional, Sized

import torch

from conv_pipeline.engines.memory import Trimmer, bound_arenas
from conv_pipeline.engines.progress import BatchSummary, Progress, count_record
from conv_pipeline.engines.work import Item, Work, decode_item
from conv_pipeline.errors import OutputError
from conv_pipeline.fs import join, one_line
from conv_pipeline.load.audio import Audio
from conv_pipeline.load.remote import UrlDecoder
from conv_pipeline.sink.manifest import MANIFEST_NAME, ManifestRecord
from conv_pipeline.sink.manifest_sink import ManifestSink
from conv_pipeline.sink.writer import sync_filesystem

log = logging.getLogger("conv_pipeline.batch")


# Decoded files wait in a pool of up to SORT_WINDOW batches; each batch takes the run of files
# of most similar length from it (``take_batch``), so little padding is computed: on 300
# files of 1-30 s, padding cost 53% extra stack work taking the shortest files of a 4-batch
# pool, 15% with the best run of a 4-batch pool, 7.5% with an 8-batch pool.
SORT_WINDOW = 8


# ... and the pool never holds more than this many samples (bounded memory with long files).
POOL_MAX_SAMPLES = 64 * 2**20
# ... and one padded batch never holds more than this many input samples (all channels), whatever
# runtime.batch_size says: the batch tensor and the layers' activations grow with it.
BATCH_MAX_SAMPLES = 16 * 2**20
# Decodes in flight beyond the workers' own: enough to fill the sorting window of a usual batch size.
MAX_AHEAD = 256
# Records appended to the manifest at once (one write, one fsync, after one sync of their feature
# files), and the longest a written file waits for its record: a job killed in between loses
# those records only (their files are recomputed by the next run, never trusted without one).
RECORDS_PER_APPEND = 16
APPEND_EVERY_S = 1.0


class _InlineExecutor(cf.Executor):
    """``runtime.num_workers=0``: decode in the main thread."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the caller like a worker's error
            if not isinstance(err, Exception):  # Ctrl-C, SIGTERM (cli/common.py): the job ends
                raise
            fut.set_exception(err)
        return fut


# The resource tracker (a helper process multiprocessing starts) warns at its exit about the
# semaphores of a job that was SIGKILLed, which it then removes: nothing for the user to do.
TRACKER_QUIET = "ignore:resource_tracker:UserWarning"


def _process_context() -> multiprocessing.context.BaseContext:
    """Worker processes start from a clean interpreter (never ``fork`` a process using torch)."""
    if TRACKER_QUIET not in sys.warnoptions:  # passed on to the helper processes' command lines
        sys.warnoptions.append(TRACKER_QUIET)
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["conv_pipeline.load.audio"])
        return ctx
    return multiprocessing.get_context("spawn")


def die_with(pid: int) -> None:
    """End this process (a decode worker) as soon as process ``pid`` (the job) ends, however it
    ends (SIGKILL included).

    A worker's parent is the forkserver, not the job, and both stay alive after the job dies
    (each worker holds its own call queue's write end and the forkserver's liveness pipe): without
    this they are orphans holding the job's stdout (``... | cat`` never ends) and their memory.
    A thread waits on a pidfd of the job (polls where pidfds are missing); the parent-death
    signal also ends the worker if its parent (the forkserver) dies.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    try:
        fd: Optional[int] = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)  # the job is already gone
    except (AttributeError, OSError):
        fd = None

    def job_gone(timeout: Optional[float]) -> bool:
        """Wait up to ``timeout`` seconds (None: for good) for the job to end; True once it has."""
        if fd is not None:
            return bool(select.select([fd], [], [], timeout)[0])
        waited = 0.0
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            if timeout is not None and waited >= timeout:
                return False
            threading.Event().wait(0.1)
            waited += 0.1

    def hooks(default: Callable) -> Callable:
        def quiet_once_orphaned(*args: Any) -> None:
            # an error that the job's death causes (the fd-passing thread's EOFError or reset
            # connection: the job's end closes its sockets just before it is reported gone)
            if not job_gone(1.0):
                default(*args)

        return quiet_once_orphaned

    threading.excepthook = hooks(threading.excepthook)
    sys.excepthook = hooks(sys.excepthook)

    def watch() -> None:
        job_gone(None)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-job", daemon=True).start()


def init_worker(threads: int, job_pid: int) -> None:
    """A decode worker process's start: the job's torch thread count (the parent's
    ``torch.set_num_threads`` does not reach it, and its OpenMP threads would oversubscribe),
    Ctrl-C and SIGTERM left to the job (which ends its workers; no worker tracebacks), and an
    end with the job (``die_with``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(threads)
    bound_arenas()
    die_with(job_pid)


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
            return cf.ProcessPoolExecutor(
                self.workers,
                mp_context=_process_context(),
                initializer=init_worker,
                initargs=(torch.get_num_threads(), os.getpid()),
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

    def close(self, interrupted: bool = False) -> None:
        """Stop the workers: after their current files, or (``interrupted``: Ctrl-C, SIGTERM, an
        error) at once: a decode in flight holds no output."""
        if not interrupted:
            self.pool.shutdown(wait=True, cancel_futures=True)
            return
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                proc.kill()
        for proc in processes:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                proc.join(5)


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
        return _within_budget(batch, pool)
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
    return _within_budget(batch, pool)


def _within_budget(batch: list[Item], pool: list[Item]) -> list[Item]:
    """``batch`` shortened (its longest files back into ``pool``) until its padded tensor holds at
    most ``BATCH_MAX_SAMPLES`` samples; one file always goes."""
    def padded(items: list[Item]) -> int:
        audio = [it.decoded.audio for it in items]  # type: ignore[union-attr]
        return len(items) * max(a.frames for a in audio) * int(audio[0].waveform.shape[0])

    while len(batch) > 1 and padded(batch) > BATCH_MAX_SAMPLES:
        pool.append(batch.pop())  # sorted by length: the longest is last
    return batch


class LocalEngine:
    """Decode workers -> length-sorted pool -> padded batches in the main thread -> writer thread."""

    def __init__(self, work: Work, manifest: ManifestSink, decode: Callable, summary: BatchSummary) -> None:
        cfg = work.cfg
        self.work, self.cfg, self.opts = work, cfg, work.plan.batch
        self.out, self.manifest, self.summary = work.out, manifest, summary
        self.decode = UrlDecoder(decode, self.work.options)  # paths and URLs
        self.batch_size = int(cfg.runtime.batch_size)  # resolved by the plan (config/plan.py: batch_size_for)
        self.chunk_seconds = cfg.runtime.chunk_seconds
        self.debug = bool(cfg.debug)
        self.writer = cf.ThreadPoolExecutor(1, thread_name_prefix="write")
        self.writes: list[cf.Future] = []
        # writes queued before the main thread waits: room for two groups (the writer syncs the
        # filesystem once per group, which can take milliseconds; batches of one file filled a
        # queue of 2 x batch_size + 4 during each sync and stalled the stack)
        self.max_writes = 2 * (self.batch_size + RECORDS_PER_APPEND)
        self.unrecorded: list[ManifestRecord] = []  # the writer thread's group not yet in the manifest
        self.unrecorded_since = 0.0
        self.trimmer = Trimmer()

    # -- records: every record goes through the single writer thread, in order, a group at a time
    def _record(self, rec: ManifestRecord) -> ManifestRecord:
        """Writer thread: ``rec`` joins the group, appended once full or old enough; the progress
        moves now, file by file (not when the main thread, busy with the next batch, harvests)."""
        self.progress.update(rec)
        if not self.unrecorded:
            self.unrecorded_since = time.monotonic()
        self.unrecorded.append(rec)
        if len(self.unrecorded) >= RECORDS_PER_APPEND or time.monotonic() - self.unrecorded_since >= APPEND_EVERY_S:
            self._append_group()
        return rec

    def _append_group(self) -> None:
        """Writer thread (or the main thread once the writer has stopped): the group's feature files
        made durable (one sync), then its records appended (one write)."""
        group = self.unrecorded
        if not group:
            return
        written = [r.output for r in group if r.status == "ok" and r.output]
        if written and self.out.path is not None:
            sync_filesystem(self.out.path, [self.out.path / rel for rel in written])
        self.manifest.add(group)
        self.unrecorded = []

    def _record_failed(self, item: Item, error: str, audio: Optional[Audio] = None) -> None:
        rec = self.work.failed(item, error, audio)
        self._submit_write(lambda: self._record(rec))

    def _write_ok(self, item: Item, features: torch.Tensor) -> list[ManifestRecord]:
        """Runs in the writer thread: write the features atomically, then record what was committed
        (a sharded format commits a segment of inputs at a time)."""
        recs = self.work.write(item, features, sync=False)
        item.decoded = None  # the job holds its items to the end: never their audio
        return [self._record(rec) for rec in recs]

    def _submit_write(self, fn: Callable[[], Any]) -> None:
        self.writes.append(self.writer.submit(fn))
        if len(self.writes) > self.max_writes:  # bounded backlog: wait for the oldest
            cf.wait([self.writes[0]])
        self._harvest_writes()

    def _flush_records(self, stale_only: bool = False) -> None:
        """Have the writer append its group once it has written what it was given so far
        (``stale_only``: only if the group has waited ``APPEND_EVERY_S``)."""
        if not stale_only or (self.unrecorded and time.monotonic() - self.unrecorded_since >= APPEND_EVERY_S):
            self.unrecorded_since = time.monotonic()  # one request per period, not one per loop
            self._submit_write(self._append_group)

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
                if isinstance(err, OutputError):  # it names the manifest already
                    raise err
                raise OutputError(f"cannot append to {join(self.out.display, MANIFEST_NAME)}: {one_line(str(err))}")
            result = fut.result()
            for rec in result if isinstance(result, list) else [result] if result is not None else []:
                count_record(self.summary, rec)
        self.writes = pending

    # -- compute
    def _compute(self, batch: list[Item]) -> None:
        results = self.work.compute(batch)
        for it, res in results:
            if isinstance(res, ManifestRecord):
                it.decoded = None
                self._submit_write(lambda rec=res: self._record(rec))
            else:
                self._submit_write(lambda it=it, f=res: self._write_ok(it, f))
        self.trimmer.maybe()  # the batch's buffers are freed: their pages go back to the system

    def _long_file(self, item: Item) -> None:
        self._flush_records()  # the records so far need not wait for a long computation
        recs = self.work.long_file(item)
        self._submit_write(lambda: [self._record(rec) for rec in recs])
        self.trimmer.now()

    def _accept(self, item: Item, fut: cf.Future, pool: list[Item]) -> None:
        """A decode finished: into the pool, to the long-file path, or a failed record."""
        err = fut.exception()
        if isinstance(err, BrokenProcessPool):
            raise err
        rec = self.work.accept(item, None if err is not None else fut.result(), err)
        if rec is not None:
            item.decoded = None
            self._submit_write(lambda: self._record(rec))
        elif item.decoded.audio is None:  # type: ignore[union-attr]
            self._long_file(item)
        else:
            pool.append(item)

    def run(self, todo: Iterable[Item]) -> None:
        total = len(todo) if isinstance(todo, Sized) else self.summary.total
        self.progress = Progress(total, self.opts.progress, self.opts.log_every_s)
        bound_arenas()  # before the decode and writer threads allocate
        decoders = _Decoders(self.opts.workers, self.cfg.runtime.num_workers)
        args = (self.cfg.audio, self.work.long_after_s, self.decode, self.work.options)
        max_inflight = max(1, 2 * self.cfg.runtime.num_workers + min(self.batch_size, MAX_AHEAD))
        queue: Iterator[Item] = iter(todo)
        inflight: dict[cf.Future, Item] = {}
        pool: list[Item] = []
        pool_samples = 0
        exhausted = False
        started = False  # no batch computed yet
        finished = False
        try:
            while True:
                while not exhausted and len(inflight) < max_inflight:
                    item = next(queue, None)
                    if item is None:
                        exhausted = True
                        break
                    inflight[decoders.submit(item.path, *args)] = item
                size = self.batch_size
                # a batch takes the files of most similar length from a window of SORT_WINDOW
                # batches; a batch of one has no padding and takes the first file decoded; so does
                # the first batch, so the first files are written (and shown) without waiting for a window
                target = size if exhausted or size == 1 or not started else SORT_WINDOW * size
                # harvest finished decodes
                done = [f for f in inflight if f.done()]
                if not done and inflight and len(pool) < target and pool_samples < POOL_MAX_SAMPLES:
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
                while pool and (len(pool) >= target or pool_samples >= POOL_MAX_SAMPLES or drain):
                    batch = take_batch(pool, size)
                    pool_samples -= sum(it.decoded.audio.waveform.numel() for it in batch)  # type: ignore[union-attr]
                    self._compute(batch)
                    started = True
                    if not drain:
                        break
                self._flush_records(stale_only=True)
                self._harvest_writes()
                if drain and not pool:
                    break
            self._submit_write(lambda: [self._record(rec) for rec in self.work.finish()])  # the last segment
            self._flush_records()
            self._harvest_writes(wait=True)
            finished = True
        finally:
            decoders.close(interrupted=not finished)
            self.writer.shutdown(wait=True)
            if not finished:  # records of files already written, so a resumed job keeps them
                with contextlib.suppress(Exception):
                    self._append_group()
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
