"""The batch job: a collection of inputs -> features, resumable and failure-isolated.

``run_batch`` is the whole job, in order:

1. the plan (``config/plan.py``): every config problem is a ``ConfigError`` (exit 2) before
   any audio is read;
2. the source stage finds the inputs (a folder, a glob, a list file or one file; local or a
   URL) and names one output per input, mirroring the input tree (``source/inputs.py``);
3. the corpus's headers are probed (cheap, in threads) and the channel rule checked against
   them as a whole: a folder whose files cannot all be processed under ``audio.channels`` is
   refused before anything is processed, naming the counts found and the fix;
4. the stack is built and ``model.safetensors`` + ``config.yaml`` written (refusing a different
   model or different audio settings unless ``overwrite=true``), temporary files of a killed
   run removed, inputs whose output exists recorded as ``skipped`` when its record ties it to
   this input as it is now and to these weights (``engines/work.py``: key, fingerprint, weights
   digest); an output whose record is another input's (same output name: ``b/x.flac`` after
   ``a/x.wav``) is kept and this input refused with a ``failed`` record naming both
   (``sink/manifest.py: name_clash``; ``overwrite=true`` replaces it); any other output is
   recomputed. An ``overwrite=true`` run marks the folder
   (``OVERWRITE_MARK``) until it completes: a later run without ``overwrite=true`` is refused
   there, so an interrupted overwrite is never resumed into a folder of two models;
5. an engine runs the rest: ``local`` (``engines/local.py``: decode threads, padded batches,
   a writer thread) or ``ray`` (``engines/ray_engine.py``); both do the per-file work through
   ``engines/work.py`` and append every outcome to ``manifest.jsonl``.

A file that cannot be used (unreadable, corrupt, too short, NaN/Inf, a crashing decoder) gets a
``failed`` record with a one-line message and the job goes on: exit status 1 at the end.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from conv_pipeline.config.channels import ChannelRule
from conv_pipeline.config.compose import written_config
from conv_pipeline.config.plan import Plan, build_plan
from conv_pipeline.config.schema import AudioConfig
from conv_pipeline.engines.local import LocalEngine, compute_threads
from conv_pipeline.engines.memory import frozen_heap
from conv_pipeline.engines.progress import BatchSummary, count_record
from conv_pipeline.engines.work import (
    Item,
    Work,
    input_fingerprint,
    input_key,
    weights_digest,
)
from conv_pipeline.errors import OutputError, PipelineError
from conv_pipeline.execute.whole import resolve_device
from conv_pipeline.fs import is_url
from conv_pipeline.load.audio import Audio, load_audio
from conv_pipeline.load.remote import probe
from conv_pipeline.sink.jobdir import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    OutputLock,
    prepare_output_dir,
)
from conv_pipeline.sink.manifest import MANIFEST_NAME, ManifestRecord, name_clash
from conv_pipeline.sink.manifest_sink import ManifestSink
from conv_pipeline.sink.outputs import TEMP_RE, OutputDir
from conv_pipeline.source.inputs import InputSet, find_inputs, plan_outputs
from conv_pipeline.stack.spectral import fix_weights
from conv_pipeline.stack.stack import ConvStack, build_stack

log = logging.getLogger("conv_pipeline.batch")


PROBE_THREADS = 8  # header reads in flight when probing a corpus (I/O bound: local disks and object stores)
OVERWRITE_MARK = ".overwrite-incomplete"  # in output.dir while an overwrite=true run has not completed


@dataclass
class Job:
    """One batch job's state once planned: what every later step needs."""

    plan: Plan
    inputs: InputSet
    outputs: list[str]
    out: OutputDir
    device: torch.device
    decode: Callable
    summary: BatchSummary
    channels: Optional[ChannelRule] = None  # the count resolved for the corpus; None: nothing could be probed
    probe_errors: dict[str, str] = field(default_factory=dict)
    runner: Any = None
    stack: Optional[ConvStack] = None
    config: dict[str, Any] = field(default_factory=dict)
    weights: Optional[str] = None  # weights_digest(stack)


