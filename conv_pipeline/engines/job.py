"""Batch processing of whole collections: many files -> features, resumable and failure-isolated.

Plain Python; Hydra stays in ``scripts/batch_process.py``. The job (``run_batch``):

1. checks the config (exit 2 before any audio is read), finds the inputs (a folder searched
   recursively, a glob, a text file with one path per line, or one audio file) and plans one
   output per input, mirroring the input tree under ``output.dir`` (``plan_outputs``);
2. fixes the stack's input channels once for the whole job (``model.in_channels``, the
   checkpoint, or with ``auto`` the first input's count after ``audio.channels``), builds the
   stack and writes ``model.safetensors`` and ``config.yaml`` to ``output.dir`` (refusing a
   different model or different audio settings unless ``overwrite=true``);
3. removes temporary files left by a killed run, records every input whose output already
   exists as ``skipped`` (outputs are written atomically, so existing means complete);
4. decodes and resamples the rest in ``runtime.num_workers`` threads (or worker processes with
   ``batch.workers=process``) while the main thread runs the stack on ``runtime.batch_size``
   files at a time (padded batch of files of similar length, each output trimmed to its own
   length, ``extract_batch``), and one writer thread writes each file's features atomically,
   then appends its manifest record.

Every input gets one record in ``output.dir/manifest.jsonl``. A file that cannot be used
(unreadable, corrupt, empty, too short, wrong channel count, NaN/Inf samples, a crashing
decoder) gets a ``failed`` record with a one-line message and the job goes on.

Step 4 is the engine (``engine.name``): ``local`` runs it in this process as above (``LocalEngine``);
``ray`` runs it as a Ray Data pipeline (``conv_pipeline.ray_engine``). Both share everything else
here: steps 1-3, what happens to a decoded batch or a long file (``Work``: the stack, the
atomic write, the record), the manifest and the summary. ``input`` and ``output.dir`` may be
local paths or fsspec URLs (``s3://...``); ``conv_pipeline.storage`` reads and writes them.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional, Sequence

import torch

from conv_pipeline.config.checks import (
    batch_options,
    engine_config,
    policy_channel_count,
    resolve_in_channels,
    storage_config,
    storage_options,
    validate_audio,
    validate_model,
    validate_runtime,
)
from conv_pipeline.config.compose import to_config, written_config
from conv_pipeline.config.schema import AudioConfig, BatchOptions, Config, OutputFormat
from conv_pipeline.engines.local import LocalEngine, compute_threads
from conv_pipeline.engines.progress import BatchSummary, count_record
from conv_pipeline.engines.work import ChannelSource, Item, Work
from conv_pipeline.errors import ConfigError, PipelineError
from conv_pipeline.execute.whole import resolve_device
from conv_pipeline.load.audio import Audio, load_audio
from conv_pipeline.load.remote import probe
from conv_pipeline.sink.manifest import ManifestRecord
from conv_pipeline.sink.manifest_sink import ManifestSink
from conv_pipeline.sink.outputs import (
    CONFIG_NAME,
    DEFAULT_OUTPUT_DIR,
    TEMP_RE,
    WEIGHTS_NAME,
    OutputDir,
    OutputLock,
    check_same_audio,
    prepare_output_dir,
)
from conv_pipeline.source.inputs import InputSet, find_inputs, plan_outputs
from conv_pipeline.stack.checkpoint import checkpoint_in_channels
from conv_pipeline.stack.stack import ConvStack, build_stack

log = logging.getLogger("conv_pipeline.batch")


def _job_channels(
    cfg: Config, paths: Sequence[str], ckpt: Optional[int], options: Optional[dict] = None
) -> tuple[Optional[ChannelSource], dict[str, str]]:
    """The stack's input channels for the whole job, and the probe errors met on the way."""
    errors: dict[str, str] = {}
    policy = cfg.audio.channels
    if ckpt is not None:
        count, source = ckpt, f"model.checkpoint={cfg.model.checkpoint}"
    elif cfg.model.in_channels != "auto":
        count, source = int(cfg.model.in_channels), f"model.in_channels={cfg.model.in_channels}"
    elif policy != "keep":
        count, source = policy_channel_count(policy, 0), f"audio.channels={policy}"
    else:
        count = None
        for p in paths:
            try:
                count, source = probe(p, options).channels, f"the first input, {p}"
                break
            except PipelineError as err:
                errors[p] = str(err)
        if count is None:
            return None, errors
    if policy != "keep":  # a fixed count after the policy: a mismatch is a config error
        resolve_in_channels(cfg.model, policy_channel_count(policy, 0), ckpt)
    else:
        resolve_in_channels(cfg.model, count, ckpt)  # groups must divide it
    return ChannelSource(int(count), source), errors


