"""The one-file script a user would write instead of ``python -m conv_pipeline input=F model=mel``
(scripts/bench_peers.py (b)): ``soundfile.read`` of a 16 kHz mono file, torchaudio's
MelSpectrogram with the parameters of configs/model/mel.yaml (center=False) on the whole file
-> ``(80, frames)`` -> np.save, then os._exit(0). Torch's default threads.

    python scripts/peers/whole_mel.py IN_FILE OUT_FILE
"""

import os
import sys

import numpy as np
import soundfile as sf
import torch
import torchaudio

data, sr = sf.read(sys.argv[1], dtype="float32")  # (frames,)
mel = torchaudio.transforms.MelSpectrogram(sample_rate=sr, n_fft=400, hop_length=160, n_mels=80, center=False)
np.save(sys.argv[2], mel(torch.from_numpy(data)).numpy())
sys.stdout.flush()
os._exit(0)
