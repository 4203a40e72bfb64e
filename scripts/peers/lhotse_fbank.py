"""lhotse's way to log-mel features for a folder (scripts/bench_peers.py (a)): a RecordingSet of
every WAV/FLAC under IN_DIR, cuts downmixed to mono and resampled to 16 kHz, then
``CutSet.compute_and_store_features`` with lhotse's ``Fbank`` (Kaldi-style 80-band log-mel,
25 ms / 10 ms, its own torch implementation; not numerically our mel), ``num_jobs=2``, one
``.npy`` per cut (``NumpyFilesWriter``) and the cut manifest (without the recordings: lhotse's
downmix keeps the mono audio in memory as FLAC bytes, which it cannot write to JSON). One torch
thread; ends normally.

    python scripts/peers/lhotse_fbank.py IN_DIR OUT_DIR
"""

import sys
from pathlib import Path

import torch
from lhotse import CutSet, Fbank, FbankConfig, MultiCut, NumpyFilesWriter, Recording, RecordingSet

if __name__ == "__main__":  # lhotse's worker processes import this file again
    torch.set_num_threads(1)
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    paths = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".wav", ".flac"))
    recordings = RecordingSet.from_recordings(
        Recording.from_file(p, recording_id=str(p.relative_to(src).with_suffix("")).replace("/", "__")) for p in paths
    )
    cuts = CutSet.from_manifests(recordings=recordings)
    cuts = CutSet.from_cuts(c.to_mono(mono_downmix=True) if isinstance(c, MultiCut) else c for c in cuts)
    cuts = cuts.resample(16000).compute_and_store_features(
        Fbank(FbankConfig(num_filters=80)), storage_path=dst, num_jobs=2, storage_type=NumpyFilesWriter
    )
    cuts.drop_recordings().to_file(dst / "cuts.jsonl.gz")
