"""The naive loop of naive_mel.py with our stack instead of the mel spectrogram
(scripts/bench_peers.py (a), ``model=default``): soundfile -> mono -> torchaudio resample to
16 kHz -> ``ConvStack.from_preset("default", in_channels=1)`` (seed 0, the weights the batch job
builds) -> ``(128, frames)`` -> np.save. One torch thread; ends with os._exit(0).

    python scripts/peers/naive_stack.py IN_DIR OUT_DIR
"""

import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from conv_pipeline.stack.stack import ConvStack

torch.set_num_threads(1)
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
stack = ConvStack.from_preset("default", in_channels=1).eval()
with torch.inference_mode():
    for path in sorted(p for p in src.rglob("*") if p.suffix.lower() in (".wav", ".flac")):
        data, sr = sf.read(path, dtype="float32", always_2d=True)  # (frames, channels)
        x = torchaudio.functional.resample(torch.from_numpy(data).mean(dim=1), sr, 16000)
        out = dst / path.relative_to(src).with_suffix(".npy")
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, stack(x[None, None])[0].numpy())
sys.stdout.flush()
os._exit(0)
