"""Inputs and outputs on fsspec URLs (issue 6): ``conv_pipeline/storage.py`` and the local engine.

The batch job on ``memory://``, ``file://`` and an S3-compatible server (moto's server mode, on
127.0.0.1 only, started by the ``s3`` fixture) must give what it gives on local paths: the same
feature arrays (compared with the local-path run and, for one file, with an independent
``F.conv1d`` computation), statuses and messages naming the URLs, atomic writes, resume, and
nothing written outside ``output.dir``. The Ray engine's tests (``tests/test_ray.py``) reuse the
corpus and the S3 fixture defined here.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import soundfile as sf

fsspec = pytest.importorskip("fsspec")

from conftest import reference_features  # noqa: E402
from conv_pipeline.fs import filesystem, is_url, join, local_path  # noqa: E402
import conv_pipeline.sink.outputs as outputs_mod  # noqa: E402
from conv_pipeline.config.schema import (  # noqa: E402
    AudioConfig,
    BatchConfig,
    BatchOptions,
    EngineConfig,
    LayerConfig,
    ModelConfig,
    OutputConfig,
    RuntimeConfig,
    StorageConfig,
)
from conv_pipeline.load import remote as url_io  # noqa: E402
from conv_pipeline.sink.manifest_sink import ManifestSink  # noqa: E402
from conv_pipeline.sink.outputs import OutputDir  # noqa: E402
from conv_pipeline.load.audio import load_audio
from conv_pipeline.source.inputs import find_inputs
from conv_pipeline.engines.job import run_batch
from conv_pipeline.errors import ConfigError, InputError, OutputError
from conv_pipeline.sink.manifest import MANIFEST_NAME, ManifestRecord, read_manifest

SR = 8000  # every job resamples to 8 kHz
LAYERS = [
    LayerConfig(out_channels=4, kernel_size=5, stride=2, padding=2, activation="relu"),
    LayerConfig(out_channels=3, kernel_size=3, padding=1, dilation=2, norm="layer_norm", activation="tanh"),
]
META = {MANIFEST_NAME, "model.safetensors", "config.yaml"}


# ---------------------------------------------------------------- a corpus with broken files
def _tone(path: Path, seconds: float, sr: int, seed: int, channels: int = 1) -> None:
    rng = np.random.default_rng(seed)
    frames = max(1, int(round(seconds * sr)))
    t = np.arange(frames) / sr
    data = 0.3 * np.sin(2 * np.pi * (200 + 40 * seed) * t)[:, None] + 0.1 * rng.standard_normal((frames, channels))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(data, -0.99, 0.99).astype(np.float32), sr)


def make_corpus(root: Path, long_file: bool = False) -> dict[str, str]:
    """Good files of several rates and lengths in nested folders, and broken ones; returns
    ``{relative path: "ok" or a substring of the expected error}``."""
    _tone(root / "a/b/two.flac", 0.3, 8000, 1)  # first in order: the job is mono
    _tone(root / "a/one.wav", 0.5, 16000, 2)
    _tone(root / "c/three.wav", 0.7, 22050, 3)
    _tone(root / "c/d/four.flac", 1.1, 16000, 4)
    _tone(root / "five.wav", 0.2, 16000, 5)
    _tone(root / "six.wav", 0.4, 11025, 6)
    (root / "bad").mkdir(parents=True, exist_ok=True)
    (root / "bad/corrupt.wav").write_bytes(b"RIFF\x00\x01garbage" + bytes(range(256)) * 2)
    (root / "bad/empty.wav").write_bytes(b"")
    _tone(root / "bad/short.wav", 3 / 8000, 8000, 7)  # 3 samples: shorter than the stack needs
    _tone(root / "bad/stereo.wav", 0.3, 16000, 8, channels=2)
    nan = np.full((800, 1), 0.1, np.float32)
    nan[100] = np.nan
    sf.write(str(root / "bad/nan.wav"), nan, 8000, subtype="FLOAT")
    (root / "notes.txt").write_text("not audio, not picked up")
    expected = {
        "a/b/two.flac": "ok",
        "a/one.wav": "ok",
        "c/three.wav": "ok",
        "c/d/four.flac": "ok",
        "five.wav": "ok",
        "six.wav": "ok",
        "bad/corrupt.wav": "not a readable audio file",
        "bad/empty.wav": "empty file",
        "bad/short.wav": "needs at least",
        "bad/stereo.wav": "audio.channels=mono",
        "bad/nan.wav": "NaN",
    }
    if long_file:  # longer than batch.long_file_seconds=1: the long-file path
        _tone(root / "long/seven.wav", 2.5, 16000, 9)
        expected["long/seven.wav"] = "ok"
    return expected


def batch_cfg(input: Any, out: Any, batch_size: int = 3, options: dict | None = None, engine: EngineConfig | None = None,
              chunk_seconds: float | None = None, layers=LAYERS, fmt: str = "npy", long_file_seconds: float | None = None,
              **kw) -> BatchConfig:
    """A small job; ``chunk_seconds`` with ``long_file_seconds``: files longer than that take the
    long-file path (``process_long_file``, the chunked executor)."""
    return BatchConfig(
        input=str(input),
        model=ModelConfig(name="custom", layers=list(layers)),
        audio=AudioConfig(sample_rate=SR),
        output=OutputConfig(dir=str(out), format=fmt),
        runtime=RuntimeConfig(batch_size=batch_size, num_workers=2, chunk_seconds=chunk_seconds),
        batch=BatchOptions(progress="none", long_file_seconds=long_file_seconds),
        engine=engine or EngineConfig(),
        storage=StorageConfig(options=options),
        **kw,
    )


def check_records(records: dict[str, ManifestRecord], prefix: str, expected: dict[str, str], fmt: str = "npy") -> None:
    """Every input has its expected status; outputs mirror the tree; errors name the input."""
    assert set(records) == {join(prefix, rel) for rel in expected}
    for rel, want in expected.items():
        rec = records[join(prefix, rel)]
        if want == "ok":
            assert rec.status == "ok" and rec.error is None, rec
            assert rec.output == f"{rel.rsplit('.', 1)[0]}.{fmt}"
            assert rec.sample_rate == SR and rec.shape and rec.shape[0] == 3
        else:
            assert rec.status == "failed" and rec.output is None, rec
            assert want in rec.error and "\n" not in rec.error
            assert join(prefix, rel) in rec.error  # names the input as given (the URL)
            assert "conv_pipeline-in-" not in rec.error  # never the local temporary copy


def same_results(a: dict[str, ManifestRecord], b: dict[str, ManifestRecord], prefix_a: str, prefix_b: str) -> None:
    """The two manifests agree on everything but timing and the input's location."""
    assert len(a) == len(b)
    for key, ra in a.items():
        rb = b[prefix_b + key[len(prefix_a):]]
        assert (ra.status, ra.output, ra.shape, ra.sample_rate, ra.num_samples) == (
            rb.status, rb.output, rb.shape, rb.sample_rate, rb.num_samples,
        )
        assert (ra.error or "").replace(prefix_a, "") == (rb.error or "").replace(prefix_b, "")


