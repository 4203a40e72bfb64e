"""Issue 12, "identity, not names": every output is tied to its input (canonical key plus a
fingerprint) and to the weights that made it; a resume recomputes anything else; an interrupted
``overwrite=true`` run is never resumed into a folder of two models; a manifest is untrusted input.

Findings 1, 2, 4, 8 and 9. Each test checks what the folder holds by recomputing its items from
their inputs and the folder's weights (``single_file``), not by trusting names.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.audio import write_audio
from helpers.figures import FIGURES
from helpers.jobs import LAYERS, SR, batch_cfg, single_file
from helpers.paths import SCRIPT
from helpers.run import run_script

from conv_pipeline.dataset.features import FeatureDataset, load_features
from conv_pipeline.engines.job import OVERWRITE_MARK, run_batch
from conv_pipeline.errors import OutputError
from conv_pipeline.sink.manifest import MANIFEST_NAME, iter_records, parse_records, read_manifest

WEIGHTS = "model.safetensors"


def _corpus(folder: Path, names: list[str], seed: int = 0) -> list[Path]:
    return [write_audio(folder / n, seconds=0.2 + 0.05 * i, sr=SR, seed=seed + i) for i, n in enumerate(names)]


def _assert_recomputed(out: Path, tmp: Path) -> int:
    """Every item of ``FeatureDataset(out)`` equals its input recomputed with the folder's weights."""
    ds = FeatureDataset(out)
    for i, rec in enumerate(ds.records):
        got = np.load(out / rec.output, allow_pickle=False)
        want = single_file(Path(rec.input), tmp / f"ref{i}", out / WEIGHTS)
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-5), f"{rec.output} is not {rec.input}'s"
    return len(ds)


# ---------------------------------------------------------------- finding 1
def test_another_inputs_output_is_kept_and_the_new_input_refused(tmp_path):
    spk1 = _corpus(tmp_path / "c8" / "spk1", ["a.wav", "b.wav"], seed=0)
    spk2 = _corpus(tmp_path / "c8" / "spk2", ["a.wav"], seed=7)
    out = tmp_path / "O"
    assert run_batch(batch_cfg(spk1[0].parent, out)).ok == 2
    summary = run_batch(batch_cfg(spk2[0].parent, out))  # the same output name, another input (issue 14)
    ok = (summary.ok, summary.skipped, summary.failed) == (0, 0, 1)
    records = read_manifest(out)
    refused = records[str(spk2[0])]
    ok = ok and records[str(spk1[0])].status == "ok" and refused.status == "failed"  # a.npy is still spk1's
    ok = ok and str(spk1[0]) in refused.error and str(spk2[0]) in refused.error
    FIGURES.outcome("bad input", ok, f"another input's a.npy kept, the new input refused: {summary}")
    assert ok
    assert _assert_recomputed(out, tmp_path) == 2  # spk1/a.wav and spk1/b.wav


def test_a_changed_input_or_a_cli_output_is_recomputed(tmp_path):
    corpus = tmp_path / "c"
    paths = _corpus(corpus, ["a.wav", "b.wav"])
    out = tmp_path / "O"
    assert run_batch(batch_cfg(corpus, out)).ok == 2
    assert run_batch(batch_cfg(corpus, out)).skipped == 2  # unchanged: kept
    write_audio(paths[0], seconds=0.4, sr=SR, seed=11)  # the same name, another recording
    summary = run_batch(batch_cfg(corpus, out))
    assert (summary.ok, summary.skipped) == (1, 1)
    other = write_audio(tmp_path / "elsewhere" / "b.wav", seconds=0.3, sr=SR, seed=5)
    with pytest.raises(OutputError, match="already holds the features of"):
        single_file(other, out, out / WEIGHTS)  # a CLI run of another b.wav into the folder: refused, b.npy kept
    summary = run_batch(batch_cfg(corpus, out))
    ok = (summary.ok, summary.skipped) == (0, 2)
    FIGURES.outcome("bad input", ok, f"a changed input recomputed, another input's CLI run refused: {summary}")
    assert ok
    assert _assert_recomputed(out, tmp_path) == 2


