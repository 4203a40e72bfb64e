"""Storage primitives (issue 6): URL helpers (``conv_pipeline.fs``), the output folder
(``conv_pipeline.sink.outputs.OutputDir``: atomic writes, nothing outside ``output.dir``) and the
manifest sink on local folders and object stores (``memory://``)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

fsspec = pytest.importorskip("fsspec")

import conv_pipeline.sink.outputs as outputs_mod  # noqa: E402
from conv_pipeline.errors import ConfigError, OutputError  # noqa: E402
from conv_pipeline.fs import filesystem, is_url, join, local_path  # noqa: E402
from conv_pipeline.sink.manifest import MANIFEST_NAME, ManifestRecord  # noqa: E402
from conv_pipeline.sink.manifest_sink import ManifestSink  # noqa: E402
from conv_pipeline.sink.outputs import OutputDir, clean_temp_files  # noqa: E402
from helpers.files import files_under  # noqa: E402
from helpers.storage import read_manifest_from, remote_files  # noqa: E402


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


def test_clean_temp_files_only_removes_atomic_write_leftovers(tmp_path):
    keep = [".notes", "a.tmp-12345678", ".x.npy.tmp-zzzzzzzz", "x.npy"]
    gone = [".x.npy.tmp-0123abcd", "sub/.y.npz.tmp-ffffffff"]
    for name in keep + gone:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert clean_temp_files(tmp_path) == 2
    assert files_under(tmp_path) == set(keep)
