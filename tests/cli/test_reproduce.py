"""A run reproduced from its own ``config.yaml`` (``--config-dir OUT --config-name config``, or a
renamed copy of it): the same features bit for bit, the recorded model and seed, never a silent
fall-back to the packaged default model; the batch job's ``config.yaml`` reruns too."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml
from helpers.audio import make_audio
from helpers.run import assert_one_line_error, cli_completed, run_cli, run_script

# a run far from the packaged default: another preset with layers appended, another seed, resampled
RUN = ["model=tutorial", "seed=7", "audio.sample_rate=8000",
       "+model.layers=[{out_channels: 5, kernel_size: 3, activation: tanh}]"]


@pytest.fixture
def first_run(tmp_path):
    """``a.wav`` (44.1 kHz stereo) run with ``RUN`` into ``tmp_path/out``; ``b.wav`` a copy of it."""
    make_audio(tmp_path / "a.wav", channels=2, frames=44100, sr=44100, seed=3)
    shutil.copy(tmp_path / "a.wav", tmp_path / "b.wav")
    proc = run_cli("input=a.wav", "output.dir=out", *RUN, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return tmp_path


@pytest.mark.slow
def test_a_run_is_reproduced_from_its_config_file_and_a_renamed_copy(first_run):
    tmp = first_run
    want = np.load(tmp / "out" / "a.npy")
    shutil.copy(tmp / "out" / "config.yaml", tmp / "out" / "myrun.yaml")
    for name, out in (("config", "again"), ("myrun", "renamed")):
        proc = run_cli("--config-dir", "out", "--config-name", name, "input=b.wav", f"output.dir={out}", cwd=tmp)
        assert proc.returncode == 0, proc.stderr
        got = np.load(tmp / out / "b.npy")
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), name
        written = yaml.safe_load((tmp / out / "config.yaml").read_text())
        assert written["seed"] == 7 and written["model"]["name"] == "tutorial+custom"
        assert written["audio"]["sample_rate"] == 8000 and written["model"]["layers"][-1]["out_channels"] == 5
    # the reference is no accident of the defaults: the packaged default model gives other features
    proc = run_cli("input=b.wav", "output.dir=plain", cwd=tmp)
    assert proc.returncode == 0 and np.load(tmp / "plain" / "b.npy").shape != want.shape


@pytest.mark.slow
def test_a_rerun_takes_overrides_and_refuses_another_model(first_run, capfd, monkeypatch):
    tmp = first_run
    monkeypatch.chdir(tmp)
    proc = cli_completed(["--config-dir", "out", "--config-name", "config", "input=b.wav", "output.dir=s8",
                          "seed=8"], capfd)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load((tmp / "s8" / "config.yaml").read_text())["seed"] == 8
    # without output.dir: where any run of that model writes, not into the recorded folder
    proc = cli_completed(["--config-dir", "out", "--config-name", "config", "input=b.wav"], capfd)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp / "feats" / "tutorial+custom" / "b.npy"), np.load(tmp / "out" / "a.npy"))
    assert not (tmp / "out" / "b.npy").exists()
    assert not np.array_equal(np.load(tmp / "s8" / "b.npy"), np.load(tmp / "out" / "a.npy"))
    line = assert_one_line_error(
        cli_completed(["--config-dir", "out", "--config-name", "config", "input=b.wav", "model=mel"], capfd),
        "model=mel", "fixes the model")
    assert "Traceback" not in line
    # what the file records about the run (the versions that made it) is no setting: accepted, left out
    text = (tmp / "out" / "config.yaml").read_text()
    (tmp / "out" / "stamped.yaml").write_text(text if "versions:" in text else text + "versions:\n  torch: '0.0'\n")
    proc = cli_completed(["--config-dir", "out", "--config-name", "stamped", "input=b.wav", "output.dir=st"], capfd)
    assert proc.returncode == 0 and np.array_equal(np.load(tmp / "st" / "b.npy"), np.load(tmp / "out" / "a.npy"))
    (tmp / "out" / "typo.yaml").write_text((tmp / "out" / "config.yaml").read_text().replace("seed:", "sede:"))
    assert_one_line_error(cli_completed(["--config-dir", "out", "--config-name", "typo", "input=b.wav"], capfd),
                          "unknown config key 'sede'", "did you mean seed?")


@pytest.mark.slow
def test_a_hydra_config_named_like_the_packaged_one_is_refused_not_shadowed(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("defaults:\n  - config\n  - _self_\nseed: 3\n")
    proc = cli_completed(["--config-dir", str(tmp_path), "--config-name", "config", "input=x.wav"], capfd)
    assert proc.returncode == 2
    assert_one_line_error(proc, "has a defaults list", "rename it")


@pytest.mark.slow
def test_a_batch_jobs_config_reruns_in_the_batch_job_and_on_one_file(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    make_audio(corpus / "a.wav", channels=1, frames=16000, sr=16000, seed=5)
    proc = run_script("input=corpus", "output.dir=b1", "model=mel", "seed=3", "model.frontend.n_mels=40", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    want = np.load(tmp_path / "b1" / "a.npy")
    proc = run_script("--config-dir", "b1", "--config-name", "config", "input=corpus", "output.dir=b2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "b2" / "a.npy"), want)
    # one file through the single-file command: the batch-only keys are left out, the features
    # agree (the batch job runs whole files, the command chunks: float32 rounding apart)
    proc = run_cli("--config-dir", "b1", "--config-name", "config", "input=corpus/a.wav", "output.dir=one", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = np.load(tmp_path / "one" / "a.npy")
    assert got.shape == want.shape == (40, 98)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