def test_a_new_common_root_of_a_list_keeps_the_first_inputs_output(tmp_path):
    one = _corpus(tmp_path / "x" / "s1", ["a.wav"], seed=0)
    two = _corpus(tmp_path / "x" / "s2", ["a.wav"], seed=3)
    lst = tmp_path / "list.txt"
    lst.write_text(f"{one[0]}\n")  # root x/s1: a.npy
    out = tmp_path / "O"
    run_batch(batch_cfg(lst, out))
    lst.write_text(f"{two[0]}\n")  # root x/s2: a.npy again, another input: refused, s1's a.npy kept
    summary = run_batch(batch_cfg(lst, out))
    assert (summary.ok, summary.skipped, summary.failed) == (0, 0, 1)
    assert _assert_recomputed(out, tmp_path) == 1


# ---------------------------------------------------------------- finding 4
def test_one_key_per_input_however_spelled(tmp_path, monkeypatch):
    _corpus(tmp_path / "c1", [f"f{i}.wav" for i in range(6)])
    out = tmp_path / "O"
    monkeypatch.chdir(tmp_path)
    assert run_batch(batch_cfg("c1", out)).ok == 6
    for spelling in (str(tmp_path / "c1"), "./c1/", "c1//"):
        assert run_batch(batch_cfg(spelling, out)).skipped == 6
    n = len(FeatureDataset(out))
    ok = n == 6 and len(read_manifest(out)) == 6
    FIGURES.outcome("bad input", ok, f"FeatureDataset gives {n} items for 6 files")
    assert ok


def test_old_records_without_identity_are_recomputed_and_deduplicated(tmp_path):
    corpus = tmp_path / "c"
    _corpus(corpus, ["a.wav", "b.wav"])
    out = tmp_path / "O"
    run_batch(batch_cfg(corpus, out))
    old = []  # what an older version wrote: no key, fingerprint or weights; one spelling per run
    for sep in ("/", "//"):
        for rec in read_manifest(out).values():
            old.append({k: v for k, v in dataclasses.asdict(rec).items() if k not in ("key", "fingerprint", "weights")}
                       | {"input": f"{corpus}{sep}{Path(rec.input).name}"})
    (out / MANIFEST_NAME).write_text("".join(json.dumps(r) + "\n" for r in old))
    assert len(FeatureDataset(out)) == 2  # a later record claiming the same output replaces the earlier one
    summary = run_batch(batch_cfg(corpus, out))
    assert (summary.ok, summary.skipped) == (2, 0)  # nothing ties them to their input: not trusted
    assert run_batch(batch_cfg(corpus, out)).skipped == 2
    assert _assert_recomputed(out, tmp_path) == 2


# ---------------------------------------------------------------- finding 8
def test_outputs_without_their_record_are_recomputed_with_metadata(tmp_path):
    """A killed driver (Ray) leaves written features whose records were never appended, or a
    remote manifest loses its last lines: the next run recomputes them, it does not record
    ``skipped`` with null sample rate and duration for good."""
    corpus = tmp_path / "c"
    _corpus(corpus, ["a.wav", "b.wav", "c.wav"])
    out = tmp_path / "O"
    run_batch(batch_cfg(corpus, out))
    lines = (out / MANIFEST_NAME).read_bytes().splitlines(keepends=True)
    (out / MANIFEST_NAME).write_bytes(lines[0])  # the other two records lost with the driver
    summary = run_batch(batch_cfg(corpus, out))
    records = read_manifest(out)
    ok = (summary.ok, summary.skipped) == (2, 1) and all(
        r.sample_rate == SR and r.duration_s and r.shape for r in records.values()
    )
    FIGURES.outcome("fault", ok, f"records of a killed driver: {[(r.status, r.sample_rate) for r in records.values()]}")
    assert ok
    # an older version's ``skipped`` record with null metadata is recomputed too, once
    rec = next(iter(records.values()))
    stale = {"input": rec.input, "status": "skipped", "output": rec.output}
    with open(out / MANIFEST_NAME, "a") as f:
        f.write(json.dumps(stale) + "\n")
    assert run_batch(batch_cfg(corpus, out)).ok == 1
    assert all(r.sample_rate == SR for r in read_manifest(out).values())
    assert _assert_recomputed(out, tmp_path) == 3


