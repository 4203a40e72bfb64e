"""Typed configuration: dataclasses that are both Hydra's structured-config schema and the
plain Python API's arguments.

Hydra checks every override against these schemas (an unknown key or a wrong type fails
when the config is composed: ``config/compose.py`` turns that into one line); what a type
cannot express (ranges, registries, divisibility, required keys) is checked by
``config/checks.py`` and ``config/plan.py`` before any audio is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

# OmegaConf's marker for a required value (the same string; omegaconf is not imported here).
MISSING: Any = "???"

# Names that config values may use; each resolves to code only through these fixed tables
# (stack/layer.py: ACTIVATION_TABLE, NORM_TYPES). Nothing from the command line is ever imported or instantiated by path.
ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "leaky_relu", "elu", "silu", "softplus")


NORMS = ("layer_norm", "group_norm")


# layer_norm: over channels at every frame (never mixes time steps).
# group_norm: one group per channel, statistics over the item's whole time axis (wav2vec2 base).
TIME_NORMS = ("group_norm",)


FRONTENDS = ("stft", "mel", "sinc")


WINDOWS = ("hann", "hamming", "blackman", "rectangular")

# audio.resampler: torchaudio (its sinc filter, computed phase by phase: equal to
# torchaudio.functional.resample) or soxr (libsoxr "HQ", the soxr package: not equal to torchaudio).
RESAMPLERS = ("torchaudio", "soxr")


class OutputFormat(Enum):
    npy = "npy"
    npz = "npz"


class Device(Enum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


@dataclass
class LayerConfig:
    """One ``Conv1d`` layer, then an optional norm (layer_norm per frame, group_norm over the whole item), then an optional activation."""

    out_channels: int = MISSING  # required
    kernel_size: int = MISSING  # required
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
    indices. ``normalize``: ``(x - mean) / sqrt(var + 1e-7)`` over the whole file, after resampling.

    ``resampler``: how a file at another rate reaches ``sample_rate``, whole or chunked.
    ``torchaudio`` (default): ``torchaudio.functional.resample``'s filter (sinc_interp_hann, width
    6, rolloff 0.99) computed phase by phase over its non-zero taps only; equal to torchaudio's
    result within 1e-6 (float32 rounding). ``soxr``: libsoxr at quality "HQ" (the ``soxr``
    package, ``pip install soxr``; librosa's default): another filter, so NOT equal to torchaudio.
    Measured max |soxr - torchaudio|: 0.27 (44.1/48 -> 16 kHz) to 0.42 (8 -> 16 kHz) on white
    noise in [-1, 1] (energy up to Nyquist, where the two filters' transition bands differ);
    3e-4 to 6e-3 on tones inside the band, up to 3e-2 within the first and last 50 ms. Its
    output is trimmed, or padded with zeros at the end, to torchaudio's length
    ``ceil(new * frames / orig)``; streamed (chunked runs) it equals its whole-file result.
    """

    sample_rate: Optional[int] = None
    channels: Any = "keep"
    normalize: bool = False  # zero mean, unit variance per file (wav2vec2/HuBERT input convention)
    resampler: str = "torchaudio"  # torchaudio (equal to torchaudio.functional.resample) | soxr (not equal)


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
    used. ``ray``: a Ray Data pipeline (``conv_pipeline/engines/ray_engine.py``). ``address``: null starts
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
    ``conv_pipeline/sink/outputs.py``, ``conv_pipeline/load/remote.py``). ``options``: keyword arguments of the fsspec filesystem
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