def run_batch(
    cfg: Any,
    output_dir: Optional[str] = None,
    decode: Callable[[str, AudioConfig], Audio] = load_audio,
) -> BatchSummary:
    """Process every input of ``cfg.input`` (see ``find_inputs``) into ``output.dir``.

    ``cfg``: a ``BatchConfig``/``Config`` or a composed Hydra config. ``output_dir`` is used
    when ``cfg.output.dir`` is null (a multirun job's folder), else ``feats``. ``decode``:
    ``path, AudioConfig -> Audio`` (``load_audio``; a module-level function with
    ``batch.workers=process``; local engine only; worker processes import the main module, so a
    script calling ``run_batch`` with processes needs the ``if __name__ == "__main__":`` guard,
    as ``scripts/batch_process.py`` has). Raises ``PipelineError`` (exit 2) for config
    and setup problems, before any audio is decoded; per-file problems become ``failed`` records.
    ``engine.name=ray`` runs step 4 on Ray (``conv_pipeline.ray_engine``); its resource settings
    are checked against the cluster before anything is written.
    """
    t_start = time.perf_counter()
    cfg = to_config(cfg)
    opts = batch_options(cfg)
    if not cfg.input:
        raise ConfigError("no input given: add input=corpus/ (a folder, a glob like 'corpus/**/*.wav' or a list file)")
    validate_model(cfg.model)
    validate_audio(cfg.audio)
    validate_runtime(cfg, opts)
    options = storage_options(cfg)
    out = OutputDir(cfg.output.dir or output_dir or DEFAULT_OUTPUT_DIR, options)
    runner = None
    if engine_config(cfg).name == "ray":
        from conv_pipeline.engines.ray_engine import RayRunner

        runner = RayRunner(cfg, engine_config(cfg), out)  # static checks (Ray installed, keys, URLs)
        device = torch.device("cpu")  # the driver only writes the weights; each actor picks its device
    else:
        device = resolve_device(cfg.runtime.device)
    fmt = cfg.output.format.value if isinstance(cfg.output.format, OutputFormat) else str(cfg.output.format)
    ckpt = checkpoint_in_channels(cfg.model.checkpoint, cfg.model) if cfg.model.checkpoint else None

    inputs = find_inputs(cfg.input, opts.extensions, options)
    outputs = plan_outputs(inputs.rels, fmt)
    channels, probe_errors = _job_channels(cfg, inputs.paths, ckpt, options)
    try:
        if runner is not None:
            runner.start()  # connects; impossible resource settings fail here, nothing written
        out.create()
        lock = OutputLock(out.path) if out.path is not None else None  # no lock on remote storage
        try:
            return _run_locked(cfg, opts, inputs, outputs, channels, probe_errors, out, device, decode, t_start, runner)
        finally:
            if lock is not None:
                lock.release()
    finally:
        if runner is not None:
            runner.close()


