"""One file through the pipeline: load -> conv stack -> write. Plain Python; Hydra stays in
``__main__.py`` (``run`` takes an already composed config).

``runtime.chunk_seconds=null`` decodes the file whole and runs the stack once (``extract``);
a number runs the chunked executor (``streaming.extract_stream``): the file is read block by
block and the features are written as they come, in memory bounded whatever the file's length,
with the same frames.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from conv_pipeline.config.checks import (
    resolve_in_channels,
    validate_audio,
    validate_chunk_seconds,
    validate_model,
)
from conv_pipeline.config.compose import plain_config, to_config
from conv_pipeline.config.schema import ModelConfig, OutputFormat
from conv_pipeline.errors import ConfigError, InputError, OutputError
from conv_pipeline.execute.chunked import extract_stream, file_writer
from conv_pipeline.execute.whole import extract, resolve_device
from conv_pipeline.inspect.summary import summary_table
from conv_pipeline.load.audio import load_audio
from conv_pipeline.load.stream import open_audio_stream
from conv_pipeline.sink.manifest import ManifestRecord, append_record
from conv_pipeline.sink.outputs import (
    DEFAULT_OUTPUT_DIR,
    WEIGHTS_NAME,
    check_weights,
    make_output_dir,
    prepare_output_dir,
)
from conv_pipeline.sink.writer import feature_path, write_features
from conv_pipeline.stack.checkpoint import checkpoint_in_channels
from conv_pipeline.stack.stack import ConvStack, build_stack

log = logging.getLogger("conv_pipeline")


@dataclass
class Result:
    """What one run wrote."""

    output: Path
    shape: tuple[int, int]
    weights: Path
    sample_rate: int
    stack: ConvStack


def stack_in_channels(model: ModelConfig, audio_channels: int, path: Optional[str] = None) -> int:
    """The stack's input channels for audio with ``audio_channels`` (after the channel policy);
    a mismatch names the file ``path``."""
    ckpt = checkpoint_in_channels(model.checkpoint, model) if model.checkpoint else None
    try:
        return resolve_in_channels(model, audio_channels, ckpt)
    except InputError as err:
        if path is None:
            raise
        raise InputError(f"{path}: {err}") from None


def run(cfg: Any, output_dir: Optional[str] = None) -> Result:
    """Process ``cfg.input`` (one file) and write its features. Returns what was written.

    ``output_dir`` is used when ``cfg.output.dir`` is null (the CLI passes the multirun job's folder).
    """
    t0 = time.perf_counter()
    cfg = to_config(cfg)
    if not cfg.input:
        raise ConfigError("no input given: add input=path/to/audio.wav")
    # Config problems surface before any audio is read.
    validate_model(cfg.model)
    validate_audio(cfg.audio)
    device = resolve_device(cfg.runtime.device)
    fmt = cfg.output.format.value if isinstance(cfg.output.format, OutputFormat) else str(cfg.output.format)
    out_dir = Path(cfg.output.dir or output_dir or DEFAULT_OUTPUT_DIR)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output.dir={str(out_dir)!r} is an existing file, not a folder; choose another output.dir")
    if cfg.model.checkpoint:
        checkpoint_in_channels(cfg.model.checkpoint, cfg.model)  # readable, safe, right kind

    chunk_seconds = cfg.runtime.chunk_seconds
    if chunk_seconds is not None:
        chunk_seconds = validate_chunk_seconds(chunk_seconds)
    out_stem = Path(cfg.input).stem

    def log_run(path: str, in_channels: int, frames: int, sample_rate: int, stack: ConvStack) -> None:
        # Logged once the features are written, so an error is the only line a failed run prints.
        log.info(
            "%s: %d channel(s), %d frames at %d Hz (%.2f s)",
            path, in_channels, frames, sample_rate, frames / sample_rate,
        )
        log.info("model %s\n%s", cfg.model.name, summary_table(stack, frames, sample_rate))

    if chunk_seconds is None:  # the whole file at once
        audio = load_audio(cfg.input, cfg.audio)
        in_channels = stack_in_channels(cfg.model, audio.waveform.shape[0], audio.info.path)
        stack = build_stack(cfg.model, in_channels, seed=cfg.seed).to(device).eval()
        features = extract(audio, stack, device)  # (C_out, F)

        config = plain_config(cfg)
        config["model"]["in_channels"] = in_channels
        weights = prepare_output_dir(out_dir, stack, cfg.overwrite, config)
        out_path = feature_path(out_dir, out_stem, fmt)
        write_features(out_path, features.numpy(), stack.geometry, audio.sample_rate, config)
        log_run(audio.info.path, in_channels, audio.frames, audio.sample_rate, stack)  # written: now say so
        sample_rate, num_samples, shape = audio.sample_rate, audio.frames, tuple(features.shape)
    else:  # block by block, the features written as they come (bounded memory)
        stream = open_audio_stream(cfg.input, cfg.audio, chunk_seconds)  # header checks
        in_channels = stack_in_channels(cfg.model, stream.channels, stream.path)
        stack = build_stack(cfg.model, in_channels, seed=cfg.seed).to(device).eval()
        config = plain_config(cfg)
        config["model"]["in_channels"] = in_channels
        check_weights(out_dir / WEIGHTS_NAME, stack, cfg.overwrite)  # before the long part
        created = make_output_dir(out_dir)  # the features' temporary file lives there
        done: dict[str, Path] = {}

        def commit() -> None:  # the features are complete under their temporary name
            done["weights"] = prepare_output_dir(out_dir, stack, cfg.overwrite, config)

        out_path = feature_path(out_dir, out_stem, fmt)
        try:
            result = extract_stream(stream, stack, device, file_writer(out_path, stack.geometry, config, commit))
        except BaseException:
            if created:
                try:
                    out_dir.rmdir()  # only when empty: leave nothing behind for a file that failed
                except OSError:
                    pass
            raise
        weights = done["weights"]
        log_run(stream.path, in_channels, stream.frames_read, stream.sample_rate, stack)  # written: now say so
        sample_rate, num_samples, shape = result.sample_rate, result.num_samples, result.shape

    append_record(
        out_dir,
        ManifestRecord(
            input=str(cfg.input),
            status="ok",
            output=out_path.name,
            sample_rate=sample_rate,
            num_samples=num_samples,
            duration_s=num_samples / sample_rate,
            shape=list(shape),
            seconds=round(time.perf_counter() - t0, 4),
        ),
    )
    return Result(out_path, shape, weights, sample_rate, stack)