def probe_corpus(paths: Sequence[str], options: Optional[dict], decoder: str = "auto") -> tuple[dict[int, list[str]], dict[str, str]]:
    """Every input's channel count from its header: ``({channels: [paths]}, {path: error})``."""
    counts: dict[int, list[str]] = {}
    errors: dict[str, str] = {}

    def one(path: str) -> tuple[str, Any]:
        try:
            return path, probe(path, options, decoder).channels
        except PipelineError as err:
            return path, err

    if any(is_url(p) for p in paths):  # object stores: one request per header, in flight together
        with cf.ThreadPoolExecutor(min(PROBE_THREADS, max(1, len(paths)))) as pool:
            results = list(pool.map(one, paths))
    else:  # local headers take microseconds; the main thread alone holds back the decoders' stderr notes
        results = [one(p) for p in paths]
    for path, result in results:
        if isinstance(result, PipelineError):
            errors[path] = str(result)
        else:
            counts.setdefault(int(result), []).append(path)
    return counts, errors


def corpus_channels(plan: Plan, paths: Sequence[str]) -> tuple[Optional[ChannelRule], dict[str, str]]:
    """The channel rule with the stack's count fixed for this corpus (``ConfigError`` when the
    files cannot all be processed under ``audio.channels``), and the inputs whose header could
    not be read (each fails on its own later)."""
    rule = plan.channels
    if rule.policy == "mono" and rule.count is not None:  # any file can be made mono
        return rule, {}
    counts, errors = probe_corpus(paths, plan.storage_options, plan.config.audio.decoder)
    count = rule.for_corpus(counts, str(plan.input))
    if not counts and rule.count is None:
        return None, errors
    if rule.count is None:
        rule = dataclasses.replace(rule, count=count, source=f"the inputs have {count}")
    return rule, errors


def run_batch(
    cfg: Any,
    output_dir: Optional[str] = None,
    decode: Callable[[str, AudioConfig], Audio] = load_audio,
) -> BatchSummary:
    """Process every input of ``cfg.input`` (see ``find_inputs``) into ``output.dir``.

    ``cfg``: a ``Plan``, a ``BatchConfig``/``Config`` or a composed Hydra config. ``output_dir`` is
    used when ``cfg.output.dir`` is null (a multirun job's folder), else ``feats``. ``decode``:
    ``path, AudioConfig -> Audio`` (``load_audio``; a module-level function with
    ``batch.workers=process``; local engine only; worker processes import the main module, so a
    script calling ``run_batch`` with processes needs the ``if __name__ == "__main__":`` guard).
    Raises ``PipelineError`` (exit 2) for config and setup problems, before any audio is decoded;
    per-file problems become ``failed`` records. ``engine=ray``: its resource settings are checked
    against the cluster before anything is written.
    """
    t_start = time.perf_counter()
    plan = cfg if isinstance(cfg, Plan) else build_plan(cfg, "batch", output_dir)
    out = OutputDir(plan.output_dir, plan.storage_options)
    runner = None
    if plan.engine.name == "ray":
        from conv_pipeline.engines.ray_engine import RayRunner

        runner = RayRunner(plan.config, plan.engine, out)  # static checks (Ray installed, keys, URLs)
        device = torch.device("cpu")  # the driver only writes the weights; each actor picks its device
    else:
        device = resolve_device(plan.device)
    inputs = find_inputs(plan.input, plan.batch.extensions, plan.storage_options)
    outputs = plan_outputs(inputs.rels, plan.output_format)
    channels, probe_errors = corpus_channels(plan, inputs.paths)
    summary = BatchSummary(output_dir=out.path if out.path is not None else out.spec, total=len(inputs.paths))
    job = Job(plan, inputs, outputs, out, device, decode, summary, channels, probe_errors, runner)
    try:
        if runner is not None:
            runner.start()  # connects; impossible resource settings fail here, nothing written
        out.create()
        lock = OutputLock(out.path) if out.path is not None else None  # no lock on remote storage
        try:
            _run_locked(job)
        finally:
            if lock is not None:
                lock.release()
    finally:
        if runner is not None:
            runner.close()
    summary.wall_seconds = time.perf_counter() - t_start
    return summary


