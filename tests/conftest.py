"""Shared test helpers: make audio files, run the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent


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


def run_cli(*args: str, cwd: Path | None = None, module: str = "conv_pipeline", env: dict | None = None):
    """``python -m conv_pipeline ARGS`` in a subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=str(cwd or ROOT),
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
    )


def assert_one_line_error(proc, *needles: str) -> str:
    """Non-zero exit, no traceback, one non-empty line on stderr containing every needle."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def audio_file(tmp_path):
    return make_audio
