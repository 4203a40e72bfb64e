"""Batch processing of whole collections: many files -> features, resumable and failure-isolated.

Plain Python; Hydra stays in ``scripts/batch_process.py``. The job (``run_batch``):

1. checks the config (exit 2 before any audio is read), finds the inputs (a folder searched
   recursively, a glob, a text file with one path per line, or one audio file) and plans one
   output per input, mirroring the input tree under ``output.dir`` (``plan_outputs``);
2. fixes the stack's input channels once for the whole job (``model.in_channels``, the
   checkpoint, or with ``auto`` the first input's count after ``audio.channels``), builds the
   stack and writes ``model.safetensors`` and ``config.yaml`` to ``output.dir`` (refusing a
   different model or different audio settings unless ``overwrite=true``);
3. removes temporary files left by a killed run, records every input whose output already
   exists as ``skipped`` (outputs are written atomically, so existing means complete);
4. decodes and resamples the rest in ``runtime.num_workers`` threads (or worker processes with
   ``batch.workers=process``) while the main thread runs the stack on ``runtime.batch_size``
   files at a time (padded batch of files of similar length, each output trimmed to its own
   length, ``extract_batch``), and one writer thread writes each file's features atomically,
   then appends its manifest record.

Every input gets one record in ``output.dir/manifest.jsonl``. A file that cannot be used
(unreadable, corrupt, empty, too short, wrong channel count, NaN/Inf samples, a crashing
decoder) gets a ``failed`` record with a one-line message and the job goes on.

Step 4 is the engine (``engine.name``): ``local`` runs it in this process as above (``LocalEngine``);
``ray`` runs it as a Ray Data pipeline (``conv_pipeline.ray_engine``). Both share everything else
here: steps 1-3, what happens to a decoded batch or a long file (``Work``: the stack, the
atomic write, the record), the manifest and the summary. ``input`` and ``output.dir`` may be
local paths or fsspec URLs (``s3://...``); ``conv_pipeline.storage`` reads and writes them.
"""

from __future__ import annotations

from typing import Sequence

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
    ``pipeline.extract`` on that file alone; each is trimmed to
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


def extract(audio: Audio, stack: ConvStack, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Features ``(out_channels, frames)`` for one decoded file (float32, on the CPU).

    ``InputError`` when the file is too short for the stack, or when the features overflow
    (samples far outside [-1, 1] can make them Inf or NaN: such features are never returned)."""
    geometry = stack.geometry
    expected = geometry.check_input_length(audio.frames, what=audio.info.path)
    with torch.inference_mode():
        x = audio.waveform.to(device)[None]  # (C, T) -> (1, C, T)
        y = stack(x)[0].float().cpu()  # (1, C_out, F) -> (C_out, F)
    if y.shape[-1] != expected:  # the geometry module is the contract; never write a wrong shape
        raise RuntimeError(f"internal error: stack gave {y.shape[-1]} frames, geometry predicts {expected}")
    finite = torch.isfinite(y)
    if not bool(finite.all()):
        raise overflow_error(audio.info.path, int(y.numel() - finite.sum()), float(audio.waveform.abs().max()))
    return y
