"""The "done when" of issue 16's presets through the pipeline: ``model=mfcc``, ``model=fbank`` and
``model=mel model.frontend.center=true`` equal their torchaudio references through the single-file
pipeline (whole and ``runtime.chunk_seconds=0.37``, with npz frame metadata), through the CLI, and
in a batch job whose padded batches hold files of different lengths."""

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers.audio import make_audio
from helpers.run import run_cli, run_pipeline
from helpers.presets import CASES, PRESETS, close

def loaded(path):
    data, sr = sf.read(path, dtype="float32")
    assert sr == 16000
    return torch.from_numpy(data)


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("chunk", [None, 0.37])
def test_pipeline_equals_reference(tmp_path, preset, chunk):
    audio = tmp_path / "in.wav"
    make_audio(audio, channels=1, frames=16000 * 2 + 123, seed=3, subtype="FLOAT")
    run_pipeline(audio, tmp_path / "out", *PRESETS[preset], "output.format=npz",
                 f"runtime.chunk_seconds={'null' if chunk is None else chunk}")
    with np.load(tmp_path / "out" / "in.npz") as z:
        got, starts, hop = torch.from_numpy(z["features"]), z["frame_starts"], int(z["hop"])
    ref = CASES[preset][1](loaded(audio))
    close(preset, got, ref)
    assert hop == 160 and starts[0] == (-200 if preset == "mel" else 0) and len(starts) == ref.shape[-1]


@pytest.mark.slow
def test_cli_mfcc_chunked(tmp_path):
    audio = tmp_path / "a.wav"
    make_audio(audio, channels=1, frames=16000 + 4321, seed=5, subtype="FLOAT")
    proc = run_cli(f"input={audio}", f"output.dir={tmp_path / 'out'}", "model=mfcc", "runtime.chunk_seconds=0.37")
    assert proc.returncode == 0, proc.stderr
    close("mfcc", torch.from_numpy(np.load(tmp_path / "out" / "a.npy")), CASES["mfcc"][1](loaded(audio)))


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(PRESETS))
def test_batch_job_padded_batches_equal_reference(tmp_path, preset):
    from conv_pipeline.config.compose import compose_config
    from conv_pipeline.engines.job import run_batch

    lengths = {"a.wav": 16000 + 77, "b.wav": 9100, "c.wav": 5555}
    for i, (name, n) in enumerate(lengths.items()):
        make_audio(tmp_path / "in" / name, channels=1, frames=n, seed=i, subtype="FLOAT")
    out = tmp_path / "out"
    cfg = compose_config([f"input={tmp_path / 'in'}", f"output.dir={out}", *PRESETS[preset],
                          "runtime.batch_size=3", "batch.progress=none"], config_name="batch")
    assert run_batch(cfg).exit_code == 0
    for name in lengths:
        ref = CASES[preset][1](loaded(tmp_path / "in" / name))
        close(preset, torch.from_numpy(np.load(out / name.replace(".wav", ".npy"))), ref)
