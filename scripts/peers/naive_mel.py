"""The naive loop a user would write instead of the batch job (scripts/bench_peers.py (a)):
every WAV/FLAC under IN_DIR decoded (soundfile), averaged to mono, resampled to 16 kHz
(torchaudio.functional.resample), turned into an ``(80, frames)`` mel power spectrogram with the
parameters of configs/model/mel.yaml (torchaudio MelSpectrogram, center=False) and saved as
OUT_DIR/<same relative path>.npy. One torch thread; ends with os._exit(0) unless --normal-exit.

    python scripts/peers/naive_mel.py IN_DIR OUT_DIR [--normal-exit]
"""

import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

torch.set_num_threads(1)
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, hop_length=160, n_mels=80, center=False)
for path in sorted(p for p in src.rglob("*") if p.suffix.lower() in (".wav", ".flac")):
    data, sr = sf.read(path, dtype="float32", always_2d=True)  # (frames, channels)
    x = torchaudio.functional.resample(torch.from_numpy(data).mean(dim=1), sr, 16000)
    out = dst / path.relative_to(src).with_suffix(".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, mel(x).numpy())
if "--normal-exit" not in sys.argv:
    sys.stdout.flush()
    os._exit(0)
