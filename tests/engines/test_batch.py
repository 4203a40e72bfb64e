"""The batch job with the local engine (issue 3): ``conv_pipeline.engines.job`` and
``scripts/batch_process.py``.

Every feature array is checked against the single-file path (``engines.single.run``, which is
what ``python -m conv_pipeline`` runs, and once the CLI itself) with the batch job's weights
(``model.checkpoint=output.dir/model.safetensors``): an independent computation, one file at a
time, no padding. Audio is generated with soundfile in ``tmp_path``; stacks are tiny.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conv_pipeline.config.schema import AudioConfig, LayerConfig
from conv_pipeline.engines.job import run_batch
from conv_pipeline.errors import ConfigError, InputError, OutputError
from conv_pipeline.load.audio import load_audio
from conv_pipeline.sink.manifest import MANIFEST_NAME, iter_records, read_manifest
from conv_pipeline.sink.outputs import OutputLock as _OutputLock
from helpers.audio import write_audio
from helpers.files import files_under, temp_files
from helpers.jobs import LAYERS_CLI, SR, batch_cfg, single_file
from helpers.paths import SCRIPT
from helpers.run import run_script


def current(out: Path) -> dict:
    """The manifest's current record per input."""
    return read_manifest(out)


# ---------------------------------------------------------------- the job end to end (CLI)
def _mixed_corpus(root: Path) -> dict[str, str]:
    """Good files in nested folders plus broken ones; returns {relative path: expected status}."""
    write_audio(root / "a/b/two.flac", 0.3, sr=8000, seed=1)  # every file is mono: the job is
    write_audio(root / "a/one.wav", 0.5, sr=16000, seed=2)
    write_audio(root / "c/three.wav", 0.7, sr=22050, seed=3)
    write_audio(root / "c/d/e/four.flac", 1.1, sr=16000, seed=4)
    write_audio(root / "c/d/five.wav", 0.05, sr=16000, seed=5)
    (root / "bad").mkdir()
    (root / "bad/corrupt.wav").write_bytes(b"RIFF\x00\x01garbage" + os.urandom(300))
    (root / "bad/empty.wav").write_bytes(b"")
    write_audio(root / "bad/short.wav", 3 / 8000, sr=8000)  # 3 samples
    write_audio(root / "bad/cut.flac", 0.3, sr=16000, seed=6)  # then cut in the middle of its data
    (root / "bad/cut.flac").write_bytes((root / "bad/cut.flac").read_bytes()[:3000])
    nan = np.full((800, 1), 0.1, np.float32)
    nan[100] = np.nan
    sf.write(str(root / "bad/nan.wav"), nan, 8000, subtype="FLOAT")
    (root / "notes.txt").write_text("not audio, not picked up")
    return {
        "a/b/two.flac": "ok",
        "a/one.wav": "ok",
        "c/three.wav": "ok",
        "c/d/e/four.flac": "ok",
        "c/d/five.wav": "ok",
        "bad/corrupt.wav": "not a readable audio file",
        "bad/empty.wav": "empty file",
        "bad/short.wav": "needs at least",
        "bad/cut.flac": "truncated or corrupt",
        "bad/nan.wav": "NaN",
    }


