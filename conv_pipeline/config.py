"""Typed configuration: dataclasses that are both Hydra's structured-config schema and the
plain Python API's arguments.

Hydra validates every override against these schemas (an unknown key or a wrong type fails
with Hydra's own message); ``validate_*`` below check what a type cannot express (ranges,
registries, divisibility) and raise ``ConfigError`` naming the key, the allowed values and
what was received, before any audio is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional, Sequence, Union

from .errors import ConfigError
from .geometry import StackGeometry

__all__ = [
    "LayerConfig",
    "ModelConfig",
    "AudioConfig",
    "OutputConfig",
    "RuntimeConfig",
    "Config",
    "BatchOptions",
    "BatchConfig",
    "OutputFormat",
    "Device",
    "ACTIVATIONS",
    "NORMS",
    "register_configs",
    "validate_model",
    "validate_audio",
    "resolve_in_channels",
]

# Names that config values may use; each resolves to code only through these fixed tables
# (see model.py). Nothing from the command line is ever imported or instantiated by path.
ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "leaky_relu", "elu", "silu", "softplus")
NORMS = ("layer_norm",)


class OutputFormat(Enum):
    npy = "npy"
    npz = "npz"


class Device(Enum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


@dataclass
class LayerConfig:
    """One ``Conv1d`` layer, then an optional per-frame norm, then an optional activation."""

    out_channels: int = 1
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    bias: bool = True
    activation: Optional[str] = None
    norm: Optional[str] = None


@dataclass
class ModelConfig:
    """The conv stack. ``in_channels``: ``auto`` (channels of the loaded audio) or a number."""

    name: str = "custom"
    in_channels: Any = "auto"
    layers: List[LayerConfig] = field(default_factory=list)
    checkpoint: Optional[str] = None


@dataclass
class AudioConfig:
    """Loading. ``sample_rate``: null keeps the file's rate. ``channels``: keep, mono or a list of indices."""

    sample_rate: Optional[int] = None
    channels: Any = "keep"


@dataclass
class OutputConfig:
    """Where features go. ``dir``: null means ``feats`` (single run) or the job's own folder (multirun)."""

    dir: Optional[str] = None
    format: OutputFormat = OutputFormat.npy


@dataclass
class RuntimeConfig:
    """Execution. ``device``: cpu, cuda or auto. ``chunk_seconds``: null runs each file whole.

    ``batch_size`` and ``num_workers`` are used by the batch job (files per stack call, decode workers).
    """

    device: Device = Device.cpu
    chunk_seconds: Optional[float] = None
    batch_size: int = 8
    num_workers: int = 2


@dataclass
class Config:
    input: Optional[str] = None
    seed: int = 0
    overwrite: bool = False
    debug: bool = False
    plot: bool = False
    summary: bool = False
    input_seconds: Optional[float] = None
    model: ModelConfig = field(default_factory=ModelConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


# Audio files a folder or glob input picks up (by extension, case-insensitive).
AUDIO_EXTENSIONS = ["wav", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff", "aifc", "au", "snd", "caf", "w64", "rf64"]


@dataclass
class BatchOptions:
    """Keys only ``scripts/batch_process.py`` uses (``batch.*``).

    ``extensions``: audio files a folder or glob input picks up. ``workers``: ``thread`` (decode
    in threads, fastest) or ``process`` (decode in worker processes; a decoder crash then costs
    one failed file, not the job). ``progress``: ``auto`` (a bar on a terminal, log lines
    otherwise), ``bar``, ``log`` or ``none``. ``log_every_s``: seconds between progress lines.
    """

    extensions: List[str] = field(default_factory=lambda: list(AUDIO_EXTENSIONS))
    workers: str = "thread"
    progress: str = "auto"
    log_every_s: float = 10.0


@dataclass
class BatchConfig(Config):
    """Root schema of the batch job: every ``Config`` key plus ``batch.*``."""

    batch: BatchOptions = field(default_factory=BatchOptions)


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (``base_config`` is the root schema,
    ``base_batch_config`` the batch job's)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(name="base_batch_config", node=BatchConfig)


# ---------------------------------------------------------------- validation
def _fail(key: str, allowed: str, got: object) -> ConfigError:
    return ConfigError(f"{key} must be {allowed}, got {got!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_model(model: ModelConfig) -> StackGeometry:
    """Check every layer spec and the channel chain; return the stack's geometry.

    The first layer's input channels are checked later, once known (see ``resolve_in_channels``).
    """
    if not model.layers:
        raise ConfigError("model.layers is empty: give at least one layer or pick a preset (model=default)")
    if not (model.in_channels == "auto" or (_is_int(model.in_channels) and model.in_channels >= 1)):
        raise _fail("model.in_channels", "'auto' or an integer >= 1", model.in_channels)
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
        if i > 0:
            _check_groups_divide_input(i, layer, model.layers[i - 1].out_channels)
    if _is_int(model.in_channels):
        _check_groups_divide_input(0, model.layers[0], model.in_channels)
    return StackGeometry(model.layers)


def _check_groups_divide_input(i: int, layer: LayerConfig, in_channels: int) -> None:
    if in_channels % layer.groups:
        source = "model.in_channels" if i == 0 else f"model.layers[{i - 1}].out_channels"
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
    from .errors import InputError

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
    _check_groups_divide_input(0, model.layers[0], expected)
    return expected
