"""What a new user meets on the command line (issue 14): one-line errors whose fix works,
a closed pipe that ends quietly, multirun job folders that say which overrides made them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from helpers.audio import make_audio
from helpers.run import assert_one_line_error, cli_completed

from conv_pipeline.cli.overrides import check_command_line, unbalanced
from conv_pipeline.errors import ConfigError


@pytest.mark.parametrize("value,says", [
    ("[{out_channels: 4, kernel_size: 3}", "']' missing at the end"),
    ("[{out_channels: 4, kernel_size: 3]", "']' where '}' was expected"),
    ("{a: 1}]", "']' closes nothing"),
    ("[{a: 'x]'}]", ""),  # brackets inside quotes are text
    ("[1, 2]", ""),
])
def test_unbalanced_brackets_are_named(value, says):
    assert unbalanced(value).startswith(says) if says else unbalanced(value) == ""


def test_a_list_with_a_missing_bracket_is_not_told_to_quote_itself():
    with pytest.raises(ConfigError) as err:
        check_command_line(["model.layers=[{out_channels: 4, kernel_size: 3}"])
    assert "missing at the end" in str(err.value) and "quote" not in str(err.value)
    with pytest.raises(ConfigError) as err:  # a name with an apostrophe: quoting is the fix, and it works
        check_command_line(["input=it's.wav"])
    assert "input='it\\'s.wav'" in str(err.value)
    check_command_line(["input='it\\'s.wav'"])


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--cfg", "job"], ["--help"], ["summary=true", "model=wav2vec2_large"], ["--info"]])
def test_a_closed_pipe_ends_quietly(args, tmp_path):
    """The reader leaves at once (``... | true``): no traceback, nothing on stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "conv_pipeline", *args], cwd=str(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    proc.stdout.close()  # before the command writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, -13), err  # exit 0, or ended by SIGPIPE as `cat` is
    assert err == "", err


@pytest.mark.slow
def test_multirun_job_folders_record_their_overrides(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_audio(tmp_path / "a.wav", channels=1, frames=8000, sr=16000)
    proc = cli_completed(["-m", "seed=1,2", "input=a.wav", "hydra.sweep.dir=sweep"], capfd)
    assert proc.returncode == 0, proc.stderr
    for num, seed in ((0, 1), (1, 2)):
        job = tmp_path / "sweep" / str(num)
        assert (job / "overrides.txt").read_text().splitlines() == [f"seed={seed}", "input=a.wav"]
        assert yaml.safe_load((job / "config.yaml").read_text())["seed"] == seed
    assert not np.array_equal(np.load(tmp_path / "sweep/0/a.npy"), np.load(tmp_path / "sweep/1/a.npy"))


@pytest.mark.slow
def test_an_interpolated_output_dir_names_each_job(tmp_path, capfd, monkeypatch):
    """The README's example: one output folder per job, named by its swept overrides."""
    monkeypatch.chdir(tmp_path)
    make_audio(tmp_path / "a.wav", channels=1, frames=8000, sr=16000)
    proc = cli_completed(["-m", "model=default,mel", "seed=1", "input=a.wav", "hydra.sweep.dir=sweep",
                          "output.dir=feats/${hydra:job.override_dirname}"], capfd)
    assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / "feats/model=default,seed=1/a.npy").shape[0] == 128
    assert np.load(tmp_path / "feats/model=mel,seed=1/a.npy").shape[0] == 80


def test_inspect_of_an_audio_file_says_what_inspect_reads(tmp_path, capfd):
    from conv_pipeline.inspect.__main__ import main

    make_audio(tmp_path / "song.wav", channels=2, frames=44100, sr=44100)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "song.wav")])
    err = capfd.readouterr().err
    proc = subprocess.CompletedProcess([], exit_.value.code, "", err)
    assert exit_.value.code == 2
    assert_one_line_error(proc, "an audio file (44100 Hz, 2 channel(s), 1.00 s), not a feature file",
                          "a .npy/.npz feature file or an output folder", "python -m conv_pipeline input=")