@pytest.mark.slow
def test_cli_job_on_a_broken_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    expected = _mixed_corpus(corpus)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    proc = run_script(f"input={corpus}", "output.dir=../feats", LAYERS_CLI, f"audio.sample_rate={SR}",
                      "runtime.batch_size=2", cwd=elsewhere)
    out = tmp_path / "feats"  # relative to the cwd the script ran in
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "10 input(s): 5 ok, 0 skipped, 5 failed" in proc.stdout
    assert "batch: 10/10 files" in proc.stderr  # not a terminal: plain progress lines

    records = current(out)
    assert set(records) == {str(corpus / rel) for rel in expected}
    for rel, want in expected.items():
        rec = records[str(corpus / rel)]
        if want == "ok":
            assert rec.status == "ok" and rec.error is None
            assert rec.output == str(Path(rel).with_suffix(".npy").as_posix())
        else:
            assert rec.status == "failed", rec
            assert rec.output is None
            assert want in rec.error and "\n" not in rec.error
            assert rec.error in proc.stdout  # listed in the summary
    # the tree is mirrored; nothing else was written
    outputs = {r.output for r in records.values() if r.output}
    assert files_under(out) == outputs | {MANIFEST_NAME, "model.safetensors", "config.yaml"}
    assert not temp_files(out)

    # each good file equals the single-file result with the job's weights; manifest fields agree
    weights = out / "model.safetensors"
    for i, rel in enumerate(r for r, w in expected.items() if w == "ok"):
        rec = records[str(corpus / rel)]
        got = np.load(out / rec.output)
        want = single_file(corpus / rel, tmp_path / f"single{i}", weights)
        assert got.shape == want.shape and float(np.abs(got - want).max()) <= 1e-5
        info = sf.info(str(corpus / rel))
        assert rec.sample_rate == SR
        assert rec.num_samples == math.ceil(info.frames * SR / info.samplerate)
        assert rec.duration_s == pytest.approx(rec.num_samples / SR)
        assert rec.shape == list(got.shape) and rec.seconds >= 0
    # the channel count was fixed once and recorded with the weights
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["in_channels"] == 1

    # and literally the CLI, for one file
    single = tmp_path / "cli_single"
    cli = subprocess.run(
        [sys.executable, "-m", "conv_pipeline", f"input={corpus / 'c/three.wav'}", f"output.dir={single}",
         LAYERS_CLI, f"audio.sample_rate={SR}", f"model.checkpoint={weights}"],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
    )
    assert cli.returncode == 0, cli.stderr
    assert float(np.abs(np.load(single / "three.npy") - np.load(out / "c/three.npy")).max()) <= 1e-5

    # other audio settings into the same output.dir: refused, one line, exit 2, nothing touched
    before = (out / "manifest.jsonl").read_bytes()
    again = run_script(f"input={corpus}", "output.dir=../feats", LAYERS_CLI, "audio.sample_rate=16000", cwd=elsewhere)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    lines = [l for l in again.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "audio.sample_rate=8000" in lines[0] and "overwrite=true" in lines[0], again.stderr
    assert (out / "manifest.jsonl").read_bytes() == before


@pytest.mark.slow
def test_config_error_exits_2_before_reading_audio(tmp_path):
    write_audio(tmp_path / "corpus/x.wav")
    proc = run_script("input=corpus", "output.dir=feats", "model.layers=[{out_channels:2,kernel_size:0}]", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "kernel_size" in lines[0], proc.stderr
    assert not (tmp_path / "feats").exists()


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(input="nowhere/"), "no such file or folder"),
        (dict(batch_size=0), "runtime.batch_size"),
        (dict(num_workers=-1), "runtime.num_workers"),
        (dict(batch={"workers": "fibers"}), "batch.workers"),
        (dict(batch={"progress": "loud"}), "batch.progress"),
        (dict(layers=[LayerConfig(out_channels=2, kernel_size=3, groups=2)]), "groups"),
        (dict(audio=AudioConfig(sample_rate=0)), "audio.sample_rate"),
    ],
)
def test_setup_errors_raise_before_any_output(tmp_path, change, needle):
    write_audio(tmp_path / "corpus/x.wav")
    change = dict(change)
    source = tmp_path / change.pop("input", "corpus")
    with pytest.raises((ConfigError, InputError)) as err:
        run_batch(batch_cfg(source, tmp_path / "feats", **change))
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "feats").exists()


# ---------------------------------------------------------------- inputs and layout
def test_same_stem_in_one_folder_gets_distinct_outputs(tmp_path):
    corpus = tmp_path / "corpus"
    write_audio(corpus / "x.wav", 0.3, seed=1)
    write_audio(corpus / "x.flac", 0.4, seed=2)
    out = tmp_path / "feats"
    summary = run_batch(batch_cfg(corpus, out))
    assert summary.ok == 2
    weights = out / "model.safetensors"
    for name, src in [("x.wav.npy", "x.wav"), ("x.flac.npy", "x.flac")]:
        want = single_file(corpus / src, tmp_path / f"s_{src}", weights)
        assert float(np.abs(np.load(out / name) - want).max()) <= 1e-5


