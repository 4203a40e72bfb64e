"""``Extractor``: features of a waveform already in memory, as the CLI computes them for a file.

Flow: **api** -> plan -> load -> stack -> execute (no source and no sink: the waveform comes
from the caller and the features go back to it). An entry point like ``cli/``, and as thin:

* the config (``api/resolve.py``: a preset, a run's ``config.yaml`` or a composed config, plus
  keyword overrides) is resolved once into the plan the CLI uses (``config/plan.py:
  build_plan``), so a bad setting is the same one-line ``ConfigError``, raised by the constructor;
* the stack is ``stack/stack.py: build_stack`` with ``seed`` / ``model.checkpoint``: the CLI's
  weights (built once per input channel count when ``model.in_channels=auto``);
* each call runs the load stage on the samples (``api/waveform.py``: channel policy, resampling
  to ``audio.sample_rate``, ``audio.normalize``) and the execution ``engines/single.py`` chooses:
  ``execute/stream_file.py: extract_stream`` when ``runtime.chunk_seconds`` is set (the default),
  ``execute/whole.py: extract`` when it is null. The features equal, bit for bit, what
  ``python -m conv_pipeline`` writes for a file holding the same samples.

``Extractor(config)(waveform, sample_rate=RATE)`` -> ``Features``: ``features`` float32
``(C_out, F)`` (``(B, C_out, F)`` for a batch), a numpy array for numpy input and a CPU torch
tensor for torch input; ``frame_times`` float64 ``(F,)`` seconds (frame centres, as a ``.npz``
records them); ``sample_rate`` (Hz the stack ran at), ``hop``, ``receptive_field``, ``left_padding``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from conv_pipeline.api.resolve import resolve_config
from conv_pipeline.api.waveform import (
    NAME,
    ArrayBlocks,
    Batch,
    array_info,
    as_batch,
    check_length,
    check_sample_rate,
    whole_audio,
)
from conv_pipeline.config.plan import Plan, build_plan
from conv_pipeline.execute.stream_file import extract_stream
from conv_pipeline.execute.whole import extract, resolve_device
from conv_pipeline.geometry import StackGeometry
from conv_pipeline.load.signal import check_resample
from conv_pipeline.load.stream import AudioStream
from conv_pipeline.stack.spectral import fix_weights
from conv_pipeline.stack.stack import ConvStack, build_stack


@dataclass(frozen=True, eq=False)
class Features:
    """What one ``Extractor`` call returns.

    ``features``: float32 ``(C_out, F)``, or ``(B, C_out, F)`` for a ``(B, C, T)`` input (every
    item as if alone); numpy for numpy input, a CPU ``torch.Tensor`` for torch input.
    ``frame_times``: float64 ``(F,)``, the centre of each frame's receptive field in seconds
    (``geometry.frame_times``, the ``frame_times`` of a ``.npz``). ``sample_rate``: Hz the stack
    ran at (``audio.sample_rate``, else the input's). ``hop``, ``receptive_field``,
    ``left_padding``: in samples at that rate (``docs/geometry.md``).
    """

    features: np.ndarray | torch.Tensor
    frame_times: np.ndarray
    sample_rate: int
    hop: int
    receptive_field: int
    left_padding: int


class Extractor:
    """Features of in-memory waveforms with one config, as ``python -m conv_pipeline`` computes them.

    ``config``: a preset name (``"mel"``, ``"default"``: ``configs/model/``), a path to a
    ``config.yaml`` a run wrote (or its output folder: that run's settings and seed), or a
    composed config (``compose_config``'s ``Config``, an OmegaConf ``DictConfig``, a mapping).
    ``overrides``: config keys as keyword arguments, dotted keys through a dict
    (``**{"model.frontend.n_mels": 64}``) or a section as a mapping (``audio={"channels": "mono"}``);
    each is what ``KEY=VALUE`` on the command line sets. A bad setting raises ``ConfigError`` here.
    """

    def __init__(self, config: Any = "default", **overrides: Any) -> None:
        self.plan: Plan = build_plan(resolve_config(config, overrides), "file", need_input=False)
        self.device = resolve_device(self.plan.device)
        self._stacks: dict[int, ConvStack] = {}
        if self.plan.channels.count is not None:  # fixed before any audio: build (and check) it now
            self.stack_for(self.plan.channels.count)

    @property
    def geometry(self) -> StackGeometry:
        return self.plan.geometry

    @property
    def sample_rate(self) -> int | None:
        """Hz the stack runs at (``audio.sample_rate``); None: each input's own rate."""
        return self.plan.sample_rate

    def __repr__(self) -> str:
        g, rate = self.geometry, self.sample_rate or "input's"
        mode = "whole" if self.plan.chunk_seconds is None else f"chunks of {self.plan.chunk_seconds} s"
        return (f"Extractor(model={self.plan.model_name!r}, sample_rate={rate}, hop={g.hop}, "
                f"receptive_field={g.receptive_field}, {mode}, device={self.device.type})")

    def stack_for(self, channels: int) -> ConvStack:
        """The stack (``eval`` mode, on the run's device) for inputs of ``channels`` channels
        before ``audio.channels``; ``InputError`` when the config cannot take that many."""
        in_channels = self.plan.channels.stack_channels(int(channels), NAME)
        if in_channels not in self._stacks:
            cfg = self.plan.config
            self._stacks[in_channels] = fix_weights(build_stack(cfg.model, in_channels, seed=cfg.seed).to(self.device).eval())
        return self._stacks[in_channels]

    def __call__(self, waveform: Any, sample_rate: Any = None) -> Features:
        """Features of ``waveform`` (numpy or torch, ``(frames,)``, ``(channels, frames)`` or
        ``(batch, channels, frames)`` with equal-length items; float, or int16/int32 PCM) sampled
        at ``sample_rate`` Hz. Raises ``InputError`` (one line) for a bad input."""
        rate = check_sample_rate(sample_rate)
        batch = as_batch(waveform)
        stack = self.stack_for(batch.channels)
        audio = self.plan.audio
        target = self.plan.sample_rate or rate
        check_resample(NAME, rate, target, audio.resampler)
        check_length(self.geometry, batch.frames, rate, target)
        outs = [self._one(item, rate, batch, stack) for item in batch.data]  # (C_out, F) each
        features = np.stack(outs) if batch.batched else outs[0]
        g = self.geometry
        times = np.asarray(g.frame_times(int(features.shape[-1]), target), dtype=np.float64)
        return Features(torch.from_numpy(features) if batch.torch else features, times, target, g.hop,
                        g.receptive_field, g.left_padding)

    def _one(self, item: np.ndarray, rate: int, batch: Batch, stack: ConvStack) -> np.ndarray:
        """One item ``(C, T)`` through the load stage and the stack: ``(C_out, F)`` float32."""
        audio, chunk = self.plan.audio, self.plan.chunk_seconds
        info = array_info(batch.frames, batch.channels, rate, batch.dtype)
        if chunk is None:
            return extract(whole_audio(item, info, audio, self.plan.sample_rate or rate), stack, self.device).numpy()
        stream = AudioStream(ArrayBlocks(item, info, audio.channels), audio, chunk)
        return extract_stream(stream, stack, self.device).written