# ---------------------------------------------------------------- an S3-compatible server on 127.0.0.1
@dataclass
class S3:
    endpoint: str
    options: dict
    fs: Any
    bucket: Callable[[str], str]  # a fresh bucket for a test; returns its name


@pytest.fixture(scope="module")
def s3():
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)  # a free port
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    endpoint = f"http://{host}:{port}"
    # eu-west-1: s3fs sends the client's region as the bucket's location, which us-east-1 refuses
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint, "region_name": "eu-west-1"}}
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **options)
    made: list[str] = []

    def bucket(name: str) -> str:
        fs.mkdir(name)
        made.append(name)
        return name

    yield S3(endpoint, options, fs, bucket)
    server.stop()


def upload(fs: Any, local: Path, remote: str) -> None:
    for p in sorted(local.rglob("*")):
        if p.is_file():
            fs.pipe_file(f"{remote}/{p.relative_to(local).as_posix()}", p.read_bytes())


def remote_files(fs: Any, root: str) -> set[str]:
    fs.invalidate_cache()
    return {p[len(root) + 1:] for p in fs.find(root)}


# ---------------------------------------------------------------- storage primitives
def test_specs_paths_and_urls():
    assert is_url("s3://bucket/x") and is_url("memory://x") and is_url("simplecache::s3://b/x")
    assert not is_url("/data/x") and not is_url("file:///data/x") and not is_url("rel/x.wav")
    assert local_path("file:///data/x") == "/data/x" and local_path("data/x") == "data/x"
    assert join("s3://b/feats/", "a/x.npy") == "s3://b/feats/a/x.npy"
    assert join("/tmp/feats", "a/x.npy") == os.path.join("/tmp/feats", "a/x.npy")
    with pytest.raises(ConfigError) as err:
        filesystem("nosuchprotocol://x/y")
    assert "nosuchprotocol://x/y" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("rel", ["../x.npy", "a/../../x.npy", "/abs.npy", "a//b.npy", "./x.npy", "s3://other/x.npy", ""])
