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
from typing import Any, Dict, List, Optional, Sequence, Union

from .errors import ConfigError
from .geometry import StackGeometry

__all__ = [
    "LayerConfig",
    "FrontendConfig",
    "ModelConfig",
    "AudioConfig",
    "OutputConfig",
    "RuntimeConfig",
    "Config",
    "BatchOptions",
    "EngineConfig",
    "StorageConfig",
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
NORMS = ("layer_norm", "group_norm")
# layer_norm: over channels at every frame (never mixes time steps).
# group_norm: one group per channel, statistics over the item's whole time axis (wav2vec2 base).
TIME_NORMS = ("group_norm",)
FRONTENDS = ("stft", "mel", "sinc")
WINDOWS = ("hann", "hamming", "blackman", "rectangular")


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
class FrontendConfig:
    """An analytic front-end (kernels computed, not learned) run before ``model.layers``.

    ``type``: stft, mel or sinc. Defaults follow torchaudio's
    ``MelSpectrogram(sample_rate=16000, n_fft=400, hop_length=160, n_mels=80, center=False)``.
    """

    type: str = "stft"
    sample_rate: Optional[int] = None  # Hz the stack runs at (presets: ${audio.sample_rate})
    n_fft: int = 400
    win_length: Optional[int] = None  # null = n_fft
    hop_length: int = 160
    window: str = "hann"
    power: Optional[float] = None  # null: 1 (magnitude) for stft, 2 (power) for mel
    n_mels: int = 80
    f_min: float = 0.0
    f_max: Optional[float] = None  # null: sample_rate / 2
    log: bool = False
    log_offset: float = 1e-6
    n_filters: int = 80  # sinc
    kernel_size: int = 251  # sinc, odd
    min_low_hz: float = 30.0  # sinc
    min_band_hz: float = 50.0  # sinc


@dataclass
class ModelConfig:
    """The conv stack. ``in_channels``: ``auto`` (channels of the loaded audio) or a number.

    ``frontend`` (optional) runs first; ``layers`` follow it.
    """

    name: str = "custom"
    in_channels: Any = "auto"
    frontend: Optional[FrontendConfig] = None
    layers: List[LayerConfig] = field(default_factory=list)
    checkpoint: Optional[str] = None


@dataclass
class AudioConfig:
    """Loading. ``sample_rate``: null keeps the file's rate. ``channels``: keep, mono or a list of
    indices. ``normalize``: ``(x - mean) / sqrt(var + 1e-7)`` over the whole file, after resampling."""

    sample_rate: Optional[int] = None
    channels: Any = "keep"
    normalize: bool = False  # zero mean, unit variance per file (wav2vec2/HuBERT input convention)


@dataclass
class OutputConfig:
    """Where features go. ``dir``: null means ``feats`` (single run) or the job's own folder (multirun)."""

    dir: Optional[str] = None
    format: OutputFormat = OutputFormat.npy


@dataclass
class RuntimeConfig:
    """Execution. ``device``: cpu, cuda or auto. ``chunk_seconds``: the length of audio run through
    the stack at a time (bounded memory, the same frames as the whole file, faster: see
    scripts/bench_chunked.py for the measurements behind the default); null runs each file whole.

    ``batch_size`` and ``num_workers`` are used by the batch job (files per stack call, decode workers).
    """

    device: Device = Device.cpu
    chunk_seconds: Optional[float] = 2.0
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
    ``long_file_seconds``: files longer than this run alone through the chunked executor
    (``runtime.chunk_seconds`` of audio at a time, bounded memory) instead of in padded batches;
    null: every file goes into a batch.
    """

    extensions: List[str] = field(default_factory=lambda: list(AUDIO_EXTENSIONS))
    workers: str = "thread"
    progress: str = "auto"
    log_every_s: float = 10.0
    long_file_seconds: Optional[float] = 600.0


@dataclass
class EngineConfig:
    """Where the batch job runs (``engine=local`` or ``engine=ray``; ``configs/engine/*.yaml``).

    ``local``: this process (decode workers, padded batches, a writer thread); only ``name`` is
    used. ``ray``: a Ray Data pipeline (``conv_pipeline/ray_engine.py``). ``address``: null starts
    a local Ray instance (``num_cpus`` CPUs, null = all), ``auto`` joins the cluster this machine
    belongs to, ``ray://host:10001`` a remote one. ``num_actors``, ``num_cpus_per_actor``,
    ``read_cpus`` (per decode task): null = derived from the cluster's resources, always leaving
    CPU for the decode tasks. ``num_gpus_per_actor``: GPUs each stack actor holds (the stack then
    runs on CUDA). ``env_vars``: set in every Ray worker (e.g. credentials variables).
    ``ship_package``: upload this package to the cluster with the job (when the nodes lack it).
    """

    name: str = "local"
    address: Optional[str] = None
    num_cpus: Optional[int] = None
    num_actors: Optional[int] = None
    num_cpus_per_actor: Optional[float] = None
    num_gpus_per_actor: float = 0.0
    read_cpus: Optional[float] = None
    env_vars: Any = None  # a mapping of names to values, or null
    ship_package: bool = False


@dataclass
class StorageConfig:
    """Inputs and outputs given as URLs (``s3://``, ``gs://``, ``memory://``, ...; see
    ``conv_pipeline/storage.py``). ``options``: keyword arguments of the fsspec filesystem
    (for s3fs: ``key``, ``secret``, ``client_kwargs: {endpoint_url: ...}``, ``anon``, ...),
    passed to every worker. ``manifest_flush_s``: on object stores the manifest is rewritten
    whole at most this often (and at the end)."""

    options: Any = None  # a mapping, or null
    manifest_flush_s: float = 30.0


@dataclass
class BatchConfig(Config):
    """Root schema of the batch job: every ``Config`` key plus ``batch.*``, ``engine.*`` and
    ``storage.*``."""

    batch: BatchOptions = field(default_factory=BatchOptions)
    engine: EngineConfig = field(default_factory=EngineConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (``base_config`` is the root schema,
    ``base_batch_config`` the batch job's; its ``engine: EngineConfig`` field is the schema the
    ``configs/engine/*.yaml`` group files are checked against)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(name="base_batch_config", node=BatchConfig)


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
    if model.frontend is None:
        _check_groups_divide_input(0, model.layers[0], expected)
    return expected