# ---------------------------------------------------------------- finding 2
def _interrupt_after(n: int):
    """A decode function that raises KeyboardInterrupt (what Ctrl-C does) at its ``n``-th call."""
    from conv_pipeline.load.audio import load_audio

    calls = []

    def decode(path, audio):
        calls.append(path)
        if len(calls) > n:
            raise KeyboardInterrupt
        return load_audio(path, audio)

    return decode


def test_interrupted_overwrite_is_refused_then_completed(tmp_path):
    corpus = tmp_path / "c"
    _corpus(corpus, [f"f{i:02d}.wav" for i in range(12)])
    out = tmp_path / "O"
    assert run_batch(batch_cfg(corpus, out, seed=0)).ok == 12
    with pytest.raises(KeyboardInterrupt):
        run_batch(batch_cfg(corpus, out, seed=1, overwrite=True, num_workers=0, batch_size=1), decode=_interrupt_after(4))
    assert (out / OVERWRITE_MARK).is_file()
    with pytest.raises(OutputError, match="overwrite=true run there did not complete") as err:
        run_batch(batch_cfg(corpus, out, seed=1))  # resumed without overwrite: refused, nothing written
    ok = "\n" not in str(err.value)
    FIGURES.outcome("fault", ok, "an interrupted overwrite resumed into a mixed folder")
    summary = run_batch(batch_cfg(corpus, out, seed=1, overwrite=True))
    assert summary.ok == 12 and not (out / OVERWRITE_MARK).exists()
    assert run_batch(batch_cfg(corpus, out, seed=1)).skipped == 12  # completed: resumable again
    assert _assert_recomputed(out, tmp_path) == 12


