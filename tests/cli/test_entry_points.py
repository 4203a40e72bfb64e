"""The real commands (new processes): ``python -m conv_pipeline``, ``scripts/batch_process.py``
and the ``conv-pipeline`` / ``conv-pipeline-batch`` console scripts behave the same way on the
redesign issue's six divergences (one line on stderr, exit status 2, nothing written), and end
the same way (the fast exit) while letting a profiler or coverage write its data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from helpers.audio import write_audio  # noqa: E402
from helpers.paths import ROOT, SCRIPT  # noqa: E402

pytestmark = pytest.mark.slow  # every test here starts interpreters

BATCH = SCRIPT
SR = 16000


def _wav(path: Path, channels: int = 1, seed: int = 0) -> Path:
    write_audio(path, 0.5, sr=SR, seed=seed, channels=channels)
    return path


def _run(argv: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(argv, cwd=str(cwd), capture_output=True, text=True, timeout=120, env=env, **kw)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "conv_pipeline", *args]


def _batch(*args: str) -> list[str]:
    return [sys.executable, str(BATCH), "batch.progress=none", *args]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("entry")
    _wav(root / "song.wav")
    _wav(root / "mixed" / "a.wav", 1)
    _wav(root / "mixed" / "b.wav", 2, seed=1)
    return root


DIVERGENCES = [  # (overrides, the start of the one error line both commands print)
    (["model=mel", "model.frontend.sample_rate=22050"], "model.frontend.sample_rate=22050 disagrees with audio.sample_rate=16000"),
    (["model.layers=[{out_channels:16}]"], "model.layers[0].kernel_size is required"),
    (["runtime.chunk_seconds=inf"], "runtime.chunk_seconds must be null or a finite number of seconds > 0, got inf"),
]


@pytest.mark.parametrize("overrides, message", DIVERGENCES)
def test_both_commands_refuse_the_same_way(corpus, tmp_path, overrides, message):
    for argv, prog in ((_cli("input=song.wav", f"output.dir={tmp_path / 'a'}", *overrides), "conv_pipeline"),
                       (_batch("input=mixed", "audio.channels=mono", f"output.dir={tmp_path / 'b'}", *overrides), "batch_process")):
        proc = _run(argv, corpus)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"{prog}: error: {message}"), lines[0]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_typos_exit_2_with_a_did_you_mean(corpus, tmp_path):
    proc = _run(_cli("inptu=song.wav"), corpus)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "conv_pipeline: error: unknown config key 'inptu' (did you mean input?); --help lists this command's keys")
    proc = _run(_batch("input=mixed", f"output.dir={tmp_path / 'b'}", "batch.extention=[wav]"), corpus)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "batch_process: error: unknown config key 'batch.extention' (did you mean batch.extensions?); "
        "--help lists the batch job's keys")
    assert not (tmp_path / "b").exists()


def test_batch_summary_and_plot(corpus, tmp_path):
    out = tmp_path / "b"
    proc = _run(_batch("input=mixed", "audio.channels=mono", f"output.dir={out}", "summary=true"), corpus)
    assert proc.returncode == 0 and proc.stdout.startswith("model default: 3 conv layers"), proc.stderr
    assert not out.exists()  # nothing processed
    proc = _run(_batch("input=mixed", "audio.channels=mono", f"output.dir={out}", "plot=true"), corpus)
    assert proc.returncode == 2 and "plot=true draws one input's features" in proc.stderr and not out.exists()


def test_a_mixed_folder_is_refused_up_front_then_runs_with_the_fix(corpus, tmp_path):
    out = tmp_path / "b"
    proc = _run(_batch("input=mixed", f"output.dir={out}"), corpus)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "mixes channel counts" in lines[0], proc.stderr
    assert "audio.channels=mono" in lines[0] and not out.exists()
    proc = _run(_batch("input=mixed", f"output.dir={out}", "audio.channels=mono"), corpus)
    assert proc.returncode == 0 and "2 ok" in proc.stdout, proc.stderr


def test_console_scripts_and_closed_pipes(corpus):
    bindir = Path(sys.executable).parent
    for name in ("conv-pipeline", "conv-pipeline-batch"):
        exe = shutil.which(name, path=str(bindir))
        assert exe, f"{name} is not installed next to {sys.executable}"
        proc = _run([exe, "--help"], corpus)
        assert proc.returncode == 0 and "input" in proc.stdout, proc.stderr
    for argv in (_cli("--help"), _cli("input=song.wav", "summary=true"), _batch("input=mixed", "summary=true")):
        with subprocess.Popen(argv, cwd=str(corpus), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) as proc:
            proc.stdout.readline()
            proc.stdout.close()  # `| head -1`: the reader leaves
            err = proc.stderr.read().decode()
            assert proc.wait(timeout=60) == 0 and "Traceback" not in err, err


def test_profilers_and_coverage_still_write_their_data(corpus, tmp_path):
    prof = tmp_path / "run.prof"
    proc = _run([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "conv_pipeline", "input=song.wav",
                 f"output.dir={tmp_path / 'p'}"], corpus)
    assert proc.returncode == 0 and prof.stat().st_size > 0, proc.stderr
    pytest.importorskip("coverage")
    data = tmp_path / ".coverage"
    proc = _run([sys.executable, "-m", "coverage", "run", f"--data-file={data}", str(BATCH), "input=mixed",
                 "audio.channels=mono", f"output.dir={tmp_path / 'c'}", "batch.progress=none"], corpus)
    assert proc.returncode == 0 and data.stat().st_size > 0, proc.stderr


def test_version_names_the_package_and_what_computes_the_features(corpus):
    from importlib import metadata

    for argv in (_cli("--version"), [sys.executable, str(BATCH), "--version"]):
        proc = _run(argv, corpus)
        line = proc.stdout.strip()
        assert proc.returncode == 0 and line.startswith(f"conv_pipeline {metadata.version('conv_pipeline')} ("), proc.stderr
        assert f"torch {metadata.version('torch')}" in line and f"torchaudio {metadata.version('torchaudio')}" in line
        assert f"libsndfile {sf.__libsndfile_version__}" in line and "Hydra" not in line
