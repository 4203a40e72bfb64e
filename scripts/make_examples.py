"""Write the small example files under data/ (deterministic; re-running gives the same bytes).

    python scripts/make_examples.py [--out data]

example_stereo.wav  2.5 s, 22.05 kHz, stereo, 16-bit PCM: a short melody of harmonic notes
                    panned left to right over a quiet noise floor, with a rising chirp.
example_mono.flac   3.0 s, 16 kHz, mono, 16-bit FLAC: a vowel-like buzz (pulse train through
                    three formant resonances) with pitch glides, and two short silences.
example_speech.wav  real (synthesised) English speech, 16 kHz mono 16-bit, from espeak-ng when it
                    is installed (`apt-get install espeak-ng`); skipped otherwise, the committed
                    file stays as it is.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf


def melody_stereo(sr: int = 22050, seconds: float = 2.5) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(sr * seconds)) / sr
    notes = [261.63, 329.63, 392.00, 523.25, 392.00, 329.63, 293.66, 261.63, 196.00, 261.63]
    note_len = seconds / len(notes)
    left = np.zeros_like(t)
    right = np.zeros_like(t)
    for i, f0 in enumerate(notes):
        on = (t >= i * note_len) & (t < (i + 1) * note_len)
        local = t[on] - i * note_len
        env = np.minimum(1.0, local / 0.01) * np.exp(-3.0 * local)
        tone = sum(np.sin(2 * np.pi * f0 * h * local) / h**1.5 for h in range(1, 6)) * env
        pan = i / (len(notes) - 1)
        left[on] += (1 - pan) * tone
        right[on] += pan * tone
    chirp = 0.15 * np.sin(2 * np.pi * (200 * t + 600 * t**2)) * (t > 1.5)
    noise = 0.01 * rng.standard_normal((2, t.size))
    x = np.stack([left + chirp, right + chirp]) + noise
    return (0.5 * x / np.abs(x).max()).T.astype(np.float32)  # (frames, 2)


def _resonator(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    """Two-pole resonance at ``freq`` Hz with bandwidth ``bw`` Hz (direct form, pure numpy)."""
    r = np.exp(-np.pi * bw / sr)
    a1, a2 = -2 * r * np.cos(2 * np.pi * freq / sr), r * r
    y = np.zeros_like(x)
    y1 = y2 = 0.0
    for n, v in enumerate(x):
        y0 = v - a1 * y1 - a2 * y2
        y[n] = y0
        y2, y1 = y1, y0
    return y


def buzz_mono(sr: int = 16000, seconds: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(1)
    n = int(sr * seconds)
    t = np.arange(n) / sr
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)  # pitch glides between 80 and 160 Hz
    phase = np.cumsum(f0 / sr)
    pulses = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(np.float64)
    voiced = sum(_resonator(pulses, f, bw, sr) for f, bw in ((700, 110), (1220, 120), (2600, 160)))
    gate = ~(((t > 0.9) & (t < 1.1)) | ((t > 2.0) & (t < 2.15)))  # two short silences
    x = voiced * gate + 0.005 * rng.standard_normal(n)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


SPEECH_TEXT = "Feature extraction turns sound into numbers. Every frame covers ten milliseconds of speech."


def speech(out: Path) -> bool:
    """Synthesise SPEECH_TEXT with espeak-ng, resampled to 16 kHz mono 16-bit. False if unavailable."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return False
    import torch
    import torchaudio.functional as AF

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-v", "en-us", "-s", "150", "-w", str(raw), SPEECH_TEXT], check=True)
        data, sr = sf.read(raw, dtype="float32")
    x = AF.resample(torch.from_numpy(data)[None], sr, 16000)[0].numpy()
    sf.write(out, 0.9 * x / max(1e-9, float(abs(x).max())), 16000, subtype="PCM_16")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "data"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    sf.write(out / "example_stereo.wav", melody_stereo(), 22050, subtype="PCM_16")
    sf.write(out / "example_mono.flac", buzz_mono(), 16000, subtype="PCM_16")
    if not speech(out / "example_speech.wav"):
        print("espeak-ng not found: data/example_speech.wav left as it is")
    for p in sorted(out.glob("example_*")):
        info = sf.info(p)
        print(f"{p}: {info.channels} ch, {info.samplerate} Hz, {info.frames} frames, {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
