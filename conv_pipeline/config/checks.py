"""Typed configuration: dataclasses that are both Hydra's structured-config schema and the
plain Python API's arguments.

Hydra validates every override against these schemas (an unknown key or a wrong type fails
with Hydra's own message); ``validate_*`` below check what a type cannot express (ranges,
registries, divisibility) and raise ``ConfigError`` naming the key, the allowed values and
what was received, before any audio is read.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

from conv_pipeline.config.schema import (
    ACTIVATIONS,
    FRONTENDS,
    NORMS,
    WINDOWS,
    AudioConfig,
    BatchOptions,
    Config,
    EngineConfig,
    FrontendConfig,
    LayerConfig,
    ModelConfig,
    StorageConfig,
)
from conv_pipeline.errors import ConfigError
from conv_pipeline.geometry import StackGeometry


# ---------------------------------------------------------------- validation
def _fail(key: str, allowed: str, got: object) -> ConfigError:
    return ConfigError(f"{key} must be {allowed}, got {got!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def frontend_specs(fe: FrontendConfig) -> list[LayerConfig]:
    """The front-end's conv layers as plain layer specs (their kernels are set in frontends.py)."""
    n_freq = fe.n_fft // 2 + 1
    if fe.type == "stft":
        return [LayerConfig(out_channels=2 * n_freq, kernel_size=fe.n_fft, stride=fe.hop_length, bias=False)]
    if fe.type == "mel":
        return [
            LayerConfig(out_channels=2 * n_freq, kernel_size=fe.n_fft, stride=fe.hop_length, bias=False),
            LayerConfig(out_channels=fe.n_mels, kernel_size=1, bias=False),
        ]
    pool = fe.win_length or fe.n_fft
    return [
        LayerConfig(out_channels=fe.n_filters, kernel_size=fe.kernel_size, padding=fe.kernel_size // 2, bias=False),
        LayerConfig(out_channels=fe.n_filters, kernel_size=pool, stride=fe.hop_length, groups=fe.n_filters, bias=False),
    ]


def frontend_out_channels(fe: FrontendConfig) -> int:
    return {"stft": fe.n_fft // 2 + 1, "mel": fe.n_mels, "sinc": fe.n_filters}[fe.type]


def validate_frontend(fe: FrontendConfig) -> None:
    key = "model.frontend"
    if fe.type not in FRONTENDS:
        raise _fail(f"{key}.type", f"one of {', '.join(FRONTENDS)}", fe.type)
    if fe.window not in WINDOWS:
        raise _fail(f"{key}.window", f"one of {', '.join(WINDOWS)}", fe.window)
    for name in ("n_fft", "hop_length", "n_mels", "n_filters", "kernel_size"):
        value = getattr(fe, name)
        if not _is_int(value) or value < 1:
            raise _fail(f"{key}.{name}", "an integer >= 1", value)
    if fe.win_length is not None and (not _is_int(fe.win_length) or not 1 <= fe.win_length <= fe.n_fft):
        raise _fail(f"{key}.win_length", f"null or an integer in 1..n_fft ({fe.n_fft})", fe.win_length)
    if fe.power is not None and fe.power <= 0:
        raise _fail(f"{key}.power", "null or > 0", fe.power)
    if fe.type == "sinc" and fe.kernel_size % 2 == 0:
        raise _fail(f"{key}.kernel_size", "odd (a symmetric band-pass kernel)", fe.kernel_size)
    if fe.type in ("mel", "sinc"):
        if fe.sample_rate is None:
            raise ConfigError(
                f"model.frontend={fe.type} needs the sample rate: set audio.sample_rate (e.g. 16000)"
            )
        nyquist = fe.sample_rate / 2
        f_max = fe.f_max if fe.f_max is not None else nyquist
        if not 0 <= fe.f_min < f_max <= nyquist:
            raise ConfigError(
                f"{key}: need 0 <= f_min < f_max <= sample_rate/2 ({nyquist:g} Hz), "
                f"got f_min={fe.f_min}, f_max={fe.f_max}"
            )
    if fe.log_offset <= 0:
        raise _fail(f"{key}.log_offset", "> 0", fe.log_offset)


def model_layer_specs(model: ModelConfig) -> list[LayerConfig]:
    """Every conv layer of the stack, front-end first: what the geometry is computed from."""
    return (frontend_specs(model.frontend) if model.frontend is not None else []) + list(model.layers)


def validate_model(model: ModelConfig) -> StackGeometry:
    """Check the front-end, every layer spec and the channel chain; return the stack's geometry.

    The first layer's input channels are checked later, once known (see ``resolve_in_channels``).
    """
    if not model.layers and model.frontend is None:
        raise ConfigError("model.layers is empty: give at least one layer or pick a preset (model=default)")
    if not (model.in_channels == "auto" or (_is_int(model.in_channels) and model.in_channels >= 1)):
        raise _fail("model.in_channels", "'auto' or an integer >= 1", model.in_channels)
    if model.frontend is not None:
        validate_frontend(model.frontend)
        if _is_int(model.in_channels) and model.in_channels != 1:
            raise ConfigError(
                f"model.frontend={model.frontend.type} works on one channel but model.in_channels="
                f"{model.in_channels}; use model.in_channels=1 audio.channels=mono"
            )
    prev_out = frontend_out_channels(model.frontend) if model.frontend is not None else None
    for i, layer in enumerate(model.layers):
        key = f"model.layers[{i}]"
        for name, minimum in (
            ("out_channels", 1),
            ("kernel_size", 1),
            ("stride", 1),
            ("padding", 0),
            ("dilation", 1),
            ("groups", 1),
        ):
            value = getattr(layer, name)
            if not _is_int(value) or value < minimum:
                raise _fail(f"{key}.{name}", f"an integer >= {minimum}", value)
        if layer.activation is not None and layer.activation not in ACTIVATIONS:
            raise _fail(f"{key}.activation", f"null or one of {', '.join(ACTIVATIONS)}", layer.activation)
        if layer.norm is not None and layer.norm not in NORMS:
            raise _fail(f"{key}.norm", f"null or one of {', '.join(NORMS)}", layer.norm)
        if layer.out_channels % layer.groups:
            raise ConfigError(
                f"{key}.groups={layer.groups} must divide out_channels={layer.out_channels}"
            )
        if prev_out is not None:
            _check_groups_divide_input(i, layer, prev_out, "model.frontend" if i == 0 else None)
        prev_out = layer.out_channels
    if _is_int(model.in_channels) and model.frontend is None:
        _check_groups_divide_input(0, model.layers[0], model.in_channels)
    return StackGeometry(model_layer_specs(model))


def _check_groups_divide_input(i: int, layer: LayerConfig, in_channels: int, source: Optional[str] = None) -> None:
    if in_channels % layer.groups:
        source = source or ("model.in_channels" if i == 0 else f"model.layers[{i - 1}].out_channels")
        raise ConfigError(
            f"model.layers[{i}].groups={layer.groups} must divide its input channels "
            f"({source}={in_channels})"
        )


def validate_audio(audio: AudioConfig) -> None:
    """Check ``audio.sample_rate`` and ``audio.channels`` before any file is read."""
    sr = audio.sample_rate
    if sr is not None and (not _is_int(sr) or sr < 1):
        raise _fail("audio.sample_rate", "null or an integer >= 1 (Hz)", sr)
    ch = audio.channels
    if isinstance(ch, str):
        if ch not in ("keep", "mono"):
            raise _fail("audio.channels", "'keep', 'mono' or a list of channel indices like [0,1]", ch)
    elif isinstance(ch, Sequence) and not isinstance(ch, (bytes, str)):
        if not ch or not all(_is_int(c) and c >= 0 for c in ch):
            raise _fail("audio.channels", "a non-empty list of channel indices >= 0", list(ch))
    else:
        raise _fail("audio.channels", "'keep', 'mono' or a list of channel indices like [0,1]", ch)


def policy_channel_count(channels: Union[str, Sequence[int]], file_channels: int) -> int:
    """Channels after the policy for a file with ``file_channels`` channels."""
    if channels == "keep":
        return file_channels
    if channels == "mono":
        return 1
    return len(channels)


def resolve_in_channels(model: ModelConfig, audio_channels: int, checkpoint_channels: Optional[int] = None) -> int:
    """The stack's input channel count, checked against the audio's (after the channel policy).

    Raises ``ConfigError`` or ``InputError`` naming both numbers and the fixes.
    """
    from conv_pipeline.errors import InputError

    if checkpoint_channels is not None:
        if _is_int(model.in_channels) and model.in_channels != checkpoint_channels:
            raise ConfigError(
                f"model.in_channels={model.in_channels} but the checkpoint expects {checkpoint_channels} "
                "input channels; drop the override or use another checkpoint"
            )
        expected, source = checkpoint_channels, "the checkpoint expects"
    elif _is_int(model.in_channels):
        expected, source = model.in_channels, "model.in_channels is"
    else:
        expected = audio_channels
    if audio_channels != expected:
        pick = [i % audio_channels for i in range(expected)]
        fixes = [f"audio.channels=[{','.join(map(str, pick))}]"]
        if expected == 1:
            fixes.insert(0, "audio.channels=mono")
        if checkpoint_channels is None:
            fixes.append(f"model.in_channels={audio_channels}")
        raise InputError(
            f"audio has {audio_channels} channel(s) but {source} {expected}; "
            f"fix with {' or '.join(fixes)}"
        )
    if model.frontend is None:
        _check_groups_divide_input(0, model.layers[0], expected)
    return expected


def batch_options(cfg: Config) -> BatchOptions:
    opts = getattr(cfg, "batch", None)
    if opts is None:
        return BatchOptions()
    if isinstance(opts, dict):
        return BatchOptions(**opts)
    return opts


def engine_config(cfg: Config) -> EngineConfig:
    engine = getattr(cfg, "engine", None)
    if engine is None:
        return EngineConfig()
    return EngineConfig(**engine) if isinstance(engine, dict) else engine


def storage_config(cfg: Config) -> StorageConfig:
    st = getattr(cfg, "storage", None)
    if st is None:
        return StorageConfig()
    return StorageConfig(**st) if isinstance(st, dict) else st


def storage_options(cfg: Config) -> dict[str, Any]:
    """``storage.options`` as a plain dict (``{}`` when null); ``ConfigError`` unless a mapping."""
    from collections.abc import Mapping

    options = storage_config(cfg).options
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"storage.options must be a mapping of fsspec options like '{{anon: true}}', got {options!r}"
        )
    return dict(options)


def validate_runtime(cfg: Config, opts: BatchOptions) -> None:
    rt = cfg.runtime

    def bad(key: str, allowed: str, got: object) -> ConfigError:
        return ConfigError(f"{key} must be {allowed}, got {got!r}")

    if not isinstance(rt.batch_size, int) or isinstance(rt.batch_size, bool) or rt.batch_size < 1:
        raise bad("runtime.batch_size", "an integer >= 1", rt.batch_size)
    if not isinstance(rt.num_workers, int) or isinstance(rt.num_workers, bool) or rt.num_workers < 0:
        raise bad("runtime.num_workers", "an integer >= 0 (0 decodes in the main thread)", rt.num_workers)
    if rt.chunk_seconds is not None and not rt.chunk_seconds > 0:
        raise bad("runtime.chunk_seconds", "null or a number of seconds > 0", rt.chunk_seconds)
    if opts.workers not in ("thread", "process"):
        raise bad("batch.workers", "'thread' or 'process'", opts.workers)
    if opts.progress not in ("auto", "bar", "log", "none"):
        raise bad("batch.progress", "one of auto, bar, log, none", opts.progress)
    if not opts.extensions:
        raise bad("batch.extensions", "a non-empty list like [wav, flac]", list(opts.extensions))
    if not opts.log_every_s > 0:
        raise bad("batch.log_every_s", "a number of seconds > 0", opts.log_every_s)
    if opts.long_file_seconds is not None and not opts.long_file_seconds > 0:
        raise bad("batch.long_file_seconds", "null or a number of seconds > 0", opts.long_file_seconds)
    engine = engine_config(cfg)
    if engine.name not in ("local", "ray"):
        raise bad("engine", "local or ray (engine=ray runs the job on a Ray cluster)", engine.name)
    if not storage_config(cfg).manifest_flush_s > 0:
        raise bad("storage.manifest_flush_s", "a number of seconds > 0", storage_config(cfg).manifest_flush_s)
    storage_options(cfg)


def validate_chunk_seconds(value: object) -> float:
    """``runtime.chunk_seconds`` as a float; ``ConfigError`` unless it is a number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ConfigError(f"runtime.chunk_seconds must be null or a number of seconds > 0, got {value!r}")
    return float(value)
