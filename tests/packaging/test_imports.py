"""What each command imports (issue 13, item 4): ``--help``, ``summary=true`` (with and without an
input file), the batch script's help and summary, ``python -m conv_pipeline.inspect`` (its help,
a feature file, a folder, a plot), ``conv-pipeline --version`` and every kind of config error
never import torch (nor torchaudio, Ray or matplotlib unless drawing); a real run still works and
imports only what it uses.

Each command runs in a new interpreter under ``-X importtime``, which lists every module the
process imports (on stderr, one ``import time:`` line each), so the check sees the real entry
point and its real exit (``os._exit``). The real run's list holds torch: the check can see it.
Timings are not tested here: ``scripts/bench_startup.py`` measures them against ``import torch``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.audio import write_audio
from helpers.paths import ROOT, SCRIPT
from helpers.reference import reference_features

pytestmark = pytest.mark.slow  # every test here starts interpreters

NOT_NEEDED = ("torch", "torchaudio", "ray", "matplotlib")  # none of these without a run or a plot
NEVER_LOCAL = ("ray", "matplotlib", "fsspec", "s3fs", "transformers")  # a local run without plot=true


def run_traced(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``python -X importtime ARGS`` in ``cwd``; the finished process (stderr without the import
    lines) and the top-level names of every module it imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=str(cwd), capture_output=True,
                          text=True, timeout=300, env=env)
    traced = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in traced[1:]}  # [0]: the column header
    rest = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, rest), names


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """``song.wav`` (0.5 s, 16 kHz mono), ``clips/`` (two such files) and ``feats/`` (the real run's output)."""
    root = tmp_path_factory.mktemp("imports")
    write_audio(root / "song.wav", 0.5)
    write_audio(root / "clips" / "a.wav", 0.5, seed=1)
    write_audio(root / "clips" / "b.wav", 0.5, seed=2)
    return root


@pytest.fixture(scope="module")
def real_run(corpus) -> tuple[subprocess.CompletedProcess, set[str]]:
    return run_traced(["-m", "conv_pipeline", "input=song.wav", "output.dir=feats"], corpus)


def _console(name: str) -> list[str]:
    exe = Path(sys.executable).parent / name
    if not exe.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable}")
    return [str(exe)]


# (id, arguments after `python -X importtime`, exit status, text the output must hold)
COMMANDS = [
    ("help", ["-m", "conv_pipeline", "--help"], 0, "model: default, fbank, mel, mfcc, sinc, stft"),
    ("summary", ["-m", "conv_pipeline", "summary=true"], 0, "model default: 3 conv layers, 1 -> 128 channels"),
    ("summary-input", ["-m", "conv_pipeline", "summary=true", "input=song.wav"], 0, "input: 0.5 s = 8000 samples at 16000 Hz"),
    ("batch-help", [str(SCRIPT), "--help"], 0, "engine: local, ray"),
    ("batch-summary", [str(SCRIPT), "input=clips", "summary=true"], 0, "model default: 3 conv layers"),
    ("inspect-help", ["-m", "conv_pipeline.inspect", "--help"], 0, "--plot OUT.png"),
    ("inspect-file", ["-m", "conv_pipeline.inspect", "feats/song.npy"], 0, "(128, 48)"),
    ("inspect-folder", ["-m", "conv_pipeline.inspect", "feats"], 0, "song.npy"),
]

ERRORS = [  # (id, arguments, the one error line holds)
    ("typo", ["-m", "conv_pipeline", "input=song.wav", "inptu=x"], "unknown config key 'inptu'"),
    ("bad-type", ["-m", "conv_pipeline", "input=song.wav", "audio.sample_rate=abc"], "could not be converted to Integer"),
    ("bad-value", ["-m", "conv_pipeline", "input=song.wav", "runtime.batch_size=0"], "runtime.batch_size must be an integer >= 1"),
    ("bad-preset", ["-m", "conv_pipeline", "input=song.wav", "model=nope"], "no such model preset"),
    ("no-input", ["-m", "conv_pipeline"], "no input given"),
    ("null-node", ["-m", "conv_pipeline", "input=song.wav", "model.frontend.type=mel"], "start from a preset that has it"),
    ("help-bad-preset", ["-m", "conv_pipeline", "--help", "model=nope"], "no such model preset"),
    ("batch-typo", [str(SCRIPT), "input=clips", "batch.extention=[wav]"], "did you mean batch.extensions?"),
    ("batch-bad-value", [str(SCRIPT), "input=clips", "batch.workers=fork"], "batch.workers must be one of thread, process"),
]


@pytest.mark.parametrize("args, code, needle", [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_commands_that_need_no_model_import_no_torch(corpus, real_run, args, code, needle):
    proc, names = run_traced(args, corpus)
    assert proc.returncode == code and needle in proc.stdout, proc.stdout + proc.stderr
    assert "conv_pipeline" in names  # the trace sees the package's own imports
    assert not names & set(NOT_NEEDED), sorted(names & set(NOT_NEEDED))


@pytest.mark.parametrize("args, needle", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_config_errors_import_no_torch(corpus, args, needle):
    proc, names = run_traced(args, corpus)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert not names & set(NOT_NEEDED), sorted(names & set(NOT_NEEDED))


def test_version_imports_neither_torch_nor_hydra(corpus):
    from importlib import metadata

    proc, names = run_traced(_console("conv-pipeline") + ["--version"], corpus)
    assert proc.returncode == 0, proc.stderr
    assert f"torch {metadata.version('torch')}" in proc.stdout  # read from metadata, not from torch
    assert not names & {"torch", "torchaudio", "hydra", "omegaconf"}, names


def test_inspect_plot_imports_matplotlib_but_not_torch(corpus, real_run, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "song.png"
    proc, names = run_traced(["-m", "conv_pipeline.inspect", "feats/song.npy", "--plot", str(png)], corpus)
    assert proc.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", proc.stderr
    assert "matplotlib" in names and not names & {"torch", "torchaudio", "ray"}, names


def test_a_real_run_still_works_and_imports_what_it_uses(corpus, real_run):
    proc, names = real_run
    assert proc.returncode == 0, proc.stderr
    x, sr = sf.read(str(corpus / "song.wav"), dtype="float32", always_2d=True)
    y = np.load(corpus / "feats" / "song.npy")
    np.testing.assert_allclose(y, reference_features(corpus / "feats", x.T), rtol=1e-5, atol=1e-5)
    assert {"torch", "safetensors", "soundfile"} <= names  # what it uses, seen by the trace
    assert not names & set(NEVER_LOCAL), sorted(names & set(NEVER_LOCAL))


def test_a_local_batch_job_imports_no_ray_fsspec_or_matplotlib(corpus, tmp_path):
    proc, names = run_traced([str(SCRIPT), "input=clips", f"output.dir={tmp_path / 'out'}", "batch.progress=none"], corpus)
    assert proc.returncode == 0 and "2 ok" in proc.stdout, proc.stderr
    assert len(list((tmp_path / "out").rglob("*.npy"))) == 2
    assert "torch" in names and not names & set(NEVER_LOCAL), sorted(names & set(NEVER_LOCAL))


def test_a_16khz_mono_run_of_the_default_model_imports_no_torchaudio(real_run):
    proc, names = real_run  # no resampling, no mel filterbank: nothing of torchaudio is used
    assert proc.returncode == 0, proc.stderr
    assert "torchaudio" not in names