def check_overwrite_mark(out: OutputDir, overwrite: bool) -> None:
    """Refuse (one line) to resume without ``overwrite=true`` where an overwrite run did not complete."""
    if not overwrite and out.is_file(OVERWRITE_MARK):
        raise OutputError(
            f"output.dir={out.display!r}: an overwrite=true run there did not complete, so its features may "
            "come from two models or settings; re-run with overwrite=true, or use another output.dir"
        )


def _clear_overwrite_mark(out: OutputDir) -> None:
    if out.path is not None:
        (out.path / OVERWRITE_MARK).unlink(missing_ok=True)
    elif out.is_file(OVERWRITE_MARK):
        out.fs.rm(out.key(OVERWRITE_MARK))


def _run_locked(job: Job) -> None:
    cfg, out = job.plan.config, job.out
    job.config = written_config(cfg)
    check_overwrite_mark(out, cfg.overwrite)
    if job.channels is not None:
        job.config["model"]["in_channels"] = job.channels.count
        job.summary.in_channels = job.channels.count
        job.stack = fix_weights(build_stack(cfg.model, job.channels.count, seed=cfg.seed).to(job.device).eval())
        job.weights = weights_digest(job.stack)
        if cfg.overwrite:  # before the first file is replaced; removed once the run completes
            out.write_bytes(OVERWRITE_MARK, b"an overwrite=true run has not completed here\n")
        with out.metadata([WEIGHTS_NAME, CONFIG_NAME]) as meta:  # remote: a staged copy, committed after
            prepare_output_dir(meta, job.stack, cfg.overwrite, job.config)
    # logged once every setup check has passed, so a refused job prints its error line only
    log.info("batch: %d input(s) (%s, root %s) -> %s", len(job.inputs.paths), job.inputs.kind, job.inputs.root, out.display)
    if job.channels is not None:
        log.info("batch: stack takes %d channel(s) (%s)", job.channels.count, job.channels.source)
    removed = out.clean_temp_files(TEMP_RE)
    if removed:
        log.info("batch: removed %d temporary file(s) left by an interrupted run", removed)
    manifest = ManifestSink(out, job.plan.storage.manifest_flush_s)  # local: ends a torn last line
    try:
        _run_manifest(job, manifest)
    finally:
        manifest.close()
    if cfg.overwrite and job.stack is not None:
        _clear_overwrite_mark(out)  # every input has its record: the folder holds one run's features


def _fingerprints(paths: Sequence[str], options: Optional[dict]) -> dict[str, Optional[str]]:
    """``input_fingerprint`` of each of ``paths`` (URLs: their stamps fetched in threads)."""
    if any(is_url(p) for p in paths):
        with cf.ThreadPoolExecutor(min(PROBE_THREADS, max(1, len(paths)))) as pool:
            return dict(zip(paths, pool.map(lambda p: input_fingerprint(p, options), paths)))
    return {p: input_fingerprint(p, options) for p in paths}


def _trusted(prev: Optional[ManifestRecord], key: str, fingerprint: Optional[str], weights: Optional[str]) -> bool:
    """True when ``prev`` (the record holding an output) ties it to this input as it is now and to
    these weights; an older version's record (no fingerprint or digest) is not trusted."""
    return (
        prev is not None and prev.key == key and fingerprint is not None and prev.fingerprint == fingerprint
        and weights is not None and prev.weights == weights
    )


