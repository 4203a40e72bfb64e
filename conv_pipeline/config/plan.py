"""The plan: a config resolved and checked once, before any audio is read.

Every entry point builds one (``python -m conv_pipeline`` and ``conv-pipeline-batch`` through
``engines/single.py`` and ``engines/job.py``, the Ray engine, the Python API, ``summary=true``)
with ``build_plan``, so a setting means the same thing everywhere and a bad one is refused the
same way: a ``ConfigError`` (one line, exit status 2) naming the key and the fix.

What the plan settles:

* the stack and its geometry (``config/checks.py: validate_model``), the front-end's sample
  rate tied to ``audio.sample_rate`` (one source of truth: a conflict is an error);
* the channel rule (``config/channels.py``): how many channels the stack takes and what fixed it;
* the execution mode (``chunk_seconds``: null = whole file), device name, batch size, workers;
* the output folder (``output.dir``; else a multirun job's own folder; else ``feats/<model name>``,
  one subfolder per model, so a second model never meets the first one's weights) and format; for
  the batch job its ``batch.*``, ``engine.*`` and storage options.

Pure Python (no torch): a checkpoint is opened only when ``model.checkpoint`` is set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from conv_pipeline.config import checks
from conv_pipeline.config.channels import ChannelRule, channel_rule
from conv_pipeline.config.checks import (
    MAX_BLOCK_BYTES,
    check_choice,
    check_package_choice,
    check_int,
    check_seconds,
    layer_channels,
    stack_parameters,
    validate_audio,
    validate_model,
    validate_output,
)
from conv_pipeline.config.compose import to_config
from conv_pipeline.config.schema import (
    BatchOptions,
    Config,
    EngineConfig,
    OutputFormat,
    StorageConfig,
)
from conv_pipeline.errors import ConfigError
from conv_pipeline.geometry import StackGeometry

DEFAULT_OUTPUT_DIR = "feats"  # the default output.dir is DEFAULT_OUTPUT_DIR/<model name> (default_output_dir)
KINDS = ("file", "batch")
DEVICES = ("cpu", "cuda", "auto")
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Plan:
    """One run, resolved. ``kind``: ``file`` (one input, ``python -m conv_pipeline``) or
    ``batch`` (a collection). ``config``: the typed config, with derived values filled in
    (the front-end's sample rate). ``sample_rate``: Hz the stack runs at (None: each file's own).
    ``chunk_seconds``: audio per chunk in chunked execution (None: whole files)."""

    kind: str
    config: Config
    geometry: StackGeometry
    channels: ChannelRule
    sample_rate: Optional[int]
    chunk_seconds: Optional[float]
    device: str
    output_dir: str
    output_format: str
    batch: BatchOptions = field(default_factory=BatchOptions)
    engine: EngineConfig = field(default_factory=EngineConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    storage_options: dict = field(default_factory=dict)

    @property
    def model(self):
        return self.config.model

    @property
    def audio(self):
        return self.config.audio

    @property
    def input(self) -> Optional[str]:
        return self.config.input

    @property
    def model_name(self) -> str:
        return self.config.model.name


def _section(cfg: Config, name: str, schema: type) -> Any:
    value = getattr(cfg, name, None)
    if value is None:
        return schema()
    return schema(**value) if isinstance(value, Mapping) else value


def _sample_rate(cfg: Config) -> Optional[int]:
    """``audio.sample_rate``, the one rate the stack runs at; the front-end follows it (a front-end
    rate given alone sets it: the audio is resampled to what the front-end expects)."""
    fe = cfg.model.frontend
    rate = cfg.audio.sample_rate
    if fe is not None and rate is None and fe.sample_rate is not None:
        check_int("model.frontend.sample_rate", fe.sample_rate, 1)
        cfg.audio.sample_rate = rate = fe.sample_rate  # the audio is resampled to what the front-end expects
    if fe is not None and fe.sample_rate is not None and fe.sample_rate != rate:
        fix = f"set audio.sample_rate={fe.sample_rate}" if isinstance(fe.sample_rate, int) else "drop it"
        raise ConfigError(
            f"model.frontend.sample_rate={fe.sample_rate} disagrees with audio.sample_rate={rate}: the "
            f"front-end runs on the audio as loaded and follows audio.sample_rate; {fix} instead"
        )
    if fe is not None:
        fe.sample_rate = rate
    return rate


def default_output_dir(model_name: Any) -> str:
    """``output.dir`` when none is given: ``feats/<model name>``, one folder per model, so running a
    second model writes beside the first instead of being refused (a folder holds one model's
    weights). The name becomes one safe path component: characters other than letters, digits and
    ``+-._`` become ``_``; a name that is empty or only dots becomes ``model``."""
    name = re.sub(r"[^A-Za-z0-9+._-]", "_", str(model_name or ""))
    return f"{DEFAULT_OUTPUT_DIR}/{name if name.strip('.') else 'model'}"


def _storage_options(storage: StorageConfig) -> dict:
    options = storage.options
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"storage.options must be a mapping of fsspec options like '{{anon: true}}', got {options!r}")
    return dict(options)


def _check_runtime(cfg: Config, kind: str) -> Optional[float]:
    rt = cfg.runtime
    if rt.batch_size is None:
        rt.batch_size = batch_size_for(cfg.model)
    check_int("runtime.batch_size", rt.batch_size, 1, "or null (the model's own)")
    check_int("runtime.num_workers", rt.num_workers, 0, "(0 decodes in the main thread)")
    check_choice("runtime.device", _enum_value(rt.device), DEVICES)
    if kind == "batch" and cfg.plot:
        raise ConfigError(
            "plot=true draws one input's features; the batch job does not draw (it would make one image "
            "per input): draw an output with python -m conv_pipeline.inspect OUT/name.npy --plot PNG"
        )
    seconds = cfg.input_seconds
    if seconds is not None:
        check_seconds("input_seconds", seconds)
    chunk = rt.chunk_seconds
    return None if chunk is None else check_seconds("runtime.chunk_seconds", chunk, "null or ")


# Front-ends run as FFTs when no learned layer follows them: their batch size (below).
FFT_FRONTENDS = ("stft", "mel", "mfcc", "fbank")  # their first conv runs as an rfft (stack/spectral.py)
# Files per padded batch when runtime.batch_size is null. Measured on the 500-file mixed corpus
# (BENCHMARKS.md, issue 13): model=mel ran 1.25x faster in batches of 1 than of 8 (an FFT gains
# nothing from batching and pays for the padding, the masking and the larger tensors), while a
# stack of small convs gains from fewer, larger calls (model=default: 8).
BATCH_SIZE_FFT = 1
BATCH_SIZE_CONV = 8


def batch_size_for(model: Any) -> int:
    """``runtime.batch_size`` when it is null: ``BATCH_SIZE_FFT`` for a front-end executed as an FFT
    with no layers after it, else ``BATCH_SIZE_CONV``. Settled in the plan, so the local and Ray
    engines group the same files (a file's features do not depend on the engine)."""
    fe = model.frontend
    if fe is not None and str(getattr(fe, "type", "")) in FFT_FRONTENDS and not model.layers:
        return BATCH_SIZE_FFT
    return BATCH_SIZE_CONV


def _check_batch(opts: BatchOptions, engine: EngineConfig, storage: StorageConfig) -> None:
    check_choice("batch.workers", opts.workers, ("thread", "process"))
    check_choice("batch.progress", opts.progress, ("auto", "bar", "log", "none"))
    if not opts.extensions:
        raise ConfigError(f"batch.extensions must be a non-empty list like [wav, flac], got {list(opts.extensions)!r}")
    check_seconds("batch.log_every_s", opts.log_every_s)
    if opts.long_file_seconds is not None:
        check_seconds("batch.long_file_seconds", opts.long_file_seconds, "null or ")
    check_choice("engine", engine.name, ENGINES, "(engine=ray runs the job on a Ray cluster)")
    check_seconds("storage.manifest_flush_s", storage.manifest_flush_s)


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value))