def test_outputs_never_leave_output_dir(rel):
    mem = fsspec.filesystem("memory")
    before = set(mem.store)
    out = OutputDir("memory://sec/out")
    with pytest.raises(OutputError, match="outside output.dir"):
        out.write_bytes(rel, b"x")
    with pytest.raises(OutputError, match="outside output.dir"):
        with out.writing(rel) as path:
            path.write_bytes(b"x")
    assert set(mem.store) == before  # nothing written anywhere


def test_remote_writes_are_atomic_and_leave_nothing_behind(monkeypatch):
    mem = fsspec.filesystem("memory")
    out = OutputDir("memory://atomic/out")
    with out.writing("a/x.npy") as path:
        np.save(path, np.arange(3, dtype=np.float32))
        assert not mem.exists("/atomic/out/a/x.npy")  # nothing visible before the block ends
    assert np.load(io.BytesIO(mem.cat("/atomic/out/a/x.npy"))).tolist() == [0, 1, 2]
    assert not path.exists()  # the local staging copy is gone

    # an error inside the block commits nothing and names the URL, not the staging file
    with pytest.raises(OutputError) as err:
        with out.writing("a/y.npy") as path:
            path.write_bytes(b"partial")
            raise OutputError(f"cannot write {path}: disk full")
    assert "memory://atomic/out/a/y.npy" in str(err.value) and str(path) not in str(err.value)
    assert not mem.exists("/atomic/out/a/y.npy")

    # a filesystem with a rename: upload under a temporary name in the same folder, then move
    moves = []
    monkeypatch.setattr(outputs_mod, "OBJECT_STORES", frozenset())
    real_mv = out.fs.mv

    def spy_mv(src, dst, **kw):
        moves.append((src, dst, out.fs.exists(dst)))
        return real_mv(src, dst, **kw)

    monkeypatch.setattr(out.fs, "mv", spy_mv)
    out.write_bytes("a/z.bin", b"complete")
    ((src, dst, existed),) = moves
    assert dst == "/atomic/out/a/z.bin" and not existed
    assert src.startswith("/atomic/out/a/.z.bin.tmp-")  # the name temp clean-up recognises
    assert mem.cat("/atomic/out/a/z.bin") == b"complete"
    assert remote_files(mem, "/atomic/out") == {"a/x.npy", "a/z.bin"}


def test_manifest_on_an_object_store_is_rewritten_whole(monkeypatch):
    mem = fsspec.filesystem("memory")
    mem.pipe_file("/man/out/manifest.jsonl", b'{"input": "old", "status": "ok", "output": "old.npy"}\n{"input": "torn", "sta')
    out = OutputDir("memory://man/out")
    sink = ManifestSink(out, flush_s=3600)
    assert set(sink.read()) == {"old"}  # the torn last line is skipped
    recs = [ManifestRecord(input=f"in{i}", status="ok", output=f"{i}.npy") for i in range(3)]
    sink.add(recs[:2])
    sink.add(recs[2:])
    assert mem.cat("/man/out/manifest.jsonl").count(b"\n") == 1  # not yet: at most every flush_s
    sink.close()
    lines = mem.cat("/man/out/manifest.jsonl").decode().splitlines()
    assert len(lines) == 5 and lines[0].startswith('{"input": "old"') and lines[1].endswith('"sta')
    assert [r for r in read_manifest_from(mem, "/man/out")] == ["old", "in0", "in1", "in2"]

    puts = []
    sink = ManifestSink(out, flush_s=0)  # every add is one PUT of the whole manifest
    monkeypatch.setattr(out, "write_bytes", lambda rel, data: puts.append((rel, data)))
    sink.add([ManifestRecord(input="in3", status="failed", error="x")])
    assert len(puts) == 1 and puts[0][0] == MANIFEST_NAME
    assert puts[0][1].startswith(mem.cat("/man/out/manifest.jsonl")) and puts[0][1].endswith(b'"seconds": null}\n')


def read_manifest_from(fs: Any, root: str) -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, MANIFEST_NAME).write_bytes(fs.cat(f"{root}/{MANIFEST_NAME}"))
        return list(read_manifest(tmp))


