"""One file through the pipeline: plan -> load -> stack -> execute -> sink.

``run(cfg)`` builds the plan (every config problem is a one-line ``ConfigError`` before any
audio is read), then either decodes the whole file and runs the stack once
(``runtime.chunk_seconds=null``) or streams it block by block through the chunked executor,
writing the features as they come (bounded memory, the same frames), with a progress bar of the
file's audio seconds when stderr is a terminal (``engines/progress.py: FileProgress``). The weights and the
resolved config are written beside the features, and a record appended to the manifest, tied to
the input (its canonical key and a fingerprint taken before it is read) and to the weights (their
digest, also in a ``.npz``'s metadata), as the batch job's records are (``engines/work.py``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from conv_pipeline.config.compose import plain_config
from conv_pipeline.config.plan import Plan, build_plan
from conv_pipeline.engines.memory import frozen_heap
from conv_pipeline.engines.progress import CountedBlocks, FileProgress, stack_passes
from conv_pipeline.engines.work import (
    WEIGHTS_KEY,
    input_fingerprint,
    input_key,
    weights_digest,
)
from conv_pipeline.errors import OutputError
from conv_pipeline.execute.stream_file import extract_stream, file_writer
from conv_pipeline.execute.whole import extract, resolve_device
from conv_pipeline.fs import PRINTABLE_LOG, staging
from conv_pipeline.inspect.summary import model_summary
from conv_pipeline.inspect.text import audio_text
from conv_pipeline.load.audio import load_audio
from conv_pipeline.load.stream import open_audio_stream
from conv_pipeline.sink.jobdir import (
    check_output_dir,
    make_output_dir,
    prepare_output_dir,
)
from conv_pipeline.sink.formats import Entry, FormatOptions, Location, open_writer
from conv_pipeline.sink.manifest import ManifestRecord, append_record, check_output_name
from conv_pipeline.sink.outputs import OutputDir
from conv_pipeline.sink.writer import feature_path, write_features
from conv_pipeline.stack.spectral import fix_weights
from conv_pipeline.stack.stack import ConvStack, build_stack

log = logging.getLogger("conv_pipeline")
log.addFilter(PRINTABLE_LOG)  # names are shown with control characters escaped


@dataclass
class Result:
    """What one run wrote."""

    output: Path
    shape: tuple[int, int]
    weights: Path
    sample_rate: int
    stack: ConvStack


def _features_config(config: dict, stack: ConvStack) -> dict:
    """What a feature file's metadata carries: the resolved config and the weights' digest."""
    return {**config, WEIGHTS_KEY: weights_digest(stack)}


def _log_run(plan: Plan, path: str, info: Any, in_channels: int, frames: int, sample_rate: int, stack: ConvStack) -> None:
    # Logged once the features are written, so an error is the only line a failed run prints.
    # The file's rate, channels and samples, then what the stack took (samples: frames are the features').
    log.info("%s: %s", path, audio_text(info.sample_rate, info.channels, info.frames, sample_rate, in_channels, frames))
    log.info("%s", model_summary(plan.model, in_channels, sample_rate, frames / sample_rate))


def _written_config(plan: Plan, in_channels: int) -> dict:
    config = plain_config(plan.config)
    config["model"]["in_channels"] = in_channels
    return config


def _run_whole(plan: Plan, out_dir: Path, out_path: Path, device: Any) -> tuple:
    """The whole file at once: decode, stack, write. ``(weights, sample_rate, samples, shape, stack, info)``
    (``info``: the input's header, with the frames decoded)."""
    cfg = plan.config
    audio = load_audio(cfg.input, cfg.audio)
    in_channels = plan.channels.stack_channels(audio.info.channels, audio.info.path)
    stack = fix_weights(build_stack(cfg.model, in_channels, seed=cfg.seed).to(device).eval())
    features = extract(audio, stack, device)  # (C_out, F)
    config = _written_config(plan, in_channels)
    weights = prepare_output_dir(out_dir, stack, cfg.overwrite, config)
    write_features(out_path, features.numpy(), stack.geometry, audio.sample_rate, _features_config(config, stack))
    _log_run(plan, audio.info.path, audio.info, in_channels, audio.frames, audio.sample_rate, stack)  # written: now say so
    return weights, audio.sample_rate, audio.frames, tuple(features.shape), stack, audio.info


def _run_chunked(plan: Plan, out_dir: Path, out_path: Path, device: Any) -> tuple:
    """Block by block, the features written as they come (bounded memory); returns what ``_run_whole`` does."""
    cfg = plan.config
    stream = open_audio_stream(cfg.input, cfg.audio, plan.chunk_seconds)  # header checks
    in_channels = plan.channels.stack_channels(stream.reader.info.channels, stream.path)
    stack = fix_weights(build_stack(cfg.model, in_channels, seed=cfg.seed).to(device).eval())
    config = _written_config(plan, in_channels)
    check_output_dir(out_dir, stack, cfg.overwrite, config)  # before the long part: weights, audio settings
    created = make_output_dir(out_dir)  # the features' temporary file lives there
    done: dict[str, Path] = {}

    def commit() -> None:  # the features are complete under their temporary name
        done["weights"] = prepare_output_dir(out_dir, stack, cfg.overwrite, config)

    # a bar of the file's audio seconds on a terminal (stderr), for a run over FILE_BAR_DELAY_S
    bar = FileProgress(stream.path, stream.frames, stream.sample_rate, stack_passes(stack))
    try:
        writer = file_writer(out_path, stack.geometry, _features_config(config, stack), commit)
        result = extract_stream(CountedBlocks(stream, bar.add), stack, device, writer)  # type: ignore[arg-type]
    except BaseException:
        bar.close()
        if created:
            try:
                out_dir.rmdir()  # only when empty: leave nothing behind for a file that failed
            except OSError:
                pass
        raise
    bar.close()
    _log_run(plan, stream.path, stream.reader.info, in_channels, stream.frames_read, stream.sample_rate, stack)  # written: now say so
    return done["weights"], result.sample_rate, result.num_samples, result.shape, stack, stream.reader.info


def _store(plan: Plan, formats: FormatOptions, out_dir: Path, staged: Path, key: str, name: str, stack: ConvStack,
           sample_rate: int, num_samples: int, info: Any) -> Location:
    """The staged float32 ``.npy`` through the ``output.format`` writer (``sink/formats/``): where it went.
    ``info``: the input's header as the run read it (its rate and frames are recorded)."""
    config = _features_config(_written_config(plan, stack.in_channels), stack)
    writer = open_writer(OutputDir(out_dir), formats, stack.geometry, config, stack.in_channels)
    entry = Entry(str(plan.input), key, name, np.load(staged, mmap_mode="r"), sample_rate, num_samples,
                  info.sample_rate, info.frames)
    done = writer.write(entry) + writer.flush()
    return done[0][1]


def run(cfg: Any, output_dir: Optional[str] = None) -> Result:
    """Process ``cfg.input`` (one file) and write its features. Returns what was written.

    ``cfg``: a ``Plan`` (``config/plan.py``), a ``Config`` or a composed Hydra config (a plan is
    built from it first: every config problem is a ``ConfigError`` before any audio is read).
    ``output_dir`` is used when ``cfg.output.dir`` is null (the CLI passes the multirun job's folder).
    """
    t0 = time.perf_counter()
    plan = cfg if isinstance(cfg, Plan) else build_plan(cfg, "file", output_dir)
    device = resolve_device(plan.device)
    out_dir = Path(plan.output_dir)
    if out_dir.exists() and not out_dir.is_dir():  # before any audio is read (make_output_dir says it again)
        raise OutputError(f"output.dir={str(out_dir)!r} is an existing file, not a folder; choose another output.dir")
    out_path = feature_path(out_dir, Path(plan.input).stem, plan.output_format)
    key = input_key(str(plan.input))
    formats = FormatOptions.from_config(plan.config.output)
    if formats.plain:
        check_output_name(out_dir, out_path.name, str(plan.input), key, plan.config.overwrite)  # another input's: kept
    execute = _run_whole if plan.chunk_seconds is None else _run_chunked
    fingerprint = input_fingerprint(str(plan.input))  # before it is read: a later change is never trusted
    place = Location(out_path.name)
    with staging() as folder:  # output.format/dtype/layout other than plain npy/npz: staged, then the writer
        target = out_path if formats.plain else Path(folder) / "features.npy"
        with frozen_heap():  # what is alive now (modules) is never garbage: collections skip it
            weights, sample_rate, num_samples, shape, stack, info = execute(plan, out_dir, target, device)
        if not formats.plain:
            place = _store(plan, formats, out_dir, target, key, out_path.name, stack, sample_rate, num_samples, info)
            out_path = out_dir / place.output
    append_record(
        out_dir,
        ManifestRecord(
            input=str(plan.input),
            key=key,
            fingerprint=fingerprint,
            weights=weights_digest(stack),
            status="ok",
            output=place.output,
            item=place.item,
            offset=place.offset,
            sample_rate=sample_rate,
            num_samples=num_samples,
            duration_s=num_samples / sample_rate,
            shape=list(shape),
            seconds=round(time.perf_counter() - t0, 4),
        ),
    )
    return Result(out_path, shape, weights, sample_rate, stack)