def _run_locked(
    cfg: Config,
    opts: BatchOptions,
    inputs: InputSet,
    outputs: list[str],
    channels: Optional[ChannelSource],
    probe_errors: dict[str, str],
    out: OutputDir,
    device: torch.device,
    decode: Callable,
    t_start: float,
    runner: Any = None,
) -> BatchSummary:
    summary = BatchSummary(output_dir=out.path if out.path is not None else out.spec, total=len(inputs.paths))
    config = written_config(cfg)
    stack: Optional[ConvStack] = None
    if channels is not None:
        config["model"]["in_channels"] = channels.count
        summary.in_channels = channels.count
        stack = build_stack(cfg.model, channels.count, seed=cfg.seed).to(device).eval()
        with out.metadata([WEIGHTS_NAME, CONFIG_NAME]) as meta:  # remote: a staged copy, committed after
            check_same_audio(meta, config, cfg.overwrite)
            prepare_output_dir(meta, stack, cfg.overwrite, config)
    # logged once every setup check has passed, so a refused job prints its error line only
    log.info("batch: %d input(s) (%s, root %s) -> %s", len(inputs.paths), inputs.kind, inputs.root, out.display)
    if channels is not None:
        log.info("batch: stack takes %d channel(s) (fixed by %s)", channels.count, channels.source)

    removed = out.clean_temp_files(TEMP_RE)
    if removed:
        log.info("batch: removed %d temporary file(s) left by an interrupted run", removed)
    manifest = ManifestSink(out, storage_config(cfg).manifest_flush_s)  # local: ends a torn last line
    try:
        _run_manifest(cfg, opts, inputs, outputs, channels, probe_errors, out, manifest, stack, config, device, decode, summary, runner)
    finally:
        manifest.close()
    summary.wall_seconds = time.perf_counter() - t_start
    return summary


def _run_manifest(
    cfg: Config,
    opts: BatchOptions,
    inputs: InputSet,
    outputs: list[str],
    channels: Optional[ChannelSource],
    probe_errors: dict[str, str],
    out: OutputDir,
    manifest: ManifestSink,
    stack: Optional[ConvStack],
    config: dict[str, Any],
    device: torch.device,
    decode: Callable,
    summary: BatchSummary,
    runner: Any,
) -> None:
    # Resume: an output under its final name is complete (atomic writes); skip it.
    previous = {r.output: r for r in manifest.read().values() if r.status in ("ok", "skipped") and r.output}
    existing = out.files() if out.remote else None  # one listing instead of a request per file
    todo: list[Item] = []
    early: list[ManifestRecord] = []
    for i, (path, rel) in enumerate(zip(inputs.paths, outputs)):
        if stack is None:  # no input could even be probed: nothing to build a stack for
            early.append(ManifestRecord(input=path, status="failed", error=probe_errors.get(path) or f"{path}: not probed"))
        elif not cfg.overwrite and (rel in existing if existing is not None else out.local(rel).is_file()):
            prev = previous.get(rel)
            early.append(
                ManifestRecord(
                    input=path, status="skipped", output=rel,
                    sample_rate=prev.sample_rate if prev else None,
                    num_samples=prev.num_samples if prev else None,
                    duration_s=prev.duration_s if prev else None,
                    shape=prev.shape if prev else None,
                    seconds=0.0,
                )
            )
        else:
            todo.append(Item(i, path, rel))
    manifest.add(early)
    for rec in early:
        count_record(summary, rec)
    if early:
        log.info("batch: %d input(s) already done (skipped), %d to process", summary.skipped, len(todo))

    if todo and stack is not None and channels is not None:
        if runner is not None:
            runner.run(Work(cfg, None, channels, out, device, config), todo, manifest, summary, opts)
            return
        threads_before = torch.get_num_threads()
        torch.set_num_threads(compute_threads(cfg.runtime.num_workers, device))
        try:
            LocalEngine(cfg, opts, stack, channels, out, manifest, device, config, decode, summary).run(todo)
        finally:
            torch.set_num_threads(threads_before)
