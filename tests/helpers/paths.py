"""Files of the repository the tests use."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "batch_process.py"  # the batch job's command line
MONO = ROOT / "data" / "example_mono.flac"  # 3.0 s, 16 kHz, 1 channel
STEREO = ROOT / "data" / "example_stereo.wav"  # 2.5 s, 22.05 kHz, 2 channels
