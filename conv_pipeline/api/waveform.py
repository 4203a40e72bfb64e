"""A waveform already in memory, through the load stage as a decoded file would go.

Flow: **api** -> plan -> **load** -> stack -> execute. ``as_batch`` checks and converts what the
caller gives (numpy or torch; ``(frames,)``, ``(channels, frames)`` or ``(batch, channels,
frames)``; any float dtype, or int16/int32 PCM scaled as soundfile reads it: ``x / 2**15``,
``x / 2**31``) into float32 ``(batch, channels, frames)``, refusing what a file could not hold
(complex, empty, NaN/Inf) with one-line ``InputError``s. Then each item goes through
``load/signal.py`` exactly as ``load/audio.py: load_audio`` (whole) or ``load/stream.py:
AudioStream`` (chunked) apply it to a decoded file: the channel policy, resampling to the
config's rate, ``audio.normalize``:

* ``whole_audio(item, ...)``: an ``Audio`` (``(C', T')`` at the target rate) for ``execute/whole.py: extract``;
* ``ArrayBlocks``: the item as ``BlockReader``-like blocks (``(C', n)`` at its own rate, the
  policy applied per block, in the decoder's memory layout), which ``AudioStream`` resamples and
  normalises for ``execute/stream_file.py: extract_stream``.

So the samples the stack sees are the ones a WAV file holding the same numbers gives the CLI.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from conv_pipeline.config.channels import policy_channel_count
from conv_pipeline.config.checks import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from conv_pipeline.config.schema import AudioConfig
from conv_pipeline.errors import InputError
from conv_pipeline.geometry import StackGeometry
from conv_pipeline.load.audio import Audio, AudioInfo
from conv_pipeline.load.signal import (
    apply_channel_policy,
    normalize_waveform,
    resample,
    resampled_length,
)

NAME = "waveform"  # how messages name the input
PCM_SCALE = {"int16": 2.0**-15, "int32": 2.0**-31}  # libsndfile's integer -> float scaling
SHAPES = "(frames,), (channels, frames) or (batch, channels, frames)"


@dataclass(frozen=True)
class Batch:
    """The caller's waveform as float32 ``(batch, channels, frames)`` numpy (C-contiguous).
    ``torch``: it came as a tensor; ``batched``: it had a batch axis; ``dtype``: its own dtype."""

    data: np.ndarray
    torch: bool
    batched: bool
    dtype: str

    @property
    def channels(self) -> int:
        return int(self.data.shape[1])

    @property
    def frames(self) -> int:
        return int(self.data.shape[2])


def check_sample_rate(sample_rate: Any) -> int:
    """The input's rate as an ``int``; ``InputError`` when missing, not an integer or out of range."""
    if sample_rate is None:
        raise InputError(f"sample_rate is required: call extractor({NAME}, sample_rate=RATE) with the samples' rate in Hz")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral):
        raise InputError(
            f"sample_rate must be a positive integer (Hz), got {sample_rate!r} ({type(sample_rate).__name__}); "
            "pass e.g. sample_rate=16000"
        )
    rate = int(sample_rate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InputError(
            f"sample_rate={rate} is outside the rates this tool takes ({MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz); "
            "pass the samples' rate in Hz"
        )
    return rate


def _float32(waveform: Any) -> tuple[np.ndarray, bool, str]:
    """``waveform`` as float32 numpy of its own shape, ints scaled as PCM; ``(array, is_torch, dtype)``."""
    if isinstance(waveform, torch.Tensor):
        x = waveform.detach()
        dtype = str(x.dtype).replace("torch.", "")
        if x.is_complex() or dtype == "bool" or not (x.is_floating_point() or dtype in PCM_SCALE):
            raise InputError(_dtype_message(dtype))
        x = x.to("cpu", torch.float32)
        if dtype in PCM_SCALE:
            x = x * PCM_SCALE[dtype]  # exact: a power of two
        return x.contiguous().numpy(), True, dtype
    if isinstance(waveform, (np.ndarray, np.generic)):
        dtype = waveform.dtype.name
        if waveform.dtype.kind != "f" and dtype not in PCM_SCALE:
            raise InputError(_dtype_message(dtype))
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes Inf, refused below
            x = np.asarray(waveform).astype(np.float32, order="C")  # a copy: the caller's array is never changed
        if dtype in PCM_SCALE:
            x *= np.float32(PCM_SCALE[dtype])
        return x, False, dtype
    raise InputError(
        f"{NAME} must be a numpy array or a torch tensor of samples, got {type(waveform).__name__}; "
        "wrap it with numpy.asarray"
    )


def _dtype_message(dtype: str) -> str:
    what = "complex samples" if "complex" in dtype else f"samples of dtype {dtype}"
    return (f"{NAME} holds {what}; give real float samples (within [-1, 1]) or int16/int32 PCM, "
            "e.g. numpy.real(x).astype('float32')")


def as_batch(waveform: Any) -> Batch:
    """Check and convert ``waveform`` (see the module docstring); ``InputError`` for a wrong
    type, dtype or number of dimensions, an empty input, more channels than frames (a
    ``(frames, channels)`` array, as ``soundfile.read`` returns, must be transposed) or NaN/Inf."""
    x, is_torch, dtype = _float32(waveform)
    shape = tuple(int(n) for n in x.shape)
    if x.ndim not in (1, 2, 3):
        raise InputError(f"{NAME} has shape {shape} ({x.ndim} dimensions); give {SHAPES}")
    data = x.reshape((1,) * (3 - x.ndim) + shape)  # (T,) -> (1, 1, T); (C, T) -> (1, C, T)
    if data.size == 0:
        raise InputError(f"{NAME} is empty (shape {shape}); give {SHAPES} with at least one channel and sample")
    if data.shape[1] > data.shape[2]:
        raise InputError(
            f"{NAME} has shape {shape}: {data.shape[1]} channels of {data.shape[2]} samples; give {SHAPES} "
            "(soundfile.read returns (frames, channels): pass its transpose, data.T)"
        )
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        raise InputError(f"{NAME}: contains {bad} NaN or Inf sample(s); replace them (e.g. numpy.nan_to_num) first")
    return Batch(np.ascontiguousarray(data), is_torch, x.ndim == 3, dtype)


def check_length(geometry: StackGeometry, frames: int, rate: int, target: int) -> None:
    """``InputError`` when ``frames`` samples at ``rate`` Hz, once at ``target`` Hz, give the stack
    no frame; the message gives the fewest samples that do, at the input's rate (and the stack's)."""
    if geometry.output_length(resampled_length(frames, rate, target)) >= 1:
        return
    need = geometry.min_input_length  # at target Hz
    at_input = (need - 1) * rate // target + 1  # fewest T with ceil(target * T / rate) >= need
    stack_rate = "" if rate == target else f"{need} at the stack's {target} Hz, "
    raise InputError(
        f"{NAME} has {frames} samples at {rate} Hz but the stack needs at least {at_input} ({stack_rate}receptive "
        f"field {geometry.receptive_field}, left padding {geometry.left_padding}); pass a longer {NAME}"
    )


def array_info(frames: int, channels: int, rate: int, dtype: str) -> AudioInfo:
    """What a decoded file's header would say about an in-memory item."""
    return AudioInfo(NAME, rate, channels, frames, "array", dtype)


def whole_audio(item: np.ndarray, info: AudioInfo, audio: AudioConfig, target: int) -> Audio:
    """One item ``(C, T)`` float32 as ``load_audio`` returns a file holding it: the channel policy,
    resampled to ``target`` Hz, normalised when ``audio.normalize``; ``(C', T')``."""
    wave = torch.from_numpy(np.ascontiguousarray(item))  # (C, T), the decoder's layout after its transpose
    wave = apply_channel_policy(wave, audio.channels, NAME)
    wave = resample(wave, info.sample_rate, target, audio.resampler)
    if audio.normalize:
        wave = normalize_waveform(wave)
    return Audio(wave.contiguous(), target, info)


class ArrayBlocks:
    """One item as the blocks ``load/blocks.py: BlockReader`` decodes from a file: float32
    ``(C', n)`` at the item's own rate, ``block_frames`` frames each (``AudioStream`` sets it),
    the channel policy applied per block. Re-iterable, as ``AudioStream`` needs."""

    def __init__(self, item: np.ndarray, info: AudioInfo, policy: Any) -> None:
        self.frames_tc = np.ascontiguousarray(item.T)  # (C, T) -> (T, C): the decoder's interleaved layout
        self.info = info
        self.path = info.path
        self.policy = policy
        self.channels = policy_channel_count(policy if isinstance(policy, str) else tuple(policy), info.channels)
        self.block_frames = info.frames
        self.frames_read: int | None = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        step = max(1, int(self.block_frames))
        for start in range(0, self.info.frames, step):
            block = torch.from_numpy(self.frames_tc[start : start + step]).t()  # (n, C) -> (C, n), a view
            yield apply_channel_policy(block, self.policy, NAME)
        self.frames_read = self.info.frames
