"""The batch job's local engine on fsspec URLs (issue 6): ``memory://``, ``file://`` and an
S3-compatible server (moto's server mode, on 127.0.0.1 only, the ``s3`` fixture) must give what
it gives on local paths: the same feature arrays (compared with the local-path run and, for one
file, with an independent ``F.conv1d`` computation), statuses and messages naming the URLs,
atomic writes, resume, and nothing written outside ``output.dir``. The Ray engine's tests
(``tests/engines/test_ray.py``) use the same corpus (``helpers.storage``).
"""

from __future__ import annotations

import io

import numpy as np
import pytest

fsspec = pytest.importorskip("fsspec")

from conv_pipeline.config.schema import AudioConfig, LayerConfig  # noqa: E402
from conv_pipeline.engines.job import run_batch  # noqa: E402
from conv_pipeline.errors import ConfigError, OutputError  # noqa: E402
from conv_pipeline.load.audio import load_audio  # noqa: E402
from conv_pipeline.sink.manifest import read_manifest  # noqa: E402
from helpers.jobs import META, SR  # noqa: E402
from helpers.reference import reference_features  # noqa: E402
from helpers.storage import (  # noqa: E402
    check_records,
    make_corpus,
    read_manifest_from_records,
    remote_files,
    same_results,
    same_weights,
    tone,
    upload,
    url_job,
)


def test_local_engine_on_memory_urls_equals_local_paths(tmp_path):
    corpus = tmp_path / "corpus"
    expected = make_corpus(corpus)
    mem = fsspec.filesystem("memory")
    upload(mem, corpus, "/mem1/corpus")
    before = {k for k in mem.store if not k.startswith("/mem1/out")}

    local = run_batch(url_job(corpus, tmp_path / "local", batch_size=1))
    remote = run_batch(url_job("memory://mem1/corpus", "memory://mem1/out", batch_size=1))
    assert (remote.ok, remote.failed, remote.exit_code) == (local.ok, local.failed, 1) == (6, 5, 1)
    assert "manifest: memory://mem1/out/manifest.jsonl" in remote.format()

    records = read_manifest_from_records(mem, "/mem1/out")
    check_records(records, "memory://mem1/corpus", expected)
    same_results(read_manifest(tmp_path / "local"), records, str(corpus), "memory://mem1/corpus")
    outputs = {r.output for r in records.values() if r.output}
    assert remote_files(mem, "/mem1/out") == outputs | META  # nothing else, no temporaries
    assert {k for k in mem.store if not k.startswith("/mem1/out")} == before  # nothing outside output.dir
    assert same_weights(mem.cat("/mem1/out/model.safetensors"), (tmp_path / "local/model.safetensors").read_bytes())
    for rel in outputs:  # batch_size=1 on both sides: the same computation, bit for bit
        assert np.array_equal(np.load(io.BytesIO(mem.cat(f"/mem1/out/{rel}"))), np.load(tmp_path / "local" / rel))

    # resume: done files are skipped and keep their records' figures; a deleted output is redone
    mem.rm_file("/mem1/out/c/three.npy")
    again = run_batch(url_job("memory://mem1/corpus", "memory://mem1/out", batch_size=1))
    assert (again.ok, again.skipped, again.failed) == (1, 5, 5)
    records = read_manifest_from_records(mem, "/mem1/out")
    assert records["memory://mem1/corpus/c/three.wav"].status == "ok"
    assert records["memory://mem1/corpus/a/one.wav"].status == "skipped"
    assert records["memory://mem1/corpus/a/one.wav"].shape == read_manifest(tmp_path / "local")[str(corpus / "a/one.wav")].shape
    assert mem.cat("/mem1/out/manifest.jsonl").count(b"\n") == 22  # both runs' records, one PUT at a time


def test_file_urls_are_local_paths(tmp_path):
    corpus = tmp_path / "corpus"
    tone(corpus / "x.wav", 0.3, 16000, 1)
    tone(corpus / "sub/y.wav", 0.4, 16000, 2)
    s = run_batch(url_job(f"file://{corpus}", f"file://{tmp_path / 'out'}"))
    assert (s.ok, s.failed) == (2, 0)
    records = read_manifest(tmp_path / "out")
    assert set(records) == {str(corpus / "x.wav"), str(corpus / "sub/y.wav")}
    assert (tmp_path / "out/sub/y.npy").is_file() and (tmp_path / "out/model.safetensors").is_file()


