"""librosa's way to the same features (scripts/bench_peers.py (a)): ``librosa.load(sr=16000)``
(mono average, soxr resampling) and ``librosa.feature.melspectrogram`` with the parameters of
configs/model/mel.yaml (n_fft 400, hop 160, 80 HTK bands without normalisation, power 2,
center=False) -> ``(80, frames)`` -> OUT_DIR/<same relative path>.npy. Ends normally.

    python scripts/peers/librosa_mel.py IN_DIR OUT_DIR
"""

import sys
from pathlib import Path

import librosa
import numpy as np

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for path in sorted(p for p in src.rglob("*") if p.suffix.lower() in (".wav", ".flac")):
    y, _ = librosa.load(path, sr=16000, mono=True)
    feats = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=400, hop_length=160, n_mels=80, center=False,
                                           power=2.0, htk=True, norm=None)
    out = dst / path.relative_to(src).with_suffix(".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, feats)