def test_probe_and_decode_by_url_match_local_files(tmp_path):
    _tone(tmp_path / "x.flac", 0.3, 16000, 1, channels=2)
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x01garbage" + bytes(range(256)))
    mem = fsspec.filesystem("memory")
    mem.pipe_file("/probe/x.flac", (tmp_path / "x.flac").read_bytes())
    mem.pipe_file("/probe/bad.wav", (tmp_path / "bad.wav").read_bytes())
    local, remote = url_io.probe(str(tmp_path / "x.flac")), url_io.probe("memory://probe/x.flac")
    assert (remote.sample_rate, remote.channels, remote.frames, remote.format) == (local.sample_rate, local.channels, local.frames, local.format)
    audio = AudioConfig(sample_rate=SR, channels="mono")
    a = load_audio(tmp_path / "x.flac", audio)
    b = url_io.UrlDecoder(load_audio)("memory://probe/x.flac", audio)
    assert np.array_equal(a.waveform.numpy(), b.waveform.numpy()) and a.sample_rate == b.sample_rate
    errors = []
    for path, call in [(str(tmp_path / "bad.wav"), load_audio), ("memory://probe/bad.wav", url_io.UrlDecoder(load_audio)),
                       ("memory://probe/bad.wav", lambda p, a: url_io.probe(p))]:
        with pytest.raises(InputError) as err:
            call(path, audio)
        errors.append(str(err.value).replace(path, "<path>"))
    assert errors[0] == errors[1] == errors[2]
    assert errors[0].startswith("<path>: not a readable audio file (")
    with pytest.raises(InputError, match="memory://probe/missing.wav: no such file"):
        url_io.UrlDecoder(load_audio)("memory://probe/missing.wav", audio)


def test_find_inputs_on_a_filesystem_url(tmp_path):
    mem = fsspec.filesystem("memory")
    for rel in ["x.wav", "sub/Y.WAV", "sub/deeper/z.flac", ".hidden.wav", ".git/h.wav", "readme.md"]:
        mem.pipe_file(f"/find/corpus/{rel}", b"x")
    mem.pipe_file("/find/list.txt", b"# a list\ncorpus/x.wav\n\ncorpus/sub/deeper/z.flac\ns3://elsewhere/ignored.wav\n")
    found = find_inputs("memory://find/corpus")
    assert found.kind == "folder" and found.rels == ["sub/Y.WAV", "sub/deeper/z.flac", "x.wav"]
    assert found.paths == [f"memory://find/corpus/{r}" for r in found.rels]
    found = find_inputs("memory://find/corpus/**/*.flac")
    assert found.kind == "glob" and found.rels == ["sub/deeper/z.flac"] and found.root == "memory://find/corpus"
    with pytest.raises(InputError, match="several filesystems"):
        find_inputs("memory://find/list.txt")
    mem.pipe_file("/find/list.txt", b"corpus/x.wav\ncorpus/sub/deeper/z.flac\n")
    found = find_inputs("memory://find/list.txt")
    assert found.kind == "list" and found.paths == ["memory://find/corpus/x.wav", "memory://find/corpus/sub/deeper/z.flac"]
    assert found.rels == ["x.wav", "sub/deeper/z.flac"]
    with pytest.raises(InputError, match="no such file or folder"):
        find_inputs("memory://find/nowhere")


# ---------------------------------------------------------------- the local engine on URLs
def test_local_engine_on_memory_urls_equals_local_paths(tmp_path):
    corpus = tmp_path / "corpus"
    expected = make_corpus(corpus)
    mem = fsspec.filesystem("memory")
    upload(mem, corpus, "/mem1/corpus")
    before = {k for k in mem.store if not k.startswith("/mem1/out")}

    local = run_batch(batch_cfg(corpus, tmp_path / "local", batch_size=1))
    remote = run_batch(batch_cfg("memory://mem1/corpus", "memory://mem1/out", batch_size=1))
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
    again = run_batch(batch_cfg("memory://mem1/corpus", "memory://mem1/out", batch_size=1))
    assert (again.ok, again.skipped, again.failed) == (1, 5, 5)
    records = read_manifest_from_records(mem, "/mem1/out")
    assert records["memory://mem1/corpus/c/three.wav"].status == "ok"
    assert records["memory://mem1/corpus/a/one.wav"].status == "skipped"
    assert records["memory://mem1/corpus/a/one.wav"].shape == read_manifest(tmp_path / "local")[str(corpus / "a/one.wav")].shape
    assert mem.cat("/mem1/out/manifest.jsonl").count(b"\n") == 22  # both runs' records, one PUT at a time


def same_weights(a: bytes, b: bytes) -> bool:
    """Same tensors and metadata (the header's byte order is not deterministic)."""
    from safetensors import safe_open
    from safetensors.torch import load

    import tempfile

    metas = []
    for data in (a, b):
        with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
            f.write(data)
            f.flush()
            with safe_open(f.name, framework="pt") as st:
                metas.append(st.metadata())
    ta, tb = load(a), load(b)
    return metas[0] == metas[1] and ta.keys() == tb.keys() and all(bool((ta[k] == tb[k]).all()) for k in ta)