def test_glob_list_and_single_file_inputs(tmp_path):
    corpus = tmp_path / "corpus"
    write_audio(corpus / "s1/a.flac", seed=1)
    write_audio(corpus / "s1/deep/b.flac", seed=2)
    write_audio(corpus / "s2/c.wav", seed=3)
    write_audio(tmp_path / "outside/o.wav", seed=4)

    # glob: paths relative to the pattern's literal folder; only matching files
    out = tmp_path / "g"
    s = run_batch(batch_cfg(f"{corpus}/**/*.flac", out))
    assert s.ok == 2 and s.total == 2
    assert {r.output for r in current(out).values()} == {"s1/a.npy", "s1/deep/b.npy"}

    # list file: relative entries are relative to the list's folder; ../ entries stay inside
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "files.txt").write_text(
        "# comment\n\n../corpus/s2/c.wav\n" f"{corpus / 's1/a.flac'}\n" "../outside/o.wav\n../corpus/missing.wav\n"
    )
    out = tmp_path / "l"
    s = run_batch(batch_cfg(lists / "files.txt", out))
    assert (s.ok, s.failed) == (3, 1)
    recs = current(out)
    assert {r.output for r in recs.values() if r.status == "ok"} == {
        "corpus/s2/c.npy", "corpus/s1/a.npy", "outside/o.npy"
    }
    missing = recs[str(tmp_path / "corpus/missing.wav")]
    assert missing.status == "failed" and "no such file" in missing.error
    for p in out.rglob("*"):
        assert p.resolve().is_relative_to(out.resolve())

    # one audio file
    out = tmp_path / "one"
    s = run_batch(batch_cfg(corpus / "s2/c.wav", out))
    assert s.ok == 1 and (out / "c.npy").is_file()

    # a list naming nothing, a glob matching nothing: one-line errors
    (lists / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InputError, match="lists no files"):
        run_batch(batch_cfg(lists / "empty.txt", tmp_path / "e1"))
    with pytest.raises(InputError, match="no audio files"):
        run_batch(batch_cfg(f"{corpus}/**/*.opus", tmp_path / "e2"))


# ---------------------------------------------------------------- channels
def test_auto_channels_fixed_by_the_corpus_and_recorded(tmp_path):
    """model.in_channels=auto: every header is read first; one count for the whole corpus is
    the stack's, written with the weights. A corpus mixing counts is refused before anything is
    processed (naming the counts and the fix), and the fix it names works."""
    corpus = tmp_path / "corpus"
    write_audio(corpus / "a_stereo.wav", 0.3, channels=2, seed=1)
    write_audio(corpus / "b_stereo.flac", 0.4, channels=2, seed=2)
    out = tmp_path / "feats"
    s = run_batch(batch_cfg(corpus, out))
    assert (s.ok, s.failed, s.in_channels, s.exit_code) == (2, 0, 2, 0)
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["in_channels"] == 2
    from safetensors.torch import load_file

    assert load_file(str(out / "model.safetensors"))["layers.0.conv.weight"].shape[1] == 2
    write_audio(corpus / "c_mono.wav", 0.3, channels=1, seed=3)
    mixed = tmp_path / "mixed"
    with pytest.raises(ConfigError) as err:
        run_batch(batch_cfg(corpus, mixed))
    assert "1 file with 1 channel" in str(err.value) and "2 files with 2 channels" in str(err.value)
    assert "audio.channels=mono" in str(err.value) and not mixed.exists()
    s = run_batch(batch_cfg(corpus, tmp_path / "mono", audio=AudioConfig(sample_rate=SR, channels="mono")))
    assert (s.ok, s.failed, s.in_channels) == (3, 0, 1)


# ---------------------------------------------------------------- resume, overwrite, refusal
def test_resume_skips_done_redoes_failed_and_overwrite_redoes_all(tmp_path):
    corpus = tmp_path / "corpus"
    for i in range(4):
        write_audio(corpus / f"d{i % 2}/f{i}.wav", 0.2 + 0.1 * i, seed=i)
    (corpus / "d0/broken.wav").write_bytes(b"not audio at all" * 10)
    out = tmp_path / "feats"
    s1 = run_batch(batch_cfg(corpus, out))
    assert (s1.ok, s1.skipped, s1.failed) == (4, 0, 1)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*.npy")}
    shape_f3 = current(out)[str(corpus / "d1/f3.wav")].shape

    # a killed run's leftovers, the file repaired, one output deleted
    (out / "d0/.f0.npy.tmp-0a1b2c3d").write_bytes(b"partial")
    (out / ".model.safetensors.tmp-deadbeef").write_bytes(b"partial")
    (out / "d0/.keep").write_text("not ours")
    write_audio(corpus / "d0/broken.wav", 0.3, seed=9)
    (out / "d1/f1.npy").unlink()
    s2 = run_batch(batch_cfg(corpus, out))
    assert (s2.ok, s2.skipped, s2.failed, s2.exit_code) == (2, 3, 0, 0)
    recs = current(out)
    assert recs[str(corpus / "d0/broken.wav")].status == "ok"
    assert recs[str(corpus / "d1/f1.wav")].status == "ok"
    assert recs[str(corpus / "d1/f3.wav")].status == "skipped"
    assert recs[str(corpus / "d1/f3.wav")].shape == shape_f3  # skipped records keep what is known
    for p, (ino, mtime, data) in before.items():
        if p.name != "f1.npy":  # untouched: same file, same bytes
            assert (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) == (ino, mtime, data)
    assert not temp_files(out) and (out / "d0/.keep").exists()

    s3 = run_batch(batch_cfg(corpus, out, overwrite=True))
    assert (s3.ok, s3.skipped, s3.failed) == (5, 0, 0)
    for p, (ino, _, _) in before.items():
        assert p.stat().st_ino != ino  # rewritten (atomic rename: a new file)
    # the manifest holds one line per record written, the last one per input wins
    assert len(list(iter_records(out))) == 5 + 5 + 5


