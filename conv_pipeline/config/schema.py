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


def setting(default: Any = MISSING, help: str = "", factory: Any = None, batch_only: bool = False) -> Any:
    """A schema field with its one-line description, the one ``--help`` prints for the key
    (``cli/help.py``): every key is described here and only here. ``batch_only``: a key of the
    shared schema only the batch job uses (the single-file command's ``--help`` leaves it out)."""
    metadata = {"help": help, "batch_only": batch_only}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def key_help(f: Any) -> str:
    """The description of a schema field (``dataclasses.Field``), ``""`` when it has none."""
    return str(f.metadata.get("help", ""))

# Names that config values may use; each resolves to code only through these fixed tables
# (stack/layer.py: ACTIVATION_TABLE, NORM_TYPES). Nothing from the command line is ever imported or instantiated by path.
ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "leaky_relu", "elu", "silu", "softplus")


NORMS = ("layer_norm", "group_norm")


# layer_norm: over channels at every frame (never mixes time steps).
# group_norm: one group per channel, statistics over the item's whole time axis (wav2vec2 base).
TIME_NORMS = ("group_norm",)


FRONTENDS = ("stft", "mel", "sinc", "mfcc", "fbank")


WINDOWS = ("hann", "hamming", "blackman", "rectangular", "povey")

# model.frontend.cmvn: per-file mean (and variance) normalisation of every output channel.
CMVN_MODES = ("mean", "mean_var")

# audio.resampler: torchaudio (its sinc filter, computed phase by phase: equal to
# torchaudio.functional.resample) or soxr (libsoxr "HQ", the soxr package: not equal to torchaudio).
RESAMPLERS = ("torchaudio", "soxr")

# audio.decoder: auto (libsndfile, then FFmpeg through PyAV for what libsndfile cannot read and for
# FFmpeg-only extensions), soundfile (libsndfile only) or ffmpeg (FFmpeg only; needs PyAV).
DECODERS = ("auto", "soundfile", "ffmpeg")


class OutputFormat(Enum):
    npy = "npy"
    npz = "npz"
    parquet = "parquet"  # the sharded formats (sink/formats/): the formats extra
    kaldi = "kaldi"
    lhotse = "lhotse"


OUTPUT_DTYPES = ("float32", "float16")


