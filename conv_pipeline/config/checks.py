"""Checks of a config's values: what a type cannot express (ranges, registries, divisibility,
required keys), each raising ``ConfigError`` naming the key, the allowed values and what was
received, before any audio is read. ``validate_model`` also returns the stack's geometry.

Used by the plan (``config/plan.py``), which every entry point builds; the loaders call
``validate_audio`` and ``validate_chunk_seconds`` for direct Python callers.
"""

from __future__ import annotations

import importlib.util
import math
import resource
from dataclasses import dataclass
from typing import Optional, Sequence

from conv_pipeline.config.schema import (
    ACTIVATIONS,
    CMVN_MODES,
    FRONTENDS,
    MISSING,
    DECODERS,
    NORMS,
    OUTPUT_DTYPES,
    RESAMPLERS,
    WINDOWS,
    AudioConfig,
    FrontendConfig,
    LayerConfig,
    ModelConfig,
)
from conv_pipeline.config.compose import did_you_mean
from conv_pipeline.errors import ConfigError
from conv_pipeline.geometry import StackGeometry, conv_parameters

# Sample rates a file or audio.sample_rate may have: a header outside them is damaged or made up
# (a 32 KB file "at 1 Hz" upsampled to 16 kHz would be 800 MB of features; at 2 GHz one second of
# it would be 8 GB). MAX_CHANNELS: libsndfile's SF_MAX_CHANNELS, the most a file can hold.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 1_000_000
MAX_CHANNELS = 1024
# Bytes of float32 one decoded block may hold (before and after the channel policy and
# resampling), whatever chunk_seconds x the header's rate says: 16 MiB is 4 M mono samples,
# over four minutes at 16 kHz.
MAX_BLOCK_BYTES = 16 << 20


# ---------------------------------------------------------------- one validator style
# Every check raises ``ConfigError("<key> must be <allowed>, got <value>")`` through ``fail``.
def fail(key: str, allowed: str, got: object) -> ConfigError:
    return ConfigError(f"{key} must be {allowed}, got {got!r}")


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(key: str, value: object, minimum: int, note: str = "") -> int:
    if value == MISSING:
        raise ConfigError(f"{key} is required: give an integer >= {minimum}")
    if not is_int(value) or value < minimum:  # type: ignore[operator]
        raise fail(key, f"an integer >= {minimum}{' ' + note if note else ''}", value)
    return int(value)  # type: ignore[arg-type]


def check_choice(key: str, value: object, choices: Sequence[str], note: str = "") -> str:
    if value not in choices:
        err = fail(key, f"one of {', '.join(choices)}{' ' + note if note else ''}", value)
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        raise ConfigError(f"{err}{hint}") if hint else err
    return str(value)


def check_seconds(key: str, value: object, prefix: str = "") -> float:
    """A finite number of seconds > 0 (``prefix``: e.g. ``"null or "`` for the message)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise fail(key, f"{prefix}a finite number of seconds > 0", value)
    return float(value)


@dataclass
class FrontendLayer(LayerConfig):
    """A front-end conv's spec: a ``LayerConfig`` whose padding may be ``edge`` padding (``reflect``,
    ``replicate``: at the file's true ends, ``geometry.LayerGeometry.edge``) instead of zeros."""

    edge: str = "zeros"


DELTA_WIDTH = 5  # torchaudio.functional.compute_deltas' default win_length