def _early_records(job: Job, manifest: ManifestSink) -> tuple[list[ManifestRecord], list[Item]]:
    """Records known before any decoding (failed probes without a stack, skipped outputs of an
    earlier run: an output under its final name is complete, writes being atomic, and is kept
    when its record ties it to this input and these weights) and the rest.

    Only the records of outputs that exist are kept from the manifest, and only their inputs are
    fingerprinted here; the other inputs' fingerprints are taken by the decode workers."""
    out, overwrite = job.out, job.plan.config.overwrite
    problems: list[str] = []
    existing = out.files() if out.remote else None  # one listing instead of a request per file
    previous: dict[str, ManifestRecord] = {}
    if not overwrite and job.stack is not None:
        outputs = set(job.outputs)
        records = manifest.read(problems).values()
        planned: dict = {}  # a shard's record (parquet, kaldi, lhotse) belongs to its input's planned name
        if any(r.item is not None for r in records):
            planned = {input_key(p): rel for p, rel in zip(job.inputs.paths, job.outputs)}
        for r in records:
            rel = r.output if r.item is None else planned.get(r.key)
            if r.status in ("ok", "skipped") and rel in outputs and r.weights == job.weights:
                previous[rel] = r
    if problems:
        log.warning("batch: %d line(s) of %s skipped (first: %s)", len(problems), MANIFEST_NAME, problems[0])
    done = {  # the file holding the features (its own, or the shard) is there
        rel for rel, r in previous.items() if (r.output in existing if existing is not None else out.is_file(r.output))
    } if previous else set()
    pairs = [(path, rel) for path, rel in zip(job.inputs.paths, job.outputs) if rel in done]
    keys = {path: input_key(path) for path, _ in pairs}
    wanted = [path for path, rel in pairs if previous[rel].key == keys[path]]  # a record of this input
    fingerprints = _fingerprints(wanted, job.plan.storage_options) if wanted else {}
    todo: list[Item] = []
    early: list[ManifestRecord] = []
    stale = 0
    for i, (path, rel) in enumerate(zip(job.inputs.paths, job.outputs)):
        if job.stack is None:  # no input could even be probed: nothing to build a stack for
            error = job.probe_errors.get(path) or f"{path}: not probed"
            early.append(ManifestRecord(input=path, status="failed", error=error, key=input_key(path)))
            continue
        exists = not overwrite and (rel in existing if existing is not None else (rel in done or out.is_file(rel)))
        prev, fingerprint = previous.get(rel), fingerprints.get(path)
        if rel in done and _trusted(prev, keys[path], fingerprint, job.weights):
            assert prev is not None
            early.append(dataclasses.replace(prev, input=path, status="skipped", error=None, seconds=0.0))
            continue
        clash = name_clash(prev, path, keys[path], out.url(rel)) if rel in done else None
        if clash is not None:  # another input's features under this name: kept, this input refused
            early.append(ManifestRecord(input=path, status="failed", error=clash, key=keys[path]))
            continue
        stale += exists
        todo.append(Item(i, path, rel, key=keys.get(path) or input_key(path), fingerprint=fingerprint))
    if stale:
        log.info(
            "batch: %d existing output(s) recomputed: no record ties them to their input as it is now "
            "and to these weights (a changed file, other weights or an interrupted run)", stale,
        )
    return early, todo


def _run_manifest(job: Job, manifest: ManifestSink) -> None:
    early, todo = _early_records(job, manifest)
    manifest.add(early)
    for rec in early:
        count_record(job.summary, rec)
    if early:
        log.info("batch: %d input(s) already done (skipped), %d to process", job.summary.skipped, len(todo))
    if not todo or job.stack is None or job.channels is None:
        return
    plan = job.plan
    with frozen_heap():  # what is alive now (modules, the stack) is never garbage: collections skip it
        if job.runner is not None:
            work = Work(plan, None, job.channels, job.out, job.device, job.config, job.weights)
            job.runner.run(work, todo, manifest, job.summary, plan.batch)
            return
        work = Work(plan, job.stack, job.channels, job.out, job.device, job.config, job.weights)
        threads_before = torch.get_num_threads()
        torch.set_num_threads(compute_threads(plan.config.runtime.num_workers, job.device))
        try:
            LocalEngine(work, manifest, job.decode, job.summary).run(todo)
        finally:
            torch.set_num_threads(threads_before)