def test_rerun_with_other_model_or_audio_is_refused_unless_overwrite(tmp_path):
    corpus = tmp_path / "corpus"
    write_audio(corpus / "x.wav")
    out = tmp_path / "feats"
    run_batch(batch_cfg(corpus, out))
    other = [LayerConfig(out_channels=2, kernel_size=3)]
    with pytest.raises(OutputError, match="different model"):
        run_batch(batch_cfg(corpus, out, layers=other))
    with pytest.raises(OutputError, match="audio.sample_rate=8000"):
        run_batch(batch_cfg(corpus, out, audio=AudioConfig(sample_rate=16000)))
    s = run_batch(batch_cfg(corpus, out, layers=other, overwrite=True))
    assert s.ok == 1 and np.load(out / "x.npy").shape[0] == 2


def test_one_job_per_output_dir(tmp_path):
    write_audio(tmp_path / "corpus/x.wav")
    out = tmp_path / "feats"
    out.mkdir()
    lock = _OutputLock(out)
    try:
        with pytest.raises(OutputError, match="in use by another batch job"):
            run_batch(batch_cfg(tmp_path / "corpus", out))
    finally:
        lock.release()
    assert run_batch(batch_cfg(tmp_path / "corpus", out)).ok == 1


# ---------------------------------------------------------------- failures isolated
def _raising_decode(path, audio):
    if "boom" in str(path):
        raise RuntimeError("decoder exploded\nwith a second line")
    return load_audio(path, audio)


def _dying_decode(path, audio):
    if "boom" in str(path):
        os._exit(3)  # the worker process dies, as with a segfaulting decoder
    return load_audio(path, audio)


@pytest.mark.slow
@pytest.mark.parametrize("workers, decode, message", [
    ("thread", _raising_decode, "unexpected error while decoding (RuntimeError: decoder exploded with a second line)"),
    ("process", _dying_decode, "the decoder crashed on this file"),
])
def test_a_crashing_worker_does_not_end_the_job(tmp_path, workers, decode, message):
    corpus = tmp_path / "corpus"
    for i in range(5):
        write_audio(corpus / f"f{i}.wav", 0.2 + 0.05 * i, seed=i)
    write_audio(corpus / "f2_boom.wav", 0.3, seed=7)
    out = tmp_path / "feats"
    s = run_batch(batch_cfg(corpus, out, batch={"workers": workers}, batch_size=2, num_workers=2), decode=decode)
    assert (s.ok, s.failed, s.exit_code) == (5, 1, 1)
    err = current(out)[str(corpus / "f2_boom.wav")].error
    assert message in err and "\n" not in err
    weights = out / "model.safetensors"
    for i in range(5):
        want = single_file(corpus / f"f{i}.wav", tmp_path / f"s{i}", weights)
        assert float(np.abs(np.load(out / f"f{i}.npy") - want).max()) <= 1e-5


@pytest.mark.parametrize("chunk_seconds", [0.1, None])  # chunked executor / whole file
def test_long_files_take_the_per_file_path(tmp_path, monkeypatch, chunk_seconds):
    import conv_pipeline.engines.work as batch

    calls = []
    original = batch.process_long_file
    monkeypatch.setattr(batch, "process_long_file", lambda path, *a, **k: calls.append(path) or original(path, *a, **k))
    corpus = tmp_path / "corpus"
    write_audio(corpus / "long.wav", 0.6, seed=1)
    write_audio(corpus / "short.wav", 0.2, seed=2)
    (corpus / "long_broken.wav").write_bytes((corpus / "long.wav").read_bytes()[:-4000] + b"\xff" * 4000)
    out = tmp_path / "feats"
    cfg = batch_cfg(corpus, out, batch={"long_file_seconds": 0.5})
    cfg.runtime.chunk_seconds = chunk_seconds
    s = run_batch(cfg)
    assert sorted(calls) == [str(corpus / "long.wav"), str(corpus / "long_broken.wav")]
    assert (s.ok, s.failed) == (3, 0), s.format()
    for name in ("long", "short"):
        want = single_file(corpus / f"{name}.wav", tmp_path / name, out / "model.safetensors")
        got = np.load(out / f"{name}.npy")
        assert got.shape == want.shape and float(np.abs(got - want).max()) <= 1e-5
    assert not temp_files(out)