@pytest.mark.slow
def test_sigkilled_overwrite_run_is_not_resumed_into_two_models(tmp_path):
    """The finding through real processes: ``seed=1 overwrite=true`` SIGKILLed, then ``seed=1``."""
    corpus = tmp_path / "c"
    _corpus(corpus, [f"f{i:02d}.wav" for i in range(40)])
    out = tmp_path / "O"
    base = [f"input={corpus}", f"output.dir={out}", f"audio.sample_rate={SR}", "batch.progress=none",
            "model.layers=[{out_channels:4,kernel_size:5,stride:2,padding:2,activation:relu}]"]
    assert run_script(*base, "seed=0", cwd=tmp_path).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *base, "seed=1", "overwrite=true"], cwd=str(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if any(p.stat().st_mtime_ns != m for p, m in before.items() if p.exists()):
                proc.send_signal(signal.SIGKILL)  # some files replaced, most not
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if proc.returncode == 0:
        pytest.skip("the overwrite run finished before it could be killed")
    again = run_script(*base, "seed=1", cwd=tmp_path)
    lines = [x for x in again.stderr.splitlines() if x.strip()]
    ok = again.returncode == 2 and len(lines) == 1 and "overwrite=true" in lines[0] and "Traceback" not in again.stderr
    FIGURES.outcome("fault", ok, f"resume of a killed overwrite: exit {again.returncode}: {again.stderr[-300:]}")
    assert ok, again.stderr
    assert run_script(*base, "seed=1", "overwrite=true", cwd=tmp_path).returncode == 0
    assert not (out / OVERWRITE_MARK).exists()
    for rec in read_manifest(out).values():  # every file from the folder's (seed 1) weights
        got = np.load(out / rec.output, allow_pickle=False)
        want = single_file(Path(rec.input), tmp_path / "ref", out / WEIGHTS, layers=LAYERS[:1])
        assert np.allclose(got, want, atol=1e-5), rec.output


# ---------------------------------------------------------------- finding 9
BAD_LINES = [
    '{"input": "tornnamé'.encode()[:-1],  # torn inside a UTF-8 character
    b"[1, 2, 3]",  # JSON, not an object
    b'"just a string"',
    b'{"input": 5, "status": "ok"}',  # wrong-typed fields
    b'{"input": "x", "status": "ok", "shape": "big"}',
    b'{"input": "x", "status": "ok", "shape": [true, 2]}',
    b'{"input": "x", "status": "ok", "sample_rate": "16000"}',
    b'{"input": "x", "status": "done"}',
    b"[" * 100_000 + b"]" * 100_000,  # deep nesting
    b'{"input": "x", "status": "ok", "error": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
]


def test_manifest_lines_that_are_not_records_are_skipped_and_reported():
    problems: list[str] = []
    assert list(parse_records(BAD_LINES, problems)) == []
    assert len(problems) == len(BAD_LINES) and all("\n" not in p and len(p) < 400 for p in problems)
    assert "line 9" in problems[8] and "nested too deep" in problems[8]


def test_a_torn_manifest_blocks_no_reader_and_no_resume(tmp_path):
    corpus = tmp_path / "c"
    _corpus(corpus, ["é1.wav", "é2.wav"])
    out = tmp_path / "O"
    run_batch(batch_cfg(corpus, out))
    with open(out / MANIFEST_NAME, "ab") as f:
        f.write(b"\n".join(BAD_LINES))  # the last line torn, no newline: as a full disk leaves it
    problems: list[str] = []
    assert len(read_manifest(out, problems)) == 2 and len(problems) == len(BAD_LINES)
    assert len(FeatureDataset(out)) == 2
    load_features(out / "é1.npy")
    from conv_pipeline.inspect.describe import describe_dir

    assert "é1" in describe_dir(out)
    summary = run_batch(batch_cfg(corpus, out))
    ok = summary.skipped == 2 and summary.failed == 0
    FIGURES.outcome("bad input", ok, f"a torn manifest: {summary}")
    assert ok
    assert len(list(iter_records(out))) == 4  # two runs' records, every bad line skipped


def test_manifest_append_error_names_the_file_once(tmp_path, monkeypatch):
    import errno

    from conv_pipeline.sink import manifest as manifest_mod

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(manifest_mod.os, "write", full)
    with pytest.raises(OutputError) as err:
        manifest_mod.append_record(tmp_path, manifest_mod.ManifestRecord(input="x", status="failed", error="e"))
    assert str(err.value).count("cannot append to") == 1 and "No space left" in str(err.value)


def test_batch_disk_full_message_names_the_manifest_once(tmp_path, monkeypatch):
    import errno

    from conv_pipeline.sink import manifest as manifest_mod

    corpus = tmp_path / "c"
    _corpus(corpus, ["a.wav"])

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(manifest_mod.os, "write", full)
    with pytest.raises(OutputError) as err:
        run_batch(batch_cfg(corpus, tmp_path / "O"))
    ok = str(err.value).count("cannot append to") == 1
    FIGURES.outcome("fault", ok, f"disk-full message: {err.value}")
    assert ok, str(err.value)


def test_feature_files_carry_the_weights_digest_of_their_record(tmp_path):
    corpus = tmp_path / "c"
    paths = _corpus(corpus, ["a.wav"])
    out = tmp_path / "O"
    run_batch(batch_cfg(corpus, out, fmt="npz"))
    rec = read_manifest(out)[str(paths[0])]
    with np.load(out / rec.output, allow_pickle=False) as z:
        assert json.loads(str(z["config"]))["weights_sha256"] == rec.weights
    assert rec.key == os.path.abspath(paths[0]) and rec.fingerprint and rec.weights