def frontend_specs(fe: FrontendConfig) -> list[LayerConfig]:
    """The front-end's conv layers as plain layer specs (their kernels are set in stack/frontends.py):
    the base front-end, then one conv per delta order and, when nothing else can carry it, a 1x1
    identity conv whose norm is the CMVN."""
    n_freq = fe.n_fft // 2 + 1
    if fe.type == "sinc":
        pool = fe.win_length or fe.n_fft
        specs = [
            LayerConfig(out_channels=fe.n_filters, kernel_size=fe.kernel_size, padding=fe.kernel_size // 2, bias=False),
            LayerConfig(out_channels=fe.n_filters, kernel_size=pool, stride=fe.hop_length, groups=fe.n_filters, bias=False),
        ]
    else:
        size = (fe.win_length or fe.n_fft) if fe.type == "fbank" else fe.n_fft
        pad = fe.n_fft // 2 if fe.center else 0
        specs = [FrontendLayer(out_channels=2 * n_freq, kernel_size=size, stride=fe.hop_length, padding=pad,
                               bias=False, edge="reflect" if fe.center else "zeros")]
        if fe.type != "stft":
            specs.append(LayerConfig(out_channels=fe.n_mels, kernel_size=1, bias=False))
        if fe.type == "mfcc":
            specs.append(LayerConfig(out_channels=fe.n_mfcc, kernel_size=1, bias=False))
    return specs + _tail_specs(fe, frontend_base_channels(fe))


def _tail_specs(fe: FrontendConfig, channels: int) -> list[LayerConfig]:
    """Delta convs (``channels`` -> ``2 * channels`` -> ``3 * channels``), then the CMVN conv if needed."""
    half = DELTA_WIDTH // 2
    specs: list[LayerConfig] = [
        FrontendLayer(out_channels=(order + 2) * channels, kernel_size=DELTA_WIDTH, padding=half, bias=False,
                      edge="replicate")
        for order in range(int(fe.deltas or 0))
    ]
    if cmvn_mode(fe) and cmvn_needs_layer(fe):
        specs.append(LayerConfig(out_channels=(int(fe.deltas or 0) + 1) * channels, kernel_size=1, bias=False))
    return specs


def cmvn_needs_layer(fe: FrontendConfig) -> bool:
    """True when the CMVN gets its own 1x1 identity conv: the last conv otherwise ends in a
    nonlinearity (magnitude, log, dB) that the normalisation must follow."""
    return not fe.deltas and fe.type != "mfcc"


def frontend_base_channels(fe: FrontendConfig) -> int:
    """Channels of the front-end proper, before deltas: frequency bins, mel bands, cepstra or filters."""
    return {"stft": fe.n_fft // 2 + 1, "mel": fe.n_mels, "fbank": fe.n_mels, "mfcc": fe.n_mfcc, "sinc": fe.n_filters}[fe.type]


def frontend_channels(fe: FrontendConfig) -> list[tuple[int, int]]:
    """``(in, out)`` channels of each front-end conv: an STFT's (re, im) pairs become one
    magnitude channel each before the next conv reads them."""
    n_freq = fe.n_fft // 2 + 1
    if fe.type == "sinc":
        chans = [(1, fe.n_filters), (fe.n_filters, fe.n_filters)]
    else:
        chans = [(1, 2 * n_freq)]
        c = n_freq
        for w in {"stft": [], "mel": [fe.n_mels], "fbank": [fe.n_mels], "mfcc": [fe.n_mels, fe.n_mfcc]}[fe.type]:
            chans.append((c, w))
            c = w
    base = frontend_base_channels(fe)
    deltas = int(fe.deltas) if is_int(fe.deltas) else 0
    chans += [((order + 1) * base, (order + 2) * base) for order in range(deltas)]
    if cmvn_mode(fe) and cmvn_needs_layer(fe):
        chans.append((base, base))
    return chans


def frontend_out_channels(fe: FrontendConfig) -> int:
    """Channels the front-end hands to ``model.layers``: the base channels times (1 + deltas)."""
    return frontend_base_channels(fe) * (1 + (int(fe.deltas) if is_int(fe.deltas) else 0))


def validate_frontend(fe: FrontendConfig) -> None:
    key = "model.frontend"
    check_choice(f"{key}.type", fe.type, FRONTENDS)
    check_choice(f"{key}.window", fe.window, WINDOWS)
    for name in ("n_fft", "hop_length", "n_mels", "n_filters", "kernel_size", "n_mfcc"):
        check_int(f"{key}.{name}", getattr(fe, name), 1)
    if fe.win_length is not None and (not is_int(fe.win_length) or not 1 <= fe.win_length <= fe.n_fft):
        raise fail(f"{key}.win_length", f"null or an integer in 1..n_fft ({fe.n_fft})", fe.win_length)
    if fe.power is not None and fe.power <= 0:
        raise fail(f"{key}.power", "null or > 0", fe.power)
    if fe.type == "sinc" and fe.kernel_size % 2 == 0:
        raise fail(f"{key}.kernel_size", "odd (a symmetric band-pass kernel)", fe.kernel_size)
    if fe.type in ("mel", "sinc", "mfcc", "fbank"):
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
        raise fail(f"{key}.log_offset", "> 0", fe.log_offset)
    validate_frontend_options(fe)


def validate_frontend_options(fe: FrontendConfig) -> None:
    """The options of issue 16: center, db/top_db, n_mfcc, preemphasis, deltas, cmvn."""
    key, kind = "model.frontend", fe.type
    if fe.center and kind not in ("stft", "mel", "mfcc"):
        raise ConfigError(f"{key}.center=true is for stft, mel and mfcc (fbank frames are Kaldi's, snip_edges); "
                          f"set model.frontend.center=false for {kind}")
    if fe.db and kind not in ("stft", "mel"):
        raise ConfigError(f"{key}.db=true is for stft and mel (mfcc is always in dB, {kind} has its own log); "
                          "set model.frontend.db=false")
    if fe.log and kind == "mfcc":
        raise ConfigError(f"{key}.log=true does not apply to mfcc (its mel bands are in dB, then the DCT); "
                          "set model.frontend.log=false")
    if kind == "fbank" and fe.n_fft % 2:
        raise fail(f"{key}.n_fft", "even for fbank (Kaldi pads frames to an even FFT size, e.g. 512)", fe.n_fft)
    if kind == "fbank" and fe.n_mels < 4:
        raise fail(f"{key}.n_mels", "at least 4 for fbank (Kaldi's mel banks)", fe.n_mels)
    if fe.db and fe.log:
        raise ConfigError(f"{key}.db and {key}.log are both true: pick one (db: 10 log10, log: natural log)")
    if fe.top_db is not None:
        if isinstance(fe.top_db, bool) or not fe.top_db > 0 or not math.isfinite(fe.top_db):
            raise fail(f"{key}.top_db", "null or a finite number of dB > 0", fe.top_db)
        if not (kind == "mfcc" or (kind == "mel" and fe.db)):
            raise ConfigError(f"{key}.top_db needs dB mel bands: use model=mfcc, or model=mel with "
                              f"model.frontend.db=true (got type={kind}, db={fe.db})")
    if kind == "mfcc" and fe.n_mfcc > fe.n_mels:
        raise fail(f"{key}.n_mfcc", f"at most n_mels ({fe.n_mels})", fe.n_mfcc)
    if kind == "fbank" and not 0 <= fe.preemphasis <= 1:
        raise fail(f"{key}.preemphasis", "a number in 0..1", fe.preemphasis)
    if fe.deltas not in (0, 1, 2) or isinstance(fe.deltas, bool):
        raise fail(f"{key}.deltas", "0, 1 (deltas) or 2 (deltas and delta-deltas)", fe.deltas)
    if cmvn_mode(fe) not in (None,) + CMVN_MODES:
        raise fail(f"{key}.cmvn", f"false (or null) or one of {', '.join(CMVN_MODES)}", fe.cmvn)


def cmvn_mode(fe: FrontendConfig) -> Optional[str]:
    """``model.frontend.cmvn`` as None, ``mean`` or ``mean_var`` (``cmvn_value``)."""
    return cmvn_value(fe.cmvn)


def cmvn_value(value: object) -> Optional[str]:
    """A ``cmvn`` setting (a config's, or a written ``config.yaml``'s) as None, ``mean`` or ``mean_var``:
    ``false``/``null``/``none`` read as None (typed as a string, the command line's false arrives as
    ``"False"``)."""
    return None if value in (None, False, "False", "false", "null", "none") else value  # type: ignore[return-value]


def model_layer_specs(model: ModelConfig) -> list[LayerConfig]:
    """Every conv layer of the stack, front-end first: what the geometry is computed from."""
    return (frontend_specs(model.frontend) if model.frontend is not None else []) + list(model.layers)


# Every integer key of a layer and its smallest value; out_channels and kernel_size are required.
LAYER_INT_KEYS = (("out_channels", 1), ("kernel_size", 1), ("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1))


def validate_model(model: ModelConfig) -> StackGeometry:
    """Check the front-end, every layer spec and the channel chain; return the stack's geometry.

    The first layer's input channels are checked later, once known (``config/channels.py``).
    """
    if not model.layers and model.frontend is None:
        raise ConfigError("model.layers is empty: give at least one layer or pick a preset (model=default)")
    if not (model.in_channels == "auto" or (is_int(model.in_channels) and model.in_channels >= 1)):
        raise fail("model.in_channels", "'auto' or an integer >= 1", model.in_channels)
    if model.frontend is not None:
        validate_frontend(model.frontend)
        if is_int(model.in_channels) and model.in_channels != 1:
            raise ConfigError(
                f"model.frontend={model.frontend.type} works on one channel but model.in_channels="
                f"{model.in_channels}; use model.in_channels=1 audio.channels=mono"
            )
    prev_out = frontend_out_channels(model.frontend) if model.frontend is not None else None
    for i, layer in enumerate(model.layers):
        key = f"model.layers[{i}]"
        for name, minimum in LAYER_INT_KEYS:
            check_int(f"{key}.{name}", getattr(layer, name), minimum)
        if layer.activation is not None and layer.activation not in ACTIVATIONS:
            raise fail(f"{key}.activation", f"null or one of {', '.join(ACTIVATIONS)}", layer.activation)
        if layer.norm is not None and layer.norm not in NORMS:
            raise fail(f"{key}.norm", f"null or one of {', '.join(NORMS)}", layer.norm)
        if layer.out_channels % layer.groups:
            raise ConfigError(
                f"{key}.groups={layer.groups} must divide out_channels={layer.out_channels}"
            )
        if prev_out is not None:
            _check_groups_divide_input(i, layer, prev_out, "model.frontend" if i == 0 else None)
        prev_out = layer.out_channels
    if is_int(model.in_channels) and model.frontend is None:
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
    """Check ``audio.sample_rate``, ``audio.channels``, ``audio.resampler`` and ``audio.decoder`` before any file is read."""
    sr = audio.sample_rate
    if sr is not None and (not is_int(sr) or sr < 1):
        raise fail("audio.sample_rate", "null or an integer >= 1 (Hz)", sr)
    if sr is not None and not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise ConfigError(
            f"audio.sample_rate={sr} is outside the rates this tool takes ({MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz); "
            "give a rate in that range or null (each file's own rate)"
        )
    ch = audio.channels
    if isinstance(ch, str):
        if ch not in ("keep", "mono"):
            raise fail("audio.channels", "'keep', 'mono' or a list of channel indices like [0,1]", ch)
    elif isinstance(ch, Sequence) and not isinstance(ch, (bytes, str)):
        if not ch or not all(is_int(c) and c >= 0 for c in ch):
            raise fail("audio.channels", "a non-empty list of channel indices >= 0", _short_list(ch))
        if len(ch) > MAX_CHANNELS or max(ch) >= MAX_CHANNELS:
            raise ConfigError(
                f"audio.channels lists {len(ch)} indices up to {max(ch)}: at most {MAX_CHANNELS} indices below "
                f"{MAX_CHANNELS} (the most channels an audio file can hold); select fewer channels"
            )
    else:
        raise fail("audio.channels", "'keep', 'mono' or a list of channel indices like [0,1]", ch)
    check_resampler(getattr(audio, "resampler", "torchaudio"))
    check_decoder(getattr(audio, "decoder", "auto"))


# Settings whose value needs an optional package: (key, value) -> (module, how to install it, the alternative).
OPTIONAL_PACKAGES = {
    ("audio.resampler", "soxr"): ("soxr", "pip install soxr", "audio.resampler=torchaudio"),
    ("audio.decoder", "ffmpeg"): ("av", "pip install 'conv_pipeline[ffmpeg]'", "audio.decoder=auto"),
    **{("output.format", fmt): (module, "pip install 'conv_pipeline[formats]'", "output.format=npy")
       for fmt, module in (("parquet", "pyarrow"), ("kaldi", "kaldiio"), ("lhotse", "lhotse"))},
}


def check_package_choice(key: str, value: object, choices: Sequence[str]) -> None:
    """``value`` is one of ``choices``, and the package it needs (``OPTIONAL_PACKAGES``) is installed
    (looked up, not imported)."""
    check_choice(key, value, choices)
    need = OPTIONAL_PACKAGES.get((key, str(value)))
    if need is not None and importlib.util.find_spec(need[0]) is None:
        raise ConfigError(f"{key}={value} needs the {need[0]} package, which is not installed: {need[1]} (or set {need[2]})")


def check_resampler(value: object) -> None:
    """``audio.resampler`` is one of ``RESAMPLERS``; ``soxr`` needs the soxr package."""
    check_package_choice("audio.resampler", value, RESAMPLERS)


def check_decoder(value: object) -> None:
    """``audio.decoder`` is one of ``DECODERS``; ``ffmpeg`` needs PyAV (the ``av`` package)."""
    check_package_choice("audio.decoder", value, DECODERS)


def _short_list(values: Sequence) -> object:
    """A list as a message shows it: the first few items of a long one."""
    values = list(values)
    return values if len(values) <= 8 else f"[{', '.join(map(repr, values[:8]))}, ... ({len(values)} items)]"


def validate_output(output: object, fmt: str, engine: Optional[str] = None) -> None:
    """The ``output.*`` settings beside ``dir`` and ``format`` (``fmt``: its value, already checked
    with its library, ``check_package_choice``; ``engine``: the batch job's, None for one file):
    ``ConfigError`` (one line) for a wrong value or a format the engine cannot write."""
    check_choice("output.dtype", getattr(output, "dtype", "float32"), OUTPUT_DTYPES)
    check_int("output.shard_items", getattr(output, "shard_items", 1000), 1)
    mb = getattr(output, "shard_mb", 256.0)
    if isinstance(mb, bool) or not isinstance(mb, (int, float)) or not 0 < mb <= 1024:
        raise fail("output.shard_mb", "a number of MB > 0 and <= 1024", mb)
    if fmt == "kaldi" and getattr(output, "dtype", "float32") == "float16":
        raise ConfigError("output.dtype=float16 cannot be written as output.format=kaldi (Kaldi matrices are "
                          "float32 or float64): use output.dtype=float32, or output.format=parquet or lhotse")
    if engine == "ray" and fmt in ("kaldi", "lhotse"):  # one index file (feats.scp, cuts.jsonl.gz), one writer
        raise ConfigError(f"engine=ray cannot write output.format={fmt} yet (its index file has one writer): "
                          "use engine=local, or output.format=parquet with engine=ray")


def validate_chunk_seconds(value: object) -> float:
    """``runtime.chunk_seconds`` as a float; ``ConfigError`` unless it is a finite number > 0."""
    return check_seconds("runtime.chunk_seconds", value, "null or ")


# ---------------------------------------------------------------- memory
def _read_int(path: str, key: bytes = b"") -> Optional[int]:
    """An integer from a /proc or /sys file (after ``key`` on its line, in kB for /proc), else None."""
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.startswith(key):
                    fields = line[len(key):].split()
                    return int(fields[0]) * (1024 if key else 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # v2, then v1
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def available_bytes() -> Optional[int]:
    """Memory this process may still take (None when unknown): the kernel's ``MemAvailable``,
    less when the process's cgroup limit or its address-space limit (``ulimit -v``) leaves less."""
    limits = [_read_int("/proc/meminfo", b"MemAvailable:")]
    for limit_file, usage_file in _CGROUP_FILES:
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            limits.append(max(0, limit - usage))
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    used = _read_int("/proc/self/status", b"VmSize:")
    if soft != resource.RLIM_INFINITY and used is not None:
        limits.append(max(0, soft - used))
    known = [v for v in limits if v is not None]
    return min(known) if known else None


def layer_channels(model: ModelConfig, in_channels: int) -> list[tuple[int, int]]:
    """``(in, out)`` channels of every conv of the stack, front-end first (an STFT's (re, im)
    pairs become one magnitude channel each before the next conv reads them)."""
    if model.frontend is None:
        chans, c = [], in_channels
    else:
        chans = frontend_channels(model.frontend)
        c = chans[-1][1] if model.frontend.type == "sinc" else frontend_out_channels(model.frontend)
    for layer in model.layers:
        chans.append((c, layer.out_channels))
        c = layer.out_channels
    return chans


def stack_parameters(model: ModelConfig, in_channels: int) -> int:
    """Weights and biases of the stack's convs (norms aside) for ``in_channels`` input channels."""
    return sum(
        conv_parameters(max(c_in, spec.groups), c_out, spec.kernel_size, spec.groups, bool(spec.bias))
        for (c_in, c_out), spec in zip(layer_channels(model, in_channels), model_layer_specs(model))
    )
