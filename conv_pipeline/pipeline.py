"""One file through the pipeline: load -> conv stack -> write. Plain Python; Hydra stays in
``__main__.py`` (``run`` takes an already composed config).

``runtime.chunk_seconds=null`` decodes the file whole and runs the stack once (``extract``);
a number runs the chunked executor (``streaming.extract_stream``): the file is read block by
block and the features are written as they come, in memory bounded whatever the file's length,
with the same frames.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .audio import Audio, load_audio
from .config import (
    Config,
    Device,
    ModelConfig,
    OutputFormat,
    policy_channel_count,
    resolve_in_channels,
    validate_audio,
    validate_model,
)
from .errors import ConfigError, InputError, OutputError
from .geometry import StackGeometry
from .model import ConvStack, build_stack, checkpoint_in_channels, same_weights, save_weights
from .manifest import ManifestRecord, append_record
from .streaming import extract_stream, file_writer, open_audio_stream, validate_chunk_seconds
from .writer import feature_path, overflow_error, write_features, write_text

log = logging.getLogger("conv_pipeline")

__all__ = ["Result", "run", "extract", "compose_config", "to_config", "resolve_device", "summary_table"]

DEFAULT_OUTPUT_DIR = "feats"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.yaml"


@dataclass
class Result:
    """What one run wrote."""

    output: Path
    shape: tuple[int, int]
    weights: Path
    sample_rate: int
    stack: ConvStack


def to_config(cfg: Any) -> Config:
    """A typed ``Config`` from a Hydra/OmegaConf config (or a ``Config``, returned as is)."""
    if isinstance(cfg, Config):
        return cfg
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, Config):  # composed without the schema
        obj = Config(**{k: v for k, v in obj.items() if k in {f.name for f in dataclasses.fields(Config)}})
    return obj


def compose_config(overrides: Sequence[str] = (), config_name: str = "config") -> Config:
    """Compose the packaged configs with Hydra-style overrides, outside any Hydra app."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from .config import register_configs

    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conv_pipeline.configs", version_base=None):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    cfg_dict = {k: v for k, v in cfg.items() if k != "hydra"}
    from omegaconf import OmegaConf

    from .config import BatchConfig

    schema = BatchConfig if "batch" in cfg_dict else Config  # config_name="batch": the batch job's keys
    return to_config(OmegaConf.merge(OmegaConf.structured(schema), cfg_dict))


def resolve_device(device: Device | str) -> torch.device:
    name = device.value if isinstance(device, Device) else str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device=cuda but no CUDA device is available; use runtime.device=cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"runtime.device must be one of cpu, cuda, auto, got {name!r}")
    return torch.device(name)


def plain_config(cfg: Config) -> dict[str, Any]:
    """The config as JSON-able plain data (enums as their values)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if hasattr(v, "value") and not isinstance(v, (int, float, str)):
            return v.value
        return v

    return conv(cfg)


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


def extract(audio: Audio, stack: ConvStack, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Features ``(out_channels, frames)`` for one decoded file (float32, on the CPU).

    ``InputError`` when the file is too short for the stack, or when the features overflow
    (samples far outside [-1, 1] can make them Inf or NaN: such features are never returned)."""
    geometry = stack.geometry
    expected = geometry.check_input_length(audio.frames, what=audio.info.path)
    with torch.inference_mode():
        x = audio.waveform.to(device)[None]  # (C, T) -> (1, C, T)
        y = stack(x)[0].float().cpu()  # (1, C_out, F) -> (C_out, F)
    if y.shape[-1] != expected:  # the geometry module is the contract; never write a wrong shape
        raise RuntimeError(f"internal error: stack gave {y.shape[-1]} frames, geometry predicts {expected}")
    finite = torch.isfinite(y)
    if not bool(finite.all()):
        raise overflow_error(audio.info.path, int(y.numel() - finite.sum()), float(audio.waveform.abs().max()))
    return y


def summary_table(stack: ConvStack, frames: Optional[int], sample_rate: Optional[int]) -> str:
    """Per layer: kernel, stride, padding, dilation, channels, output frames, receptive field and hop."""
    geometry = stack.geometry
    chans = [(l.conv.in_channels, l.conv.out_channels) for l in stack.layers]
    rows = geometry.summary_rows(frames, chans)

    def ms(samples: int) -> str:
        return f"{1000 * samples / sample_rate:.2f}" if sample_rate else "-"

    header = ["layer", "kernel", "stride", "pad", "dil", "channels", "frames", "RF", "RF ms", "hop", "hop ms"]
    body = [
        [
            str(r["layer"]),
            str(r["kernel"]),
            str(r["stride"]),
            str(r["padding"]),
            str(r["dilation"]),
            f"{r['in_channels']}->{r['out_channels']}",
            "-" if r["frames"] is None else str(r["frames"]),
            str(r["receptive_field"]),
            ms(r["receptive_field"]),
            str(r["hop"]),
            ms(r["hop"]),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in [header, *body]]
    return "\n".join(lines)


def _make_output_dir(out_dir: Path) -> bool:
    """Create ``out_dir`` (and its parents); True when it did not exist."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output.dir={str(out_dir)!r} is an existing file, not a folder; choose another output.dir")
    existed = out_dir.is_dir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output.dir={str(out_dir)!r}: {err.strerror or err}") from None
    return not existed


def _check_weights(weights: Path, stack: ConvStack, overwrite: bool) -> None:
    """Refuse to mix models in one folder unless ``overwrite``."""
    if weights.exists() and not overwrite and not same_weights(stack, weights):
        raise OutputError(
            f"{weights} holds a different model's weights; its features would no longer match them. "
            "Use another output.dir or overwrite=true"
        )


def prepare_output_dir(out_dir: Path, stack: ConvStack, overwrite: bool, config: Optional[dict] = None) -> Path:
    """Create ``out_dir``; write the weights and the resolved config there (refusing to mix
    models unless ``overwrite``). Returns the weights' path."""
    _make_output_dir(out_dir)
    weights = out_dir / WEIGHTS_NAME
    _check_weights(weights, stack, overwrite)
    if not weights.exists() or not same_weights(stack, weights):
        save_weights(stack, weights)
    if config is not None:
        from omegaconf import OmegaConf

        write_text(out_dir / CONFIG_NAME, OmegaConf.to_yaml(OmegaConf.create(config)))
    return weights


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
        _check_weights(out_dir / WEIGHTS_NAME, stack, cfg.overwrite)  # before the long part
        created = _make_output_dir(out_dir)  # the features' temporary file lives there
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
