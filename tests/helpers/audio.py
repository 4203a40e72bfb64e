"""Writing test audio: deterministic tones plus noise, read back as the pipeline would see them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def make_audio(path: Path, channels: int = 2, frames: int = 4000, sr: int = 16000, seed: int = 0, **kw) -> np.ndarray:
    """Write deterministic noise-plus-tone audio; return what soundfile reads back, as (channels, frames)."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / sr
    data = 0.3 * np.sin(2 * np.pi * 440 * t)[:, None] + 0.2 * rng.standard_normal((frames, channels))
    data = np.clip(data, -0.99, 0.99).astype(np.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, **kw)
    back, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return back.T.copy()


def write_audio(path: Path, seconds: float = 0.3, sr: int = 16000, seed: int = 0, channels: int = 1,
                step: float = 50, **kw) -> Path:
    """``seconds`` of a (200 + ``step`` * ``seed``) Hz tone plus noise (at least one frame); returns ``path``."""
    rng = np.random.default_rng(seed)
    frames = max(1, int(round(seconds * sr)))
    t = np.arange(frames) / sr
    data = 0.3 * np.sin(2 * np.pi * (200 + step * seed) * t)[:, None] + 0.1 * rng.standard_normal((frames, channels))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(data, -0.99, 0.99).astype(np.float32), sr, **kw)
    return path