# ---------------------------------------------------------------- progress and summary
def test_progress_bar_on_a_terminal_and_log_lines_otherwise(tmp_path, capsys, caplog):
    corpus = tmp_path / "corpus"
    for i in range(3):
        write_audio(corpus / f"f{i}.wav", seed=i)
    run_batch(batch_cfg(corpus, tmp_path / "bar", batch={"progress": "bar"}))
    err = capsys.readouterr().err
    assert "3/3" in err and "file" in err and "audio s/s" in err
    with caplog.at_level("INFO", logger="conv_pipeline.batch"):
        s = run_batch(batch_cfg(corpus, tmp_path / "log", batch={"progress": "log"}))
    assert any("batch: 3/3 files (100%), 0 failed" in r.getMessage() for r in caplog.records)
    text = s.format()
    assert "3 input(s): 3 ok, 0 skipped, 0 failed" in text and "x real time" in text and "h of audio" in text


# ---------------------------------------------------------------- SIGKILL at any moment
def _kill_when(proc: subprocess.Popen, out: Path, min_new_ok: int, already: int) -> int:
    """SIGKILL ``proc`` once the manifest has ``min_new_ok`` more ok records than ``already``."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        n = sum(1 for r in iter_records(out) if r.status == "ok")
        if n >= already + min_new_ok:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the job ended before it could be killed; use more files"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return sum(1 for r in iter_records(out) if r.status == "ok")


@pytest.mark.slow
def test_sigkill_then_rerun_completes_every_output(tmp_path):
    corpus = tmp_path / "corpus"
    n = 120
    for i in range(n):
        write_audio(corpus / f"d{i % 4}/f{i:03d}.wav", 0.05 + 0.01 * (i % 7), seed=i)
    args = [f"input={corpus}", "output.dir=feats", LAYERS_CLI, f"audio.sample_rate={SR}",
            "runtime.batch_size=1", "runtime.num_workers=1"]
    out = tmp_path / "feats"

    def start():
        return subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=str(tmp_path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    ok1 = _kill_when(start(), out, 3, 0)  # killed mid-job
    assert 3 <= ok1 < n
    ok2 = _kill_when(start(), out, 3, ok1)  # killed again, later
    assert ok2 < n
    final = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert f"{n} input(s): " in final.stdout and "0 failed" in final.stdout

    recs = current(out)
    assert len(recs) == n and all(r.status in ("ok", "skipped") for r in recs.values())
    assert sum(r.status == "skipped" for r in recs.values()) >= ok2  # done work was not redone
    assert not temp_files(out)
    # every output complete, loadable and right: compare with an uninterrupted run's weights
    ref = run_batch(batch_cfg(corpus, tmp_path / "ref", batch_size=4))
    assert ref.ok == n
    for rec in recs.values():
        got = np.load(out / rec.output, allow_pickle=False)
        want = np.load(tmp_path / "ref" / rec.output)
        assert got.shape == want.shape and float(np.abs(got - want).max()) <= 1e-5


def test_a_decode_worker_reads_each_header_once_and_custom_decoders_still_work(tmp_path, monkeypatch):
    """The long-file check's header is handed to ``load_audio`` (``UrlDecoder.takes_info``): the
    decoded audio is the same as a plain ``load_audio``, with no second ``probe``; a decoder that
    takes no header is called as before."""
    import conv_pipeline.load.audio as audio_mod
    from conv_pipeline.engines.work import decode_item
    from conv_pipeline.load.remote import UrlDecoder

    path = str(tmp_path / "a.flac")
    write_audio(path, seconds=1.3, sr=44100, channels=2)
    cfg = AudioConfig(sample_rate=16000, channels="mono")
    expected = load_audio(path, cfg)

    def no_second_probe(*args, **kwargs):
        raise AssertionError("the header was read twice")

    monkeypatch.setattr(audio_mod, "probe", no_second_probe)
    decoder = UrlDecoder(load_audio)
    assert decoder.takes_info
    got = decode_item(path, cfg, 600.0, decoder).audio
    assert got.info == expected.info and np.array_equal(got.waveform.numpy(), expected.waveform.numpy())
    monkeypatch.undo()

    calls = []

    def custom(p, audio):  # run_batch(decode=...) callables take (path, audio)
        calls.append(p)
        return load_audio(p, audio)

    plain = UrlDecoder(custom)
    assert not plain.takes_info
    assert decode_item(path, cfg, 600.0, plain).audio.frames == expected.frames and calls == [path]