def checkpoint_channels(cfg: Config) -> Optional[int]:
    """Input channels the checkpoint's first conv expects (None without a checkpoint)."""
    if not cfg.model.checkpoint:
        return None
    from conv_pipeline.stack.checkpoint import (
        checkpoint_in_channels,  # torch: only with a checkpoint
    )

    return checkpoint_in_channels(cfg.model.checkpoint, cfg.model)


def build_plan(cfg: Any, kind: str = "file", output_dir: Optional[str] = None, need_input: bool = True) -> Plan:
    """Resolve and check ``cfg`` (a ``Config``/``BatchConfig`` or a composed Hydra config) for a
    run of ``kind`` (``file`` or ``batch``). ``output_dir``: used when ``output.dir`` is null (a
    multirun job's folder). ``need_input``: False for a summary of the model alone. Raises
    ``ConfigError`` (one line) before anything is read or written."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    cfg = to_config(cfg)
    if not cfg.input and not cfg.summary and need_input:
        what = "path/to/audio.wav" if kind == "file" else "corpus/ (a folder, a glob like 'corpus/**/*.wav' or a list file)"
        raise ConfigError(f"no input given: add input={what}")
    validate_audio(cfg.audio)
    sample_rate = _sample_rate(cfg)  # before the front-end is checked: its rate follows the audio's
    geometry = validate_model(cfg.model)
    chunk_seconds = _check_runtime(cfg, kind)
    opts = _section(cfg, "batch", BatchOptions)
    engine = _section(cfg, "engine", EngineConfig)
    storage = _section(cfg, "storage", StorageConfig)
    if kind == "batch":
        _check_batch(opts, engine, storage)
    fmt = _enum_value(cfg.output.format)
    check_package_choice("output.format", fmt, tuple(f.value for f in OutputFormat))
    validate_output(cfg.output, fmt, engine.name if kind == "batch" else None)
    policy = cfg.audio.channels if isinstance(cfg.audio.channels, str) else tuple(cfg.audio.channels)
    specs_groups = geometry_first_groups(cfg)
    rule = channel_rule(cfg.model.in_channels, policy, specs_groups, checkpoint_channels(cfg), cfg.model.checkpoint,
                        cfg.model.frontend.type if cfg.model.frontend is not None else None)
    check_memory(cfg, geometry, rule, chunk_seconds, sample_rate)
    return Plan(
        kind=kind,
        config=cfg,
        geometry=geometry,
        channels=rule,
        sample_rate=sample_rate,
        chunk_seconds=chunk_seconds,
        device=_enum_value(cfg.runtime.device),
        output_dir=str(cfg.output.dir or output_dir or default_output_dir(cfg.model.name)),
        output_format=fmt,
        batch=opts,
        engine=engine,
        storage=storage,
        storage_options=_storage_options(storage),
    )


def check_memory(cfg: Config, geometry: StackGeometry, rule: ChannelRule, chunk_seconds: Optional[float],
                 sample_rate: Optional[int]) -> None:
    """``ConfigError`` when the stack's weights plus its largest layer activation (for one chunk,
    or for the shortest input a whole file can be) exceed the memory available: a model, padding
    or channel policy too large for this machine is refused before anything is allocated.

    Input channels: the rule's count, else 1 (the audio decides; a file's own count is checked
    when it is loaded). A chunk is ``chunk_seconds`` at the stack's rate (a block holds at most
    ``MAX_BLOCK_BYTES`` whatever the rate)."""
    avail = checks.available_bytes()
    if avail is None:
        return
    in_ch = rule.count or 1
    params = stack_parameters(cfg.model, in_ch)
    cap = MAX_BLOCK_BYTES // (4 * in_ch)
    if chunk_seconds is None:
        length, unit = geometry.min_input_length, "the shortest input"
    else:
        length = max(1, min(cap, round(chunk_seconds * (sample_rate or checks.MAX_SAMPLE_RATE))))
        unit = "one chunk (runtime.chunk_seconds)"
    per_layer = geometry.layer_elements(length, layer_channels(cfg.model, in_ch))
    peak = max(per_layer)
    streams = 1 if chunk_seconds is None else 2  # chunked: two threads, each with its own buffers (execute/segments.py)
    need = 4 * (params + streams * peak)
    if need <= avail:
        return
    layer = per_layer.index(peak) + 1
    raise ConfigError(
        f"the model needs about {need / 2**30:.1f} GiB ({params:,} weights; layer {layer} holds {peak:,} values "
        f"for {unit}{', twice: two threads' if streams > 1 else ''}, {length} samples x {in_ch} channel(s)), "
        f"{avail / 2**30:.1f} GiB available: reduce "
        "out_channels, kernel_size, padding or audio.channels (or runtime.chunk_seconds)"
    )


def geometry_first_groups(cfg: Config) -> int:
    """Groups of the stack's first conv (a front-end's first conv has one group)."""
    if cfg.model.frontend is not None or not cfg.model.layers:
        return 1
    return int(cfg.model.layers[0].groups)

