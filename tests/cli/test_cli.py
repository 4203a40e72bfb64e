"""`python -m conv_pipeline` end to end in a subprocess: outputs, values, and every bad input."""

import json
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from conv_pipeline.geometry import LayerGeometry, StackGeometry
from helpers.audio import make_audio
from helpers.reference import reference_features
from helpers.run import assert_one_line_error, cli_completed, run_cli


@pytest.mark.slow
def test_stereo_wav_default_model_resampled(tmp_path):
    wav = tmp_path / "song.wav"
    x = make_audio(wav, channels=2, frames=22050, sr=22050, subtype="PCM_16")
    out = tmp_path / "feats"
    proc = run_cli(f"input={wav}", f"output.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}/song.npy shape (128, 98)" in proc.stdout
    assert "layer  kernel  stride" in proc.stderr  # the per-layer summary
    y = np.load(out / "song.npy", allow_pickle=False)
    x16 = AF.resample(torch.from_numpy(x), 22050, 16000).numpy()  # the default preset runs at 16 kHz
    geo = StackGeometry([LayerGeometry(400, 160), LayerGeometry(3, 1, 1), LayerGeometry(3, 1, 1)])
    assert y.shape == (128, geo.output_length(x16.shape[1]))
    np.testing.assert_allclose(y, reference_features(out, x16), atol=1e-5, rtol=1e-5)
    record = json.loads((out / "manifest.jsonl").read_text().splitlines()[-1])
    assert record["status"] == "ok" and record["shape"] == [128, 98] and record["sample_rate"] == 16000
    # the same command again gives the same bytes (seeded weights)
    out2 = tmp_path / "again"
    assert run_cli(f"input={wav}", f"output.dir={out2}", cwd=tmp_path).returncode == 0
    assert np.array_equal(np.load(out2 / "song.npy"), y)


@pytest.mark.slow
def test_mono_flac_custom_stack_with_stride_padding_dilation(tmp_path):
    flac = tmp_path / "voice.flac"
    x = make_audio(flac, channels=1, frames=3001, sr=8000, subtype="PCM_24")
    out = tmp_path / "f"
    layers = "[{out_channels:6,kernel_size:7,stride:3,padding:2,dilation:2,activation:tanh},{out_channels:5,kernel_size:3,dilation:3,padding:1,groups:1,activation:gelu,norm:layer_norm}]"
    proc = run_cli(f"input={flac}", f"output.dir={out}", "audio.sample_rate=null", f"model.layers={layers}")
    assert proc.returncode == 0, proc.stderr
    y = np.load(out / "voice.npy")
    expected = math.floor((3001 + 2 * 2 - 2 * 6 - 1) / 3) + 1
    expected = math.floor((expected + 2 * 1 - 3 * 2 - 1) / 1) + 1
    assert y.shape == (5, expected)
    np.testing.assert_allclose(y, reference_features(out, x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_tutorial_on_ogg_as_npz(tmp_path):
    ogg = tmp_path / "clip.ogg"
    x = make_audio(ogg, channels=2, frames=2000, sr=16000, subtype="VORBIS")
    out = tmp_path / "d"
    proc = run_cli(f"input={ogg}", "model=tutorial", f"output.dir={out}", "output.format=npz")
    assert proc.returncode == 0, proc.stderr
    z = np.load(out / "clip.npz", allow_pickle=False)
    feats = z["features"]
    assert feats.shape == (3, 2000 - 4)
    np.testing.assert_allclose(feats, reference_features(out, x), atol=1e-5, rtol=1e-5)
    assert z["frame_times"].shape == (feats.shape[1],)
    np.testing.assert_allclose(z["frame_times"][:3], (np.arange(3) + 2) / 16000)  # centre of a 5-sample window
    assert int(z["sample_rate"]) == 16000 and int(z["hop"]) == 1 and int(z["receptive_field"]) == 5
    assert json.loads(str(z["config"]))["model"]["name"] == "tutorial"


@pytest.mark.slow
def test_multirun_jobs_write_to_their_own_folders(tmp_path):
    wav = tmp_path / "s.wav"
    make_audio(wav, channels=2, frames=100, sr=8000)
    proc = run_cli("-m", f"input={wav}", "model=tutorial", "model.layers.0.kernel_size=3,5,7", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    outs = sorted(tmp_path.glob("multirun/*/*/*/s.npy"))
    assert [np.load(p).shape for p in outs] == [(3, 98), (3, 96), (3, 94)]


@pytest.mark.slow
def test_different_model_into_same_output_dir_needs_overwrite(tmp_path):
    wav = tmp_path / "s.wav"
    make_audio(wav, channels=2, frames=100, sr=8000)
    out = tmp_path / "o"
    assert run_cli(f"input={wav}", "model=tutorial", f"output.dir={out}").returncode == 0
    proc = run_cli(f"input={wav}", "model=tutorial", "seed=1", f"output.dir={out}")
    assert_one_line_error(proc, "holds a different model's weights", "overwrite=true")
    assert run_cli(f"input={wav}", "model=tutorial", "seed=1", "overwrite=true", f"output.dir={out}").returncode == 0


def _nothing_written(out):
    return not out.exists() or not any(p.suffix in (".npy", ".npz") for p in out.rglob("*"))


@pytest.mark.parametrize("runner", [pytest.param("process", marks=pytest.mark.slow), "in_process"])
@pytest.mark.parametrize(
    "case",
    ["missing", "directory", "text", "corrupt", "zero_frames", "too_short", "mono_into_tutorial",
     "nan", "bad_layer", "groups", "unknown_activation", "no_input", "output_is_file"],
)
def test_bad_input_one_line_no_traceback_nothing_written(tmp_path, capfd, case, runner):
    """A real process, and (quick) the same ``main()`` in this process: the same one line."""
    out = tmp_path / "out"
    good = tmp_path / "good.wav"
    make_audio(good, channels=2, frames=800, sr=8000)
    args = {
        "missing": ([f"input={tmp_path / 'nope.wav'}"], ["nope.wav", "no such file"]),
        "directory": ([f"input={tmp_path}"], ["is a directory"]),
        "text": (None, ["not a readable audio file"]),
        "corrupt": (None, ["not a readable audio file"]),
        "zero_frames": (None, ["no audio frames"]),
        "too_short": ([f"input={good}", "model.layers.0.kernel_size=900", "model=tutorial"],
                      ["has 800 samples but the stack needs at least 900"]),
        "mono_into_tutorial": (None, ["1 channel(s) after audio.channels=keep but the stack takes 2 (model.in_channels=2)",
                                     "audio.channels=[0,0]", "model.in_channels=1"]),
        "nan": (None, ["NaN or Inf"]),
        "bad_layer": ([f"input={good}", "model.layers.0.stride=0"], ["model.layers[0].stride must be an integer >= 1, got 0"]),
        "groups": ([f"input={good}", "model=tutorial", "model.layers.0.groups=2"], ["groups=2 must divide out_channels=3"]),
        "unknown_activation": ([f"input={good}", "model.layers.0.activation=swish"], ["activation must be null or one of"]),
        "no_input": ([], ["no input given", "input="]),
        "output_is_file": ([f"input={good}", f"output.dir={good}"], ["is an existing file"]),
    }[case]
    argv, needles = args
    if argv is None:
        bad = tmp_path / f"{case}.wav"
        if case == "text":
            bad.write_text("hello\n" * 100)
        elif case == "corrupt":
            sf.write(bad, np.zeros((4000, 2), np.float32), 8000)
            bad.write_bytes(bad.read_bytes()[:20] + os.urandom(2000))
        elif case == "zero_frames":
            sf.write(bad, np.zeros((0, 2), np.float32), 8000)
        elif case == "mono_into_tutorial":
            make_audio(bad, channels=1, frames=800, sr=8000)
        elif case == "nan":
            data = np.zeros((800, 2), np.float32)
            data[5, 0] = np.nan
            sf.write(bad, data, 8000, subtype="FLOAT")
        argv = [f"input={bad}"] + (["model=tutorial"] if case == "mono_into_tutorial" else [])
        needles = [bad.name, *needles] if case != "mono_into_tutorial" else needles
    if case != "output_is_file":
        argv.append(f"output.dir={out}")
    proc = run_cli(*argv, cwd=tmp_path) if runner == "process" else cli_completed(argv, capfd)
    assert_one_line_error(proc, *needles)
    assert _nothing_written(out)
    assert not list(tmp_path.rglob(".*.tmp-*"))


@pytest.mark.slow
def test_unknown_config_key_is_refused_in_one_line(tmp_path):
    proc = run_cli("input=x.wav", "model.kernel=3", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr == (
        "conv_pipeline: error: unknown config key 'model.kernel' (did you mean model.frontend.kernel_size?); "
        "--help lists this command's keys\n")
