"""Whole-file execution: the stack on decoded audio, in one call.

Flow: source -> load -> stack -> **execute** -> sink -> engines. Input: waveforms ``(C, T)``
from ``load_audio``; output: float32 features ``(C_out, F)`` on the CPU with
``F = stack.geometry.output_length(T)`` (checked: the geometry is the contract).

* ``extract(audio, stack, device)``: one file (``runtime.chunk_seconds=null``).
* ``extract_batch(waveforms, stack, device)``: several files as one zero-padded batch
  ``(B, C, T_max)``, each result cut to its own length (the batch job; "Padded batches" in
  ``docs/geometry.md``).
* ``check_finite(features, path, samples)``: the one overflow check. Samples far outside [-1, 1]
  can overflow float32 arithmetic; features holding NaN/Inf are refused with an ``InputError``
  naming the input, before anything is written. ``extract``, ``chunked.py`` and the batch job's
  ``Work.compute`` call it.
* ``resolve_device(runtime.device)``: ``cpu``, ``cuda`` or ``auto`` as a ``torch.device``.

Long files go through ``chunked.py`` instead: the same frames, in bounded memory.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from conv_pipeline.config.schema import Device
from conv_pipeline.errors import ConfigError
from conv_pipeline.load.audio import Audio
from conv_pipeline.sink.writer import overflow_error
from conv_pipeline.stack.stack import ConvStack


# ---------------------------------------------------------------- computing features
def extract_batch(
    waveforms: Sequence[torch.Tensor], stack: ConvStack, device: torch.device = torch.device("cpu")
) -> list[torch.Tensor]:
    """Features of several files in one stack call: ``(C, T_i)`` each -> ``(C_out, F_i)`` each.

    The files are zero-padded to the longest into ``(B, C, T_max)``; the stack zeroes every
    item's positions past its own valid length between layers, so each result equals
    ``extract`` on that file alone; each is trimmed to
    ``stack.geometry.output_length(T_i)``. Float32, on the CPU.

    Equal up to float rounding: a batched conv may round differently from a single-file one
    (about 1e-7), which a norm over very few, nearly equal values (``layer_norm`` over 2
    channels, ``group_norm`` over 2 frames) can amplify; in float64 the results agree to ~1e-12.
    """
    if len(waveforms) == 1:
        with torch.inference_mode():
            y = stack(waveforms[0].to(device)[None])  # (C, T) -> (1, C, T) -> (1, C_out, F)
        outs = [y[0].float().cpu()]
    else:
        lengths = [int(w.shape[-1]) for w in waveforms]
        x = waveforms[0].new_zeros(len(waveforms), int(waveforms[0].shape[0]), max(lengths))  # (B, C, T_max)
        for i, w in enumerate(waveforms):
            x[i, :, : lengths[i]] = w
        with torch.inference_mode():
            y = stack(x.to(device), torch.tensor(lengths)).float().cpu()  # (B, C_out, F_max)
        outs = [y[i, :, : stack.geometry.output_length(n)] for i, n in enumerate(lengths)]
    for w, out in zip(waveforms, outs):  # the geometry module is the contract
        expected = stack.geometry.output_length(int(w.shape[-1]))
        if out.shape[-1] != expected:
            raise RuntimeError(f"internal error: stack gave {out.shape[-1]} frames, geometry predicts {expected}")
    return outs


def resolve_device(device: Device | str) -> torch.device:
    name = device.value if isinstance(device, Device) else str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device=cuda but no CUDA device is available; use runtime.device=cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"runtime.device must be one of cpu, cuda, auto, got {name!r}")
    return torch.device(name)


def check_finite(features: torch.Tensor, path: str, samples: Optional[torch.Tensor] = None) -> None:
    """Refuse features that overflow float32: ``InputError`` naming the input ``path`` when
    ``features`` (any shape) hold NaN or Inf values.

    Samples far outside [-1, 1] can make a stack's float32 arithmetic overflow; such features are
    never returned or written. ``samples``: the input waveform, whose peak the message reports (it
    is read only when the check fails); None where it is not at hand (chunked execution).
    """
    if features.device.type == "cpu" and not features.requires_grad:
        if bool(np.isfinite(features.numpy()).all()):  # numpy's loop: 20x torch's isfinite().all() here
            return
    elif bool(torch.isfinite(features).all()):
        return
    finite = torch.isfinite(features)
    peak = float(samples.abs().max()) if samples is not None else None
    raise overflow_error(path, int(features.numel() - finite.sum()), peak)


def extract(audio: Audio, stack: ConvStack, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Features ``(out_channels, frames)`` for one decoded file (float32, on the CPU).

    ``InputError`` when the file is too short for the stack, or when the features overflow
    (``check_finite``)."""
    geometry = stack.geometry
    expected = geometry.check_input_length(audio.frames, what=audio.info.path)
    with torch.inference_mode():
        x = audio.waveform.to(device)[None]  # (C, T) -> (1, C, T)
        y = stack(x)[0].float().cpu()  # (1, C_out, F) -> (C_out, F)
    if y.shape[-1] != expected:  # the geometry module is the contract; never write a wrong shape
        raise RuntimeError(f"internal error: stack gave {y.shape[-1]} frames, geometry predicts {expected}")
    check_finite(y, audio.info.path, audio.waveform)
    return y