@pytest.mark.slow
def test_s3_round_trip_with_the_local_engine(tmp_path, s3):
    corpus = tmp_path / "corpus"
    expected = make_corpus(corpus)
    bucket = s3.bucket("local-engine")
    upload(s3.fs, corpus, f"{bucket}/corpus")
    src, dst = f"s3://{bucket}/corpus", f"s3://{bucket}/feats"

    local = run_batch(url_job(corpus, tmp_path / "local", batch_size=1))
    s = run_batch(url_job(src, dst, batch_size=1, options=s3.options))
    assert (s.ok, s.skipped, s.failed, s.exit_code) == (local.ok, 0, local.failed, 1)
    records = read_manifest_from_records(s3.fs, f"{bucket}/feats")
    check_records(records, src, expected)
    same_results(read_manifest(tmp_path / "local"), records, str(corpus), src)
    outputs = {r.output for r in records.values() if r.output}
    assert remote_files(s3.fs, f"{bucket}/feats") == outputs | META
    assert remote_files(s3.fs, bucket) == {f"corpus/{p.relative_to(corpus).as_posix()}" for p in corpus.rglob("*") if p.is_file()} | {
        f"feats/{r}" for r in outputs | META
    }  # nothing outside output.dir
    for rel in outputs:
        assert np.array_equal(np.load(io.BytesIO(s3.fs.cat(f"{bucket}/feats/{rel}"))), np.load(tmp_path / "local" / rel))

    # one file against an independent computation (F.conv1d with the bucket's weights and config)
    meta = tmp_path / "meta"
    meta.mkdir()
    for name in ("model.safetensors", "config.yaml"):
        (meta / name).write_bytes(s3.fs.cat(f"{bucket}/feats/{name}"))
    wave = load_audio(corpus / "c/three.wav", AudioConfig(sample_rate=SR)).waveform.numpy()
    got = np.load(io.BytesIO(s3.fs.cat(f"{bucket}/feats/c/three.npy")))
    assert float(np.abs(got - reference_features(meta, wave)).max()) <= 1e-5

    # resume on S3: everything done is skipped and left untouched
    etags = {rel: s3.fs.info(f"{bucket}/feats/{rel}")["ETag"] for rel in outputs}
    again = run_batch(url_job(src, dst, batch_size=3, options=s3.options))
    assert (again.ok, again.skipped, again.failed) == (0, 6, 5)
    s3.fs.invalidate_cache()
    assert {rel: s3.fs.info(f"{bucket}/feats/{rel}")["ETag"] for rel in outputs} == etags
    # another model into the same prefix is refused, naming the URL (not a staging folder)
    with pytest.raises(OutputError) as err:
        run_batch(url_job(src, dst, options=s3.options, layers=[LayerConfig(out_channels=2, kernel_size=3)]))
    assert f"{dst}/model.safetensors holds a different model's weights" in str(err.value)
    assert "conv_pipeline-out-" not in str(err.value)


@pytest.mark.slow
def test_s3_long_files_and_npz(tmp_path, s3):
    corpus = tmp_path / "corpus"
    tone(corpus / "short.wav", 0.4, 16000, 1)
    tone(corpus / "long/seven.wav", 2.5, 16000, 9)
    bucket = s3.bucket("long-files")
    upload(s3.fs, corpus, f"{bucket}/corpus")
    long = dict(chunk_seconds=1.0, long_file_seconds=1.0, fmt="npz")
    s = run_batch(url_job(f"s3://{bucket}/corpus", f"s3://{bucket}/feats", options=s3.options, **long))
    assert (s.ok, s.failed) == (2, 0)
    run_batch(url_job(corpus, tmp_path / "local", **long))
    for rel in ("short.npz", "long/seven.npz"):
        got = np.load(io.BytesIO(s3.fs.cat(f"{bucket}/feats/{rel}")), allow_pickle=False)
        want = np.load(tmp_path / "local" / rel, allow_pickle=False)
        assert np.array_equal(got["features"], want["features"]) and np.array_equal(got["frame_times"], want["frame_times"])
    assert remote_files(s3.fs, f"{bucket}/feats") == {"short.npz", "long/seven.npz"} | META


def test_bad_storage_settings_are_one_line_errors(tmp_path):
    tone(tmp_path / "corpus/x.wav", 0.3, 16000, 1)
    with pytest.raises(ConfigError, match="storage.options must be a mapping"):
        run_batch(url_job(tmp_path / "corpus", tmp_path / "out", options="key=x"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as err:
        run_batch(url_job("nosuchprotocol://bucket/corpus", tmp_path / "out"))
    assert "nosuchprotocol://bucket/corpus" in str(err.value) and "\n" not in str(err.value)
    fsspec.filesystem("memory").pipe_file("/isfile/out", b"x")
    with pytest.raises(OutputError, match="is an existing file"):
        run_batch(url_job(tmp_path / "corpus", "memory://isfile/out"))
    assert not (tmp_path / "out").exists()