def read_manifest_from_records(fs: Any, root: str) -> dict[str, ManifestRecord]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, MANIFEST_NAME).write_bytes(fs.cat(f"{root}/{MANIFEST_NAME}"))
        return read_manifest(tmp)


def test_file_urls_are_local_paths(tmp_path):
    corpus = tmp_path / "corpus"
    _tone(corpus / "x.wav", 0.3, 16000, 1)
    _tone(corpus / "sub/y.wav", 0.4, 16000, 2)
    s = run_batch(batch_cfg(f"file://{corpus}", f"file://{tmp_path / 'out'}"))
    assert (s.ok, s.failed) == (2, 0)
    records = read_manifest(tmp_path / "out")
    assert set(records) == {str(corpus / "x.wav"), str(corpus / "sub/y.wav")}
    assert (tmp_path / "out/sub/y.npy").is_file() and (tmp_path / "out/model.safetensors").is_file()


def test_s3_round_trip_with_the_local_engine(tmp_path, s3):
    corpus = tmp_path / "corpus"
    expected = make_corpus(corpus)
    bucket = s3.bucket("local-engine")
    upload(s3.fs, corpus, f"{bucket}/corpus")
    src, dst = f"s3://{bucket}/corpus", f"s3://{bucket}/feats"

    local = run_batch(batch_cfg(corpus, tmp_path / "local", batch_size=1))
    s = run_batch(batch_cfg(src, dst, batch_size=1, options=s3.options))
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
    again = run_batch(batch_cfg(src, dst, batch_size=3, options=s3.options))
    assert (again.ok, again.skipped, again.failed) == (0, 6, 5)
    s3.fs.invalidate_cache()
    assert {rel: s3.fs.info(f"{bucket}/feats/{rel}")["ETag"] for rel in outputs} == etags
    # another model into the same prefix is refused, naming the URL (not a staging folder)
    with pytest.raises(OutputError) as err:
        run_batch(batch_cfg(src, dst, options=s3.options, layers=[LayerConfig(out_channels=2, kernel_size=3)]))
    assert f"{dst}/model.safetensors holds a different model's weights" in str(err.value)
    assert "conv_pipeline-out-" not in str(err.value)


def test_s3_long_files_and_npz(tmp_path, s3):
    corpus = tmp_path / "corpus"
    _tone(corpus / "short.wav", 0.4, 16000, 1)
    _tone(corpus / "long/seven.wav", 2.5, 16000, 9)
    bucket = s3.bucket("long-files")
    upload(s3.fs, corpus, f"{bucket}/corpus")
    long = dict(chunk_seconds=1.0, long_file_seconds=1.0, fmt="npz")
    s = run_batch(batch_cfg(f"s3://{bucket}/corpus", f"s3://{bucket}/feats", options=s3.options, **long))
    assert (s.ok, s.failed) == (2, 0)
    run_batch(batch_cfg(corpus, tmp_path / "local", **long))
    for rel in ("short.npz", "long/seven.npz"):
        got = np.load(io.BytesIO(s3.fs.cat(f"{bucket}/feats/{rel}")), allow_pickle=False)
        want = np.load(tmp_path / "local" / rel, allow_pickle=False)
        assert np.array_equal(got["features"], want["features"]) and np.array_equal(got["frame_times"], want["frame_times"])
    assert remote_files(s3.fs, f"{bucket}/feats") == {"short.npz", "long/seven.npz"} | META


def test_bad_storage_settings_are_one_line_errors(tmp_path):
    _tone(tmp_path / "corpus/x.wav", 0.3, 16000, 1)
    with pytest.raises(ConfigError, match="storage.options must be a mapping"):
        run_batch(batch_cfg(tmp_path / "corpus", tmp_path / "out", options="key=x"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as err:
        run_batch(batch_cfg("nosuchprotocol://bucket/corpus", tmp_path / "out"))
    assert "nosuchprotocol://bucket/corpus" in str(err.value) and "\n" not in str(err.value)
    fsspec.filesystem("memory").pipe_file("/isfile/out", b"x")
    with pytest.raises(OutputError, match="is an existing file"):
        run_batch(batch_cfg(tmp_path / "corpus", "memory://isfile/out"))
    assert not (tmp_path / "out").exists()


def test_a_symlinked_local_manifest_is_never_written_through(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious, no newline at the end")
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).symlink_to(outside)
    sink = ManifestSink(OutputDir(out))
    with pytest.raises(OutputError, match="is a symbolic link"):
        sink.add([ManifestRecord(input="x", status="failed", error="e")])
    assert outside.read_text() == "precious, no newline at the end"