class Device(Enum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


@dataclass
class LayerConfig:
    """One ``Conv1d`` layer, then an optional norm (layer_norm per frame, group_norm over the whole item), then an optional activation."""

    out_channels: int = setting(MISSING, "output channels of the conv (required)")
    kernel_size: int = setting(MISSING, "kernel length in samples/frames of its input (required)")
    stride: int = setting(1, "hop between kernel positions (the frame rate divides by it)")
    padding: int = setting(0, "zeros added at both ends of its input")
    dilation: int = setting(1, "spacing between kernel taps")
    groups: int = setting(1, "grouped conv: in and out channels split into this many groups")
    bias: bool = setting(True, "learned bias per output channel")
    activation: Optional[str] = setting(None, f"after the conv (and norm): null or {', '.join(ACTIVATIONS)}")
    norm: Optional[str] = setting(None, "after the conv: null, layer_norm (per frame) or group_norm (per channel over the whole file)")


@dataclass
class FrontendConfig:
    """An analytic front-end (kernels computed, not learned) run before ``model.layers``.

    ``type``: stft, mel, sinc, mfcc or fbank. Defaults follow torchaudio's
    ``MelSpectrogram(sample_rate=16000, n_fft=400, hop_length=160, n_mels=80, center=False)``;
    the presets (``configs/model``) set the rest (``mfcc``: torchaudio's ``MFCC``; ``fbank``: Kaldi's).
    """

    type: str = setting("stft", f"the front-end: {', '.join(FRONTENDS)}")
    sample_rate: Optional[int] = setting(None, "Hz the front-end is built for (presets: ${audio.sample_rate}; null: audio.sample_rate)")
    n_fft: int = setting(400, "stft/mel/mfcc/fbank: FFT size in samples (n_fft // 2 + 1 frequency bins)")
    win_length: Optional[int] = setting(None, "stft/mel/mfcc: window length in samples (null: n_fft); fbank: the frame length")
    hop_length: int = setting(160, "stft/mel/mfcc/fbank: samples between frames")
    window: str = setting("hann", f"stft/mel/mfcc/fbank: the window, {', '.join(WINDOWS)} (povey: Kaldi's, hann ** 0.85)")
    power: Optional[float] = setting(None, "exponent of the magnitude (null: 1 for stft, 2 for mel, mfcc and fbank)")
    n_mels: int = setting(80, "mel/mfcc: mel bands (HTK scale); fbank: Kaldi mel bins")
    f_min: float = setting(0.0, "mel/mfcc/fbank: lowest band edge in Hz")
    f_max: Optional[float] = setting(None, "mel/mfcc/fbank: highest band edge in Hz (null: sample_rate / 2)")
    log: bool = setting(False, "stft/mel/sinc: log(x + log_offset) of the output; fbank: log(max(x, float32 epsilon)), Kaldi's")
    log_offset: float = setting(1e-6, "stft/mel: added before the log")
    n_filters: int = setting(80, "sinc: band-pass filters (output channels)")
    kernel_size: int = setting(251, "sinc: filter length in samples (odd)")
    min_low_hz: float = setting(30.0, "sinc: lowest low cut-off in Hz")
    min_band_hz: float = setting(50.0, "sinc: narrowest band in Hz")
    n_mfcc: int = setting(40, "mfcc: cepstral coefficients kept (DCT-II, ortho, of the dB mel bands)")
    center: bool = setting(False, "stft/mel/mfcc: centred frames, reflect padding of n_fft // 2 at the file's true "
                                  "start and end (torch.stft center=True); frames = samples // hop_length + 1")
    db: bool = setting(False, "stft/mel: decibels, AmplitudeToDB (10 log10 of power, 20 log10 of magnitude, "
                              "floor 1e-10); mfcc always")
    top_db: Optional[float] = setting(None, "mel/mfcc with dB: floor at the whole file's peak minus top_db "
                                            "(null: none; mfcc preset: 80)")
    preemphasis: float = setting(0.97, "fbank: pre-emphasis coefficient (Kaldi), folded into the framing kernel")
    deltas: int = setting(0, "0, 1 or 2: append deltas (1) and delta-deltas (2) of every channel "
                             "(torchaudio compute_deltas, window 5, edges replicated)")
    cmvn: Optional[str] = setting(None, "false (null), mean or mean_var: per-file normalisation of every output channel "
                                        "over the whole file (after deltas)")


@dataclass
class ModelConfig:
    """The conv stack. ``in_channels``: ``auto`` (channels of the loaded audio) or a number.

    ``frontend`` (optional) runs first; ``layers`` follow it.
    """

    name: str = setting("custom", "the model's name in logs, plots, inspect and the default output.dir (a preset's, "
                              "<preset>+custom after layers were added, custom after they were changed)")
    in_channels: Any = setting("auto", "input channels of the stack: auto (the audio's, after audio.channels) or a number")
    frontend: Optional[FrontendConfig] = setting(None, "an analytic front-end run first (null: none; "
                                                   "model=mel, stft, sinc, mfcc or fbank set one)")
    layers: List[LayerConfig] = setting(help="the conv layers after the front-end, first to last "
                                         "(a list; '+model.layers=[{...}]' appends to it)", factory=list)
    # layers to add after ``layers`` (the command line's ``+model.layers=[...]`` sets it); moved into
    # ``layers`` when the config is composed (config/compose.py: to_config), so a run records one list
    append_layers: List[LayerConfig] = setting(help="layers added after model.layers (what '+model.layers=[...]' "
                                                "sets; moved into model.layers when composed)", factory=list)
    checkpoint: Optional[str] = setting(None, "weights to load: a .safetensors or torch .pt file (this package's, "
                                          "or a torchaudio/Hugging Face/fairseq wav2vec2-family one); null: seeded")


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

    ``decoder``: ``auto`` (default) reads a file with libsndfile and falls back to FFmpeg (PyAV,
    ``load/ffmpeg.py``) when libsndfile cannot read it; files with an FFmpeg-only extension
    (``.m4a``, ``.mp4``, ``.webm``, ...) go to FFmpeg directly. ``soundfile``: libsndfile only;
    ``ffmpeg``: FFmpeg only (the ``ffmpeg`` extra).
    """

    sample_rate: Optional[int] = setting(None, "Hz every file is resampled to (null: each file's own rate)")
    channels: Any = setting("keep", "which channels feed the stack: keep, mono (the average) or a list of indices ([0])")
    # zero mean, unit variance per file (wav2vec2/HuBERT input convention)
    normalize: bool = setting(False, "zero mean and unit variance per file, after resampling (wav2vec2/HuBERT input)")
    # torchaudio (equal to torchaudio.functional.resample) | soxr (not equal)
    resampler: str = setting("torchaudio", f"{' or '.join(RESAMPLERS)}: torchaudio equals "
                                       "torchaudio.functional.resample; soxr (pip install soxr) does not")
    # auto | soundfile | ffmpeg (load/ffmpeg.py)
    decoder: str = setting("auto", "auto (libsndfile, then FFmpeg: .m4a, .mp4, .webm, ...), soundfile or ffmpeg "
                                   "(pip install 'conv_pipeline[ffmpeg]')")


@dataclass
class OutputConfig:
    """Where features go. ``dir``: null means ``feats`` (single run) or the job's own folder (multirun)."""

    dir: Optional[str] = setting(None, "where features, weights, config.yaml and manifest.jsonl go, a folder or URL "
                                   "(null: feats/<model name>, or a multirun job's own folder)")
    format: OutputFormat = setting(OutputFormat.npy, "npy (features only), npz (features, frame times and metadata), "
                                   "parquet (shards, a row per input), kaldi (feats.ark/scp) or lhotse (cuts.jsonl.gz)")
    dtype: str = setting("float32", "float32 or float16 (half the disk; values beyond float16's range are refused)")
    time_major: bool = setting(False, "npy/npz as (frames, channels); parquet, kaldi and lhotse always are")
    compress: bool = setting(False, "npz: compressed (numpy.savez_compressed)")
    shard_items: int = setting(1000, "parquet/kaldi/lhotse: at most this many inputs per shard file")
    shard_mb: float = setting(256.0, "parquet/kaldi/lhotse: at most about this many MB of features per shard file")
    lilcom: bool = setting(False, "lhotse: store features with lilcom (lossy, smaller) instead of lossless arrays")


@dataclass
class RuntimeConfig:
    """Execution. ``device``: cpu, cuda or auto. ``chunk_seconds``: the length of audio run through
    the stack at a time (bounded memory, the same frames as the whole file, faster: see
    scripts/bench_chunked.py for the measurements behind the default); null runs each file whole.

    ``batch_size`` and ``num_workers`` are used by the batch job (files per stack call, decode workers);
    ``batch_size`` null is resolved by the plan per model (``config/plan.py: batch_size_for``).
    """

    device: Device = setting(Device.cpu, "cpu, cuda or auto (cuda when available)")
    chunk_seconds: Optional[float] = setting(2.0, "seconds of audio through the stack at a time, same frames as whole "
                                              "(null: each file whole)")
    batch_size: Optional[int] = setting(None, "files per stack call, a padded batch (null: the model's own: 1 for an "
                                        "FFT-executed spectral front-end alone, 8 otherwise)", batch_only=True)
    num_workers: int = setting(2, "decode workers", batch_only=True)


@dataclass
class Config:
    input: Optional[str] = setting(None, "the audio to read: a file or URL (the batch job: a folder, a glob or a list file)")
    seed: int = setting(0, "initialises the weights when no model.checkpoint is set (same seed, same weights)")
    overwrite: bool = setting(False, "redo outputs that exist (and replace the weights of another model)")
    debug: bool = setting(False, "show a traceback instead of a one-line error")
    plot: bool = setting(False, "also draw <output.dir>/<stem>.png (waveform and features)")
    summary: bool = setting(False, "print the model's per-layer summary and exit (reads no audio)")
    input_seconds: Optional[float] = setting(None, "summary=true: the audio length the summary counts frames and FLOPs for")
    model: ModelConfig = setting(help="the conv stack (model=PRESET picks one)", factory=ModelConfig)
    audio: AudioConfig = setting(help="how files are loaded", factory=AudioConfig)
    output: OutputConfig = setting(help="where features go", factory=OutputConfig)
    runtime: RuntimeConfig = setting(help="how the stack runs", factory=RuntimeConfig)


# Audio files a folder or glob input picks up (by extension, case-insensitive).
AUDIO_EXTENSIONS = ["wav", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff", "aifc", "au", "snd", "caf", "w64", "rf64",
                    "m4a", "aac", "webm", "mka", "wma"]  # the last five through FFmpeg (load/ffmpeg.py)


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

    extensions: List[str] = setting(help="audio files a folder or glob picks up (case-insensitive)",
                                factory=lambda: list(AUDIO_EXTENSIONS))
    workers: str = setting("thread", "thread (decode in threads, fastest) or process (a crashing decoder costs one file)")
    progress: str = setting("auto", "auto (a bar on a terminal, log lines otherwise), bar, log or none")
    log_every_s: float = setting(10.0, "seconds between progress log lines")
    long_file_seconds: Optional[float] = setting(600.0, "longer files run alone, chunked (runtime.chunk_seconds); "
                                                    "null: every file goes into a batch")


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

    name: str = setting("local", "local (this process) or ray (a Ray cluster; pick it with engine=ray)")
    address: Optional[str] = setting(None, "ray: null starts a local Ray instance, auto joins this machine's cluster, "
                                       "ray://host:10001 a remote one")
    num_cpus: Optional[int] = setting(None, "ray: CPUs of a local instance (null: every core)")
    num_actors: Optional[int] = setting(None, "ray: stack actors (null: from the cluster's resources)")
    num_cpus_per_actor: Optional[float] = setting(None, "ray: CPUs per stack actor (null: derived)")
    num_gpus_per_actor: float = setting(0.0, "ray: GPUs each stack actor holds (the stack then runs on CUDA)")
    read_cpus: Optional[float] = setting(None, "ray: CPUs per decode task (null: derived)")
    env_vars: Any = setting(None, "ray: environment variables of every worker (a mapping, or null)")
    ship_package: bool = setting(False, "ray: upload this package with the job (nodes that lack it)")


@dataclass
class StorageConfig:
    """Inputs and outputs given as URLs (``s3://``, ``gs://``, ``memory://``, ...; see
    ``conv_pipeline/sink/outputs.py``, ``conv_pipeline/load/remote.py``). ``options``: keyword arguments of the fsspec filesystem
    (for s3fs: ``key``, ``secret``, ``client_kwargs: {endpoint_url: ...}``, ``anon``, ...),
    passed to every worker. ``manifest_flush_s``: on object stores the manifest is rewritten
    whole at most this often (and at the end)."""

    options: Any = setting(None, "fsspec filesystem options for URL inputs and outputs (a mapping, or null)")
    manifest_flush_s: float = setting(30.0, "object stores: seconds between rewrites of the whole manifest")


@dataclass
class BatchConfig(Config):
    """Root schema of the batch job: every ``Config`` key plus ``batch.*``, ``engine.*`` and
    ``storage.*``."""

    batch: BatchOptions = setting(help="the batch job's own settings", factory=BatchOptions)
    engine: EngineConfig = setting(help="where the job runs (engine=local or engine=ray)", factory=EngineConfig)
    storage: StorageConfig = setting(help="URL inputs and outputs", factory=StorageConfig)


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (``base_config`` is the root schema,
    ``base_batch_config`` the batch job's; its ``engine: EngineConfig`` field is the schema the
    ``configs/engine/*.yaml`` group files are checked against)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(name="base_batch_config", node=BatchConfig)
