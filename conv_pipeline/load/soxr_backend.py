"""``audio.resampler=soxr``: libsoxr (the ``soxr`` package, quality "HQ"), whole and streaming.

Flow: source -> **load** -> stack -> execute -> sink -> engines. ``signal.resample`` calls
``soxr_resample`` for a whole waveform ``(C, T) -> (C, ceil(new * T / orig))``;
``stream.AudioStream`` uses ``SoxrStream`` block by block (``push``/``flush``, the same API as
``stream.StreamingResampler``). Both give torchaudio's length: soxr's own output (about
``round(new * T / orig)`` samples) is trimmed, or padded with zeros at the end, to
``ceil(new * T / orig)``. Streamed blocks concatenate to the whole-signal result (libsoxr's
streaming and one-shot paths run the same filter; measured equal to float32 rounding).

Not equal to ``torchaudio.functional.resample``: a different filter (see ``AudioConfig``).
``config.checks.check_resampler`` refuses ``soxr`` before any file is read when the package is
missing; ``require_soxr`` says the same to direct Python callers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from conv_pipeline.errors import ConfigError

QUALITY = "HQ"


def require_soxr() -> Any:
    """The ``soxr`` module, or a one-line ``ConfigError`` naming ``pip install soxr``."""
    try:
        import soxr
    except ImportError:
        raise ConfigError(
            "audio.resampler=soxr needs the soxr package, which is not installed: pip install soxr "
            "(or set audio.resampler=torchaudio)"
        ) from None
    return soxr


def fit_length(y: np.ndarray, frames: int) -> np.ndarray:
    """``y`` ``(T', C)`` trimmed, or padded with zeros at the end, to ``frames`` rows."""
    if y.shape[0] >= frames:
        return y[:frames]
    return np.concatenate([y, np.zeros((frames - y.shape[0], y.shape[1]), y.dtype)])


def soxr_resample(waveform: torch.Tensor, orig: int, new: int, frames: int) -> torch.Tensor:
    """``(C, T)`` at ``orig`` Hz -> ``(C, frames)`` at ``new`` Hz through libsoxr."""
    soxr = require_soxr()
    x = np.ascontiguousarray(waveform.detach().cpu().numpy().T)  # (T, C)
    y = fit_length(soxr.resample(x, orig, new, quality=QUALITY), frames)
    return torch.from_numpy(np.ascontiguousarray(y.T)).to(waveform.device)


class SoxrStream:
    """libsoxr on a stream of ``(C, n)`` blocks: ``push`` returns what the blocks complete,
    ``flush`` the rest; the concatenation has ``ceil(new * frames / orig)`` samples."""

    def __init__(self, orig: int, new: int, channels: int, dtype=torch.float32) -> None:
        soxr = require_soxr()
        self.orig, self.new, self.channels = int(orig), int(new), int(channels)
        self.np_dtype = np.float64 if dtype == torch.float64 else np.float32
        self.stream = soxr.ResampleStream(self.orig, self.new, self.channels, dtype=self.np_dtype, quality=QUALITY)
        self.frames_in = 0
        self.frames_out = 0

    def push(self, x: torch.Tensor) -> torch.Tensor:
        self.frames_in += int(x.shape[-1])
        block = np.ascontiguousarray(x.detach().cpu().numpy().T, dtype=self.np_dtype)  # (n, C)
        return self._emit(self.stream.resample_chunk(block, last=False))

    def flush(self) -> torch.Tensor:
        y = self.stream.resample_chunk(np.zeros((0, self.channels), self.np_dtype), last=True)
        keep = -(-self.new * self.frames_in // self.orig) - self.frames_out  # torchaudio's length, in all
        if keep < 0:
            raise RuntimeError("internal error: soxr gave more samples than ceil(new * frames / orig)")
        return self._emit(fit_length(y, keep))

    def _emit(self, y: np.ndarray) -> torch.Tensor:
        self.frames_out += int(y.shape[0])
        return torch.from_numpy(np.ascontiguousarray(y.T))
